/**
 * One method set of bench/method-sets.ts (Node, Dawn): `frugal` (bench:frugal), `adapters`
 * (bench:adapters) or `precision` (bench:precision, on lavapipe: it needs shader-f16). Writes
 * bench/results/<set>-node.json.
 */
import { requestDevice } from '../src/node.js';
import { trainPreset } from './train.js';
import { formatMethodSet, runMethodSet } from './method-sets.js';
import { writeResult } from './runner.js';

const gpu = await requestDevice({ powerPreference: 'high-performance' });
const preset = trainPreset(gpu, process.argv.includes('--hardware') ? 'hardware' : process.argv.includes('--software') ? 'software' : undefined);
const setName = process.argv.slice(2).find((a) => !a.startsWith('--')) ?? 'frugal';
const result = await runMethodSet(gpu, setName, preset, (line) => console.error(`  ${line}`));
console.log(`device: ${result.device}\n`);
console.log(formatMethodSet(result));
writeResult(`${setName}-node.json`, result);
gpu.destroy();
process.exit(0);
