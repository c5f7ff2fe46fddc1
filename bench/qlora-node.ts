/** QLoRA against LoRA in Node (Dawn). Writes bench/results/qlora-node.json. */
import { requestDevice } from '../src/node.js';
import { formatQloraBench, runQloraBench } from './qlora.js';
import { writeResult } from './runner.js';

const gpu = await requestDevice({ powerPreference: 'high-performance' });
const result = await runQloraBench(gpu, { log: (l) => console.error(`  ${l}`) });
console.log(formatQloraBench(result));
writeResult('qlora-node.json', result);
gpu.destroy();
process.exit(0);
