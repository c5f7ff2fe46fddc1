/**
 * Gradient accumulation is exact: one batch of packed rows with unequal target counts gives the same
 * gradient whether it runs as one micro-batch or as 2, 4 or 8 accumulated ones, in every method. Every
 * target token of the step weighs the same (the mean over the step's targets), not every micro-batch.
 */
import { describe, expect, it } from 'vitest';
import { memorySource } from '../../src/io/sources.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tinyModelFiles } from '../../src/model/tiny.js';
import { FineTuner, type FineTuneOptions } from '../../src/train/finetuner.js';
import { compare, freshSeed, randn, rng, testGpu } from '../helpers.js';

const ROWS = 8;
const S = 12;

/** Packed rows of two documents each, whose loss masks leave 1 to 11 target tokens per row. */
function packedRows(seed: number) {
  const rand = rng(seed);
  const rows = Array.from({ length: ROWS }, (_, r) => {
    const split = 3 + Math.floor(rand() * 6);
    const trained = 1 + ((r * 5) % 11); // 1, 6, 11, 5, 10, 4, 9, 3 positions carry a target
    return {
      ids: Array.from({ length: S }, () => Math.floor(rand() * 256)),
      segments: Array.from({ length: S }, (_, t) => (t < split ? 0 : 1)),
      lossMask: Array.from({ length: S }, (_, t) => (t >= S - trained ? 1 : 0)),
    };
  });
  return (from: number, count: number) => {
    const part = rows.slice(from, from + count);
    return { ids: part.flatMap((r) => r.ids), segments: part.flatMap((r) => r.segments), lossMask: part.flatMap((r) => r.lossMask), B: count, S };
  };
}

const METHODS: [string, Omit<FineTuneOptions, 'optimizer'>][] = [
  ['full', { method: 'full' }],
  ['lora', { method: 'lora', lora: { rank: 3, targetModules: ['all-linear'], seed: 2 } }],
  ['qlora (NF4 base)', { method: 'lora', lora: { rank: 3, targetModules: ['q', 'v', 'down'], seed: 2 }, quantize: 'nf4' }],
  ['sparse', { method: 'sparse', sparse: { selection: 'random', density: 0.1, seed: 3 } }],
  ['sparse+lora', { method: 'sparse+lora', 'sparse+lora': { sparse: { selection: 'random', density: 0.05, seed: 3 }, lora: { rank: 2, seed: 2 } } }],
];

describe('gradient accumulation', () => {
  it.each(METHODS)('%s: micro-batches of 8, 4, 2 and 1 rows give one gradient', async (_name, options) => {
    const seed = freshSeed();
    const gpu = await testGpu();
    const files = tinyModelFiles({ architecture: 'llama', seed: 5, hiddenSize: 32, intermediateSize: 40, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositions: 32, initStd: 0.2 });
    const batch = packedRows(seed);
    const gradients: Map<string, Float32Array>[] = [];
    const losses: number[] = [];
    for (const micro of [8, 4, 2, 1]) {
      const ft = await FineTuner.create(gpu, await openCheckpoint(memorySource(files)), { ...options, gradientAccumulation: ROWS / micro, optimizer: { lr: 1e-3 } });
      try {
        // LoRA's B starts at zero, which would leave A without a gradient: the same random B in every run.
        const rand = rng(7);
        for (const name of ft.method.trainable.names.filter((n) => n.endsWith('lora_B'))) ft.writeTensor(ft.method.interchangeName(name) ?? name, randn(ft.method.trainable.param(name).size / 4, rand, 0.3));
        let weighted = 0;
        for (let m = 0; m < ROWS / micro; m++) {
          const b = batch(m * micro, micro);
          const r = await ft.step(b);
          expect(r.updated).toBe(m === ROWS / micro - 1);
          weighted += r.loss * ft.model.prepare(b).targetCount;
        }
        losses.push(weighted);
        if (micro === 1) {
          const counts = Array.from({ length: ROWS }, (_, r) => ft.model.prepare(batch(r, 1)).targetCount);
          expect(new Set(counts).size, `rows of unequal target counts: ${counts}`).toBeGreaterThan(4);
        }
        gradients.push(new Map(await Promise.all(ft.method.trainable.names.map(async (n) => [n, await ft.gradient(n)] as const))));
      } finally {
        ft.destroy();
      }
    }
    for (const [i, micro] of [4, 2, 1].entries()) {
      expect(Math.abs(losses[i + 1] - losses[0]) / losses[0], `seed ${seed}: summed loss at micro-batch ${micro}`).toBeLessThan(1e-5);
      for (const [name, want] of gradients[0]) {
        const err = compare(gradients[i + 1].get(name)!, want);
        expect(err.rel, `seed ${seed}: ${name} at micro-batch ${micro} (max abs ${err.maxAbs})`).toBeLessThan(1e-5);
      }
    }
    expect([...gradients[0].values()].some((g) => g.some((v) => v !== 0))).toBe(true);
  });
});
