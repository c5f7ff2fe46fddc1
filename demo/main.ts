import { requestDevice, type Gpu } from '../src/index.js';
import { formatKernelBench, runKernelBench } from '../bench/kernels.js';

const deviceEl = document.getElementById('device')!;
const out = document.getElementById('out')!;
const button = document.getElementById('bench') as HTMLButtonElement;

function describe(gpu: Gpu): string {
  const l = gpu.limits;
  return [
    `device:   ${gpu.describe()}`,
    `features: ${Object.entries(gpu.features).filter(([, on]) => on).map(([f]) => f).join(', ') || 'none'}`,
    `limits:   buffer ${(l.maxBufferSize / 2 ** 20).toFixed(0)} MiB, binding ${(l.maxStorageBufferBindingSize / 2 ** 20).toFixed(0)} MiB, workgroup storage ${l.maxComputeWorkgroupStorageSize} B`,
    `tuning:   matmul ${gpu.tuning.matmulVariant}, reductions ${gpu.tuning.reductionWorkgroupSize}-wide`,
  ].join('\n');
}

try {
  const gpu = await requestDevice({ powerPreference: 'high-performance' });
  deviceEl.textContent = describe(gpu);
  button.disabled = false;
  button.onclick = async () => {
    button.disabled = true;
    out.textContent = 'running...';
    try {
      const result = await runKernelBench(gpu, { log: (l) => (out.textContent += `\n${l}`) });
      out.textContent = formatKernelBench(result);
    } catch (e) {
      out.textContent = String(e);
    } finally {
      button.disabled = false;
    }
  };
} catch (e) {
  deviceEl.textContent = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}
