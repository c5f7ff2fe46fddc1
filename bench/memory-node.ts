/**
 * Peak memory of a training step at Qwen2.5-0.5B's scale, in Node (Dawn). Writes bench/results/memory-node.json.
 * `tsx bench/memory-node.ts lora-bf16` measures one variant (each step takes tens of minutes on a CPU device) and keeps
 * the file's rows of the others, when they were measured on the same device.
 */
import { existsSync, readFileSync } from 'node:fs';
import { requestDevice } from '../src/node.js';
import { formatMemoryBench, MEMORY_VARIANTS as VARIANTS, runMemoryBench, type MemoryBenchResult, type MemoryRow } from './memory.js';
import { writeResult } from './runner.js';

const gpu = await requestDevice({ powerPreference: 'high-performance' });
const only = process.argv.slice(2) as MemoryRow['variant'][];
const file = new URL('./results/memory-node.json', import.meta.url);
const previous = existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as MemoryBenchResult) : undefined;
const earlier = previous?.device === gpu.describe() ? previous.rows : [];
// One variant at a time, written as each ends: a later variant's hour-long step cannot lose an earlier one's figures.
let result: MemoryBenchResult | undefined;
for (const variant of only.length ? only : VARIANTS) {
  result = await runMemoryBench(gpu, { log: (l) => console.error(`  ${l}`), variants: [variant], earlier: result?.rows ?? earlier });
  writeResult('memory-node.json', result);
}
if (result) console.log(formatMemoryBench(result));
gpu.destroy();
process.exit(0);
