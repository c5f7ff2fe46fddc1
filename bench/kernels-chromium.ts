/** Kernel benchmark in headless Chromium. Writes bench/results/kernels-chromium.json. */
import { formatKernelBench, type KernelBenchResult } from './kernels.js';
import { runPage, writeResult } from './runner.js';

const result = await runPage<KernelBenchResult>('bench/kernels.html', 15 * 60_000);
console.log(formatKernelBench(result));
writeResult('kernels-chromium.json', result);
