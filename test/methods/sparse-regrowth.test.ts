/**
 * Drop-and-regrow for sparse fine-tuning (src/methods/sparse/regrowth.ts): the swap plan by hand; on the
 * GPU, a regrowing run against a twin with the fixed mask, which shows the state right before the swap:
 * the dropped entries are the twin's least-changed, the grown ones the largest float64 gradient outside
 * the mask, kept values and AdamW moments move to their new places, dropped weights return to the base
 * and grown ones start there; the saved state carries the mask and loads into a fine-tuner on the old
 * one; bad options are refused.
 */
import { describe, expect, it } from 'vitest';
import { successorRows, toBatchInput } from '../../src/data/tasks.js';
import { InvalidModelFileError } from '../../src/io/safetensors.js';
import { memorySource } from '../../src/io/sources.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { paramSpecs } from '../../src/model/layout.js';
import { tinyModelFiles } from '../../src/model/tiny.js';
import { planSwap, randomMask, sparse, SparseFineTuning, topK } from '../../src/methods/sparse/index.js';
import { sparseLora } from '../../src/methods/sparse-lora/index.js';
import type { AdamW } from '../../src/optim/adamw.js';
import { FineTuner } from '../../src/train/finetuner.js';
import { freshSeed, testGpu } from '../helpers.js';
import { modelLossAndGrads } from '../reference/model.js';

