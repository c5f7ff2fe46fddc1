import { describe, expect, it } from 'vitest';
import { multiLora, NO_SLOT, ShapeError } from '../../src/index.js';
import type { GpuTuning } from '../../src/gpu/gpu.js';
import { compare, freshSeed, poisoned, randn, REDUCTIONS, rng, testGpu } from '../helpers.js';
import { multiLoraRef } from '../reference/multi-lora.js';

// The direct shrink, and the cooperative one under every reduction profile.
const SHRINKS: [string, Partial<GpuTuning>][] = [
  ['direct shrink', { multiLoraShrink: 'direct' }],
  ...REDUCTIONS.map(([label, reduction]): [string, Partial<GpuTuning>] => [`cooperative shrink, ${label}`, { multiLoraShrink: 'cooperative', ...reduction }]),
];

describe.each(SHRINKS)('many LoRA adapters in one batch (shrink and expand over a pool of slots): %s', (_, tuning) => {
  it.each([
    // T, inDim, outDim, rank, slots
    [1, 3, 5, 1, 1],
    [3, 33, 17, 3, 4],
    [17, 100, 257, 8, 5],
    [100, 257, 33, 5, 7],
    [64, 64, 64, 16, 3],
    [65, 70, 80, 4, 2],
  ])('T=%i in=%i out=%i rank %i over %i slots, rows on different slots and some on none', async (T, inDim, outDim, rank, slots) => {
    const gpu = await testGpu(tuning);
    const seed = freshSeed();
    const rand = rng(seed);
    // Two modules per slot, this one second, with a gap, so offsets and strides are exercised.
    const offA = 7 + rank * 11 + 5 * rank;
    const offB = offA + rank * inDim + 3;
    const slotStride = offB + outDim * rank + 2;
    const [scaleStride, scaleOffset] = [3, 1];
    const pool = randn(slots * slotStride, rand);
    const scales = Float32Array.from({ length: slots * scaleStride }, () => 0.25 + rand() * 2);
    const rowSlots = Uint32Array.from({ length: T }, (_, t) => (t % 5 === 4 ? NO_SLOT : Math.floor(rand() * slots)));
    const x = randn(T * inDim, rand);
    const y0 = randn(T * outDim, rand);
    const d = { T, inDim, outDim, rank, slotStride, offA, offB, scaleStride, scaleOffset };
    const buffers = { x: gpu.upload(x), pool: gpu.upload(pool), scales: gpu.upload(scales), rowSlots: gpu.upload(rowSlots) };

    const want = multiLoraRef(d, x, pool, rowSlots, scales, y0);
    const fixed = slots - 1;
    const wantFixed = multiLoraRef(d, x, pool, new Uint32Array(T).fill(fixed), scales, y0);
    {
      const y = gpu.upload(y0);
      await gpu.run((rec) => multiLora(rec, { ...d, ...buffers, y, u: poisoned(gpu, T * rank, 'u'), slots, rows: { rowSlots: buffers.rowSlots } }));
      const err = compare(await gpu.readF32(y), want);
      expect(err.rel, `seed ${seed} maxAbs ${err.maxAbs}`).toBeLessThan(1e-4);

      // One slot for every row: the same sums as a row map naming it everywhere.
      const y2 = gpu.upload(y0);
      await gpu.run((rec) => multiLora(rec, { ...d, ...buffers, y: y2, u: poisoned(gpu, T * rank, 'u'), slots, rows: { slot: fixed } }));
      const err2 = compare(await gpu.readF32(y2), wantFixed);
      expect(err2.rel, `seed ${seed} maxAbs ${err2.maxAbs}`).toBeLessThan(1e-4);
    }
  });

  it('rows with no slot are left exactly as they were', async () => {
    const gpu = await testGpu(tuning);
    const rand = rng(freshSeed());
    const [T, inDim, outDim, rank] = [6, 9, 10, 2];
    const slotStride = rank * (inDim + outDim);
    const y0 = randn(T * outDim, rand);
    const y = gpu.upload(y0);
    const rowSlots = gpu.upload(Uint32Array.from([0, NO_SLOT, 0, NO_SLOT, NO_SLOT, 0]));
    await gpu.run((rec) => multiLora(rec, {
      x: gpu.upload(randn(T * inDim, rand)), y, u: poisoned(gpu, T * rank), T, inDim, outDim, rank, pool: gpu.upload(randn(slotStride, rand)), slots: 1, slotStride,
      offA: 0, offB: rank * inDim, rows: { rowSlots }, scales: gpu.upload(Float32Array.of(1)), scaleStride: 1, scaleOffset: 0,
    }));
    const got = await gpu.readF32(y);
    for (const t of [1, 3, 4]) expect(Array.from(got.subarray(t * outDim, (t + 1) * outDim))).toEqual(Array.from(y0.subarray(t * outDim, (t + 1) * outDim)));
    expect(got[0]).not.toBe(y0[0]);
  });

});

describe('many LoRA adapters in one batch: bad arguments', () => {
  it('refuses a module outside its slot, a slot outside the pool and short buffers', async () => {
    const gpu = await testGpu();
    const b = (n: number) => gpu.createBuffer(n * 4);
    const ok = { x: b(8), y: b(8), u: b(8), T: 2, inDim: 4, outDim: 4, rank: 2, pool: b(32), slots: 2, slotStride: 16, offA: 0, offB: 8, rows: { slot: 1 }, scales: b(2), scaleStride: 1, scaleOffset: 0 };
    const rec = gpu.recorder();
    expect(() => multiLora(rec, { ...ok, offB: 9 })).toThrow(ShapeError);
    expect(() => multiLora(rec, { ...ok, rows: { slot: 2 } })).toThrow(/outside a pool of 2/);
    expect(() => multiLora(rec, { ...ok, slots: 3 })).toThrow(/pool needs 48 elements/);
    expect(() => multiLora(rec, { ...ok, rows: { rowSlots: b(1) } })).toThrow(/rowSlots needs 2/);
    expect(() => multiLora(rec, { ...ok, scaleOffset: 1 })).toThrow(/scale offset/);
  });
});
