/**
 * Kernel benchmark in Node (Dawn). Writes bench/results/kernels-node.json, or kernels-node-lavapipe.json
 * on lavapipe (`npm run bench:kernels:lavapipe`). Flags: --software | --hardware.
 */
import { requestDevice } from '../src/node.js';
import { formatKernelBench, runKernelBench } from './kernels.js';
import { writeResult } from './runner.js';

const gpu = await requestDevice({ powerPreference: 'high-performance' });
const preset = process.argv.includes('--hardware') ? 'hardware' : process.argv.includes('--software') ? 'software' : undefined;
const result = await runKernelBench(gpu, { preset, log: (l) => console.error(`  ${l}`) });
console.log(formatKernelBench(result));
writeResult(/llvmpipe/i.test(gpu.describe()) ? 'kernels-node-lavapipe.json' : 'kernels-node.json', result);
gpu.destroy();
process.exit(0);
