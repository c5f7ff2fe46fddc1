/** The Trainer's speed tricks in Node (Dawn): packing, automatic micro-batch, loop overhead. Writes bench/results/trainer-node.json. */
import { readFileSync } from 'node:fs';
import { folderSource, PRETRAINED_BASE, requestDevice } from '../src/node.js';
import { formatTrainerBench, runTrainerBench } from './trainer.js';
import { writeResult } from './runner.js';

const gpu = await requestDevice({ powerPreference: 'high-performance' });
const source = folderSource(new URL(`../public/models/${PRETRAINED_BASE.name}`, import.meta.url).pathname);
const data = { name: 'next-letter.jsonl', bytes: new Uint8Array(readFileSync(new URL('../public/datasets/next-letter.jsonl', import.meta.url))) };
const result = await runTrainerBench(gpu, source, data, { log: (l) => console.error(`  ${l}`) });
console.log(formatTrainerBench(result));
writeResult('trainer-node.json', result);
gpu.destroy();
process.exit(0);
