/** Kernel benchmark in Node (Dawn). Writes bench/results/kernels-node.json. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { requestDevice } from '../src/node.js';
import { formatKernelBench, runKernelBench } from './kernels.js';

const gpu = await requestDevice({ powerPreference: 'high-performance' });
const preset = process.argv.includes('--hardware') ? 'hardware' : process.argv.includes('--software') ? 'software' : undefined;
const result = await runKernelBench(gpu, { preset, log: (l) => console.error(`  ${l}`) });
console.log(formatKernelBench(result));
const dir = new URL('./results/', import.meta.url);
mkdirSync(dir, { recursive: true });
writeFileSync(new URL('kernels-node.json', dir), JSON.stringify(result, null, 2));
console.log(`\nwrote bench/results/kernels-node.json`);
gpu.destroy();
process.exit(0);
