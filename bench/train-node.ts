/** Training benchmark in Node (Dawn). Writes bench/results/train-node.json. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { requestDevice } from '../src/node.js';
import { formatTrainBench, runTrainBench } from './train.js';

const gpu = await requestDevice({ powerPreference: 'high-performance' });
const preset = process.argv.includes('--hardware') ? 'hardware' : process.argv.includes('--software') ? 'software' : undefined;
const result = await runTrainBench(gpu, { preset, log: (l) => console.error(`  ${l}`) });
console.log(formatTrainBench(result));
const dir = new URL('./results/', import.meta.url);
mkdirSync(dir, { recursive: true });
writeFileSync(new URL('train-node.json', dir), JSON.stringify(result, null, 2));
console.log('\nwrote bench/results/train-node.json');
gpu.destroy();
process.exit(0);
