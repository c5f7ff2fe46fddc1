/** The adapter cache's benchmark in Node (Dawn). Writes bench/results/serve-node.json. */
import { requestDevice, shippedModel } from '../src/node.js';
import { formatServeBench, runServeBench } from './serve.js';
import { writeResult } from './runner.js';

const gpu = await requestDevice({ powerPreference: 'high-performance' });
const result = await runServeBench(gpu, shippedModel(), { log: (l) => console.error(`  ${l}`) });
console.log(formatServeBench(result));
writeResult('serve-node.json', result);
gpu.destroy();
process.exit(0);
