/**
 * Soak: what long runs hold on to. Generates many sequences and measures the JS heap (after full GCs)
 * before and after; trains on many batch shapes and reports the GPU memory and buffers left held, against
 * what one shape costs. Writes bench/results/soak-node.json. Run: npm run bench:soak (Node, --expose-gc).
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { requestDevice } from '../src/node.js';
import { successorRows, toBatchInput } from '../src/data/tasks.js';
import { folderSource } from '../src/io/sources.js';
import { openCheckpoint } from '../src/model/checkpoint.js';
import { Activations } from '../src/model/activations.js';
import { Generator } from '../src/serve/generate.js';
import { FineTuner } from '../src/train/finetuner.js';
import { writeResult } from './runner.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const heap = () => {
  for (let i = 0; i < 3; i++) gc();
  return process.memoryUsage().heapUsed;
};
const MiB = 2 ** 20;
const sequences = Number(process.argv[2] ?? 500);
const shapes = 32;

const gpu = await requestDevice();
const ckpt = await openCheckpoint(folderSource(new URL('../public/models/tiny-llama', import.meta.url).pathname));
const ft = await FineTuner.create(gpu, ckpt, { method: 'lora', lora: { rank: 8, dropout: 0.1 } });

// Generation: one sequence at a time, as a chat front end would.
const gen = new Generator(ft.model);
const prompt = Array.from(successorRows(1, 2, 0).ids[0]).slice(0, 6);
for (let i = 0; i < 20; i++) await gen.generate(prompt, { maxNewTokens: 4 }); // warm-up: pipelines, pools
const heapBefore = heap();
for (let i = 0; i < sequences; i++) await gen.generate(prompt, { maxNewTokens: 4, temperature: 0.7, seed: i });
const heapGrowth = heap() - heapBefore;
gen.destroy();

// Training over many batch shapes: what stays allocated afterwards.
const base = gpu.memoryStats();
for (let s = 0; s < shapes; s++) await ft.step(toBatchInput(successorRows(2 + (s % 4), 1 + (s >> 2), s)));
const held = gpu.memoryStats();
const cachedShapes = ft.model.cachedShapes.length;
const largest = Activations.bytesFor(ft.model.config, 5, 4 * (1 + ((shapes - 1) >> 2)), 'train', false, gpu.tuning.attentionVariant);
ft.destroy();
gpu.destroy();

const result = {
  device: gpu.describe(),
  generation: { sequences, heapGrowthBytes: heapGrowth, heapGrowthPerSequenceBytes: heapGrowth / sequences },
  shapes: {
    trained: shapes,
    cachedShapes,
    heldMiB: (held.currentBytes - base.currentBytes) / MiB,
    heldBuffers: held.buffers - base.buffers,
    largestShapeMiB: largest / MiB,
    peakMiB: (held.peakBytes - base.currentBytes) / MiB,
  },
};
console.log(`generation: ${sequences} sequences, heap grew ${(heapGrowth / 1024).toFixed(1)} KiB (${(heapGrowth / sequences).toFixed(0)} B per sequence)`);
console.log(`training over ${shapes} batch shapes: ${result.shapes.heldMiB.toFixed(1)} MiB in ${result.shapes.heldBuffers} buffers (${cachedShapes} shapes) held afterwards (largest shape ${result.shapes.largestShapeMiB.toFixed(1)} MiB)`);
writeResult('soak-node.json', result);
