/** Browser side of the training benchmark: runs it and leaves the result on window for the driver. */
import { requestDevice } from '../src/index.js';
import { formatTrainBench, runTrainBench, type TrainBenchResult } from './train.js';

declare global {
  interface Window {
    trainResult?: TrainBenchResult;
    trainError?: string;
  }
}

const out = document.getElementById('out')!;
try {
  const gpu = await requestDevice({ powerPreference: 'high-performance' });
  const result = await runTrainBench(gpu, { log: (l) => (out.textContent += `\n${l}`) });
  out.textContent = formatTrainBench(result);
  window.trainResult = result;
} catch (e) {
  window.trainError = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  out.textContent = window.trainError;
}
