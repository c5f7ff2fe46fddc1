/**
 * Peak memory of a training step at Qwen2.5-0.5B's scale, in Node (Dawn). Writes bench/results/memory-node.json.
 * `tsx bench/memory-node.ts lora-bf16` runs one variant (each step takes tens of minutes on a CPU device).
 */
import { requestDevice } from '../src/node.js';
import { formatMemoryBench, runMemoryBench, type MemoryRow } from './memory.js';
import { writeResult } from './runner.js';

const gpu = await requestDevice({ powerPreference: 'high-performance' });
const only = process.argv.slice(2) as MemoryRow['variant'][];
const result = await runMemoryBench(gpu, { log: (l) => console.error(`  ${l}`), variants: only.length ? only : undefined });
console.log(formatMemoryBench(result));
writeResult('memory-node.json', result);
gpu.destroy();
process.exit(0);
