/** Browser side of the kernel benchmark: runs it and leaves the result on window for the driver. */
import { requestDevice } from '../src/index.js';
import { formatKernelBench, runKernelBench, type KernelBenchResult } from './kernels.js';

declare global {
  interface Window {
    benchResult?: KernelBenchResult;
    benchError?: string;
  }
}

const out = document.getElementById('out')!;
try {
  const gpu = await requestDevice({ powerPreference: 'high-performance' });
  const result = await runKernelBench(gpu, { log: (l) => (out.textContent += `\n${l}`) });
  out.textContent = formatKernelBench(result);
  window.benchResult = result;
} catch (e) {
  window.benchError = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  out.textContent = window.benchError;
}
