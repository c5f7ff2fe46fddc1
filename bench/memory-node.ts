/** Peak memory of a training step at Qwen2.5-0.5B's scale, in Node (Dawn). Writes bench/results/memory-node.json. */
import { requestDevice } from '../src/node.js';
import { formatMemoryBench, runMemoryBench } from './memory.js';
import { writeResult } from './runner.js';

const gpu = await requestDevice({ powerPreference: 'high-performance' });
const result = await runMemoryBench(gpu, { log: (l) => console.error(`  ${l}`) });
console.log(formatMemoryBench(result));
writeResult('memory-node.json', result);
gpu.destroy();
process.exit(0);