describe('sparse drop-and-regrow', () => {
  it('plans a swap: the least-changed entries out, the largest gradients outside the mask in, kept ones placed', () => {
    const indices = Uint32Array.from([1, 4, 7, 9]);
    const delta = Float32Array.from([0.5, 0.01, -0.3, 0.002]);
    const gradient = new Float32Array(12);
    gradient[2] = -3; // grown
    gradient[10] = 2; // grown
    gradient[4] = 100; // in the mask: never grown
    gradient[0] = 0.5;
    const s = planSwap(indices, delta, gradient, 0.5)!;
    expect([...s.indices]).toEqual([1, 2, 7, 10]);
    expect([...s.droppedFlat].sort()).toEqual([4, 9]);
    expect([...s.droppedOld].sort()).toEqual([1, 3]);
    expect([...s.keptOld]).toEqual([0, 2]);
    expect([...s.keptNew]).toEqual([0, 2]);
    // At least one entry swaps while there is room; none when the mask is the whole weight.
    expect(planSwap(indices, delta, gradient, 0.01)!.droppedFlat.length).toBe(1);
    expect(planSwap(Uint32Array.from([0, 1]), Float32Array.from([1, 2]), new Float32Array(2), 0.5)).toBeNull();
  });

  it('swaps on the GPU as planned from the pre-swap state, and the state file records the new mask', async () => {
    const seed = freshSeed();
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(memorySource(tinyModelFiles({ architecture: 'llama', hiddenSize: 32, intermediateSize: 48, numLayers: 1, numHeads: 4, numKvHeads: 2, maxPositions: 32, seed, initStd: 0.2 })));
    const mask = randomMask(ckpt.config, { density: 0.2, seed, targetModules: ['q', 'down'] });
    const common = { method: 'sparse' as const, optimizer: { lr: 1e-2 } };
    const fraction = 0.25;
    const a = await FineTuner.create(gpu, ckpt, { ...common, sparse: { mask, regrow: true, regrowEvery: 2, regrowFraction: fraction } });
    const b = await FineTuner.create(gpu, ckpt, { ...common, sparse: { mask } });
    const base = await FineTuner.create(gpu, ckpt, { ...common, sparse: { mask } });
    try {
      const batches = [0, 1, 2].map((s) => toBatchInput(successorRows(2, 6, seed + s)));
      const ma = a.method as SparseFineTuning;
      const mb = b.method as SparseFineTuning;
      await a.step(batches[0]);
      await b.step(batches[0]);
      expect(ma.mask.entries.get('layers.0.q')!.indices).toEqual(mask.entries.get('layers.0.q')!.indices); // not yet
      // The float64 gradient the second step computes, at the weights after the first.
      const params = new Map<string, Float64Array>();
      for (const s of paramSpecs(b.model.config)) params.set(s.name, Float64Array.from(await b.model.readParam(s.name)));
      const ref = modelLossAndGrads(b.model.config, params, b.model.prepare(batches[1]));
      await a.step(batches[1]); // scored: its loss resolves after the swap is queued
      await b.step(batches[1]);
      const deltas = await mb.deltas();
      for (const m of ma.modules) {
        const before = mask.entries.get(m)!.indices;
        const after = ma.mask.entries.get(m)!.indices;
        const k = Math.round(fraction * before.length);
        expect(after.length).toBe(before.length);
        expect([...after].every((v, i) => i === 0 || v > after[i - 1])).toBe(true);
        const kept = new Set(after);
        const dropped = [...before].filter((i) => !kept.has(i));
        const old = new Set(before);
        const grown = [...after].filter((i) => !old.has(i));
        expect(dropped.length).toBe(k);
        // Dropped: the k smallest |delta| of the same run without regrowth.
        const smallest = topK(Float64Array.from(deltas.get(m)!, (d) => -Math.abs(d)), k);
        expect(dropped).toEqual(Array.from(smallest, (p) => before[p]).sort((x, y) => x - y));
        // Grown: the k largest |gradient| outside the old mask (f32 against float64: ties at the edge aside).
        const g = ref.grads.get(`${m}.weight`)!;
        const score = Float64Array.from(g, Math.abs);
        for (const i of before) score[i] = -1;
        const want = topK(score, k);
        const edge = Math.min(...Array.from(want, (i) => score[i]));
        const differ = grown.filter((i) => !want.includes(i));
        for (const i of differ) expect(Math.abs(score[i] - edge) / edge, `${m} grew ${i}`).toBeLessThan(1e-3);
        expect(grown.length).toBe(k);
        // The state moved: values, base values and moments of kept entries from the twin; grown ones at
        // the base with zero moments; dropped ones back at the base; nothing else changed.
        const w = await a.model.readParam(`${m}.weight`);
        const w0 = await base.model.readParam(`${m}.weight`);
        const wb = await b.model.readParam(`${m}.weight`);
        const name = `${m}.sparse_values`;
        const [values, originals] = [await gpu.readF32(ma.values.view(name)), await gpu.readF32(ma.originals.view(name))];
        const momentsA = (a.optimizer as AdamW).momentViews(name);
        const momentsB = (b.optimizer as AdamW).momentViews(name);
        const [mA, vA, mB, vB] = await Promise.all([momentsA.m, momentsA.v, momentsB.m, momentsB.v].map((v) => gpu.readF32(v)));
        const oldPos = new Map(Array.from(before, (i, p) => [i, p]));
        after.forEach((i, p) => {
          expect(w[i]).toBe(values[p]);
          expect(originals[p]).toBe(w0[i]);
          const q = oldPos.get(i);
          if (q === undefined) {
            expect([values[p], mA[p], vA[p]]).toEqual([w0[i], 0, 0]);
          } else {
            expect([values[p], mA[p], vA[p]]).toEqual([wb[i], mB[q], vB[q]]);
          }
        });
        for (let i = 0; i < w.length; i++) if (!kept.has(i)) expect(w[i]).toBe(w0[i]);
      }
      // Its state file carries the mask training reached: a fine-tuner on the first mask moves there and
      // continues identically; a mask of other counts is refused, changing nothing.
      const state = await a.saveState();
      await b.loadState(state);
      expect((b.method as SparseFineTuning).mask.entries.get('layers.0.q')!.indices).toEqual(ma.mask.entries.get('layers.0.q')!.indices);
      const [la, lb] = [await a.step(batches[2]), await b.step(batches[2])];
      expect(lb.loss).toBe(la.loss);
      for (const m of ma.modules) expect(await b.model.readParam(`${m}.weight`)).toEqual(await a.model.readParam(`${m}.weight`));
      // And back: the regrown fine-tuner takes the state of one on the first mask.
      const fixed = await base.saveState();
      await a.loadState(fixed);
      expect(ma.mask.entries.get('layers.0.q')!.indices).toEqual(mask.entries.get('layers.0.q')!.indices);
      expect((await a.evaluate(batches[0])).loss).toBe((await base.evaluate(batches[0])).loss);
      const other = randomMask(ckpt.config, { density: 0.3, seed, targetModules: ['q', 'down'] });
      const c = await FineTuner.create(gpu, ckpt, { ...common, sparse: { mask: other } });
      try {
        const before = await c.model.readParam('layers.0.q.weight');
        await expect(c.loadState(state)).rejects.toThrow(InvalidModelFileError);
        expect(await c.model.readParam('layers.0.q.weight')).toEqual(before);
      } finally {
        c.destroy();
      }
    } finally {
      for (const ft of [a, b, base]) ft.destroy();
    }
  });

  it('refuses what it cannot do, by name', async () => {
    const ckpt = await openCheckpoint(memorySource(tinyModelFiles({ architecture: 'llama', hiddenSize: 32, intermediateSize: 48, numLayers: 1, numHeads: 4, numKvHeads: 2, maxPositions: 32 })));
    const check = (o: object) => () => sparse.check(ckpt.config, o);
    expect(check({ selection: 'random', regrowEvery: 5 })).toThrow(/regrowEvery apply with regrow: true/);
    expect(check({ selection: 'random', regrow: true, granularity: 16 })).toThrow(/swaps single weights; this mask has 16x16 blocks/);
    expect(check({ selection: 'random', regrow: true, regrowFraction: 0.9 })).toThrow(/fraction must lie in \(0, 0.5\]/);
    expect(check({ selection: 'random', regrow: true, regrowEvery: 0 })).toThrow(/positive integer/);
    expect(check({ selection: 'random', regrow: true, regrowEvery: 5, regrowFraction: 0.2 })).not.toThrow();
    // Only the sparse method regrows; sparse+lora's sparse part keeps its mask.
    expect(sparseLora.fields.some((f) => f.name.startsWith('regrow'))).toBe(false);
    expect(() => sparseLora.check(ckpt.config, { sparse: { selection: 'random', regrow: true } as never })).toThrow(/regrow/);
  });
});
