/** Training benchmark in Node (Dawn). Writes bench/results/train-node.json. Flags: --software | --hardware. */
import { requestDevice } from '../src/node.js';
import { formatTrainBench, runTrainBench } from './train.js';
import { writeResult } from './runner.js';

const gpu = await requestDevice({ powerPreference: 'high-performance' });
const preset = process.argv.includes('--hardware') ? 'hardware' : process.argv.includes('--software') ? 'software' : undefined;
const result = await runTrainBench(gpu, { preset, log: (l) => console.error(`  ${l}`) });
console.log(formatTrainBench(result));
writeResult('train-node.json', result);
gpu.destroy();
process.exit(0);
