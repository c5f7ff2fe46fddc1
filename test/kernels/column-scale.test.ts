import { describe, expect, it } from 'vitest';
import { columnScaleBackward, columnScaleForward } from '../../src/index.js';
import { compare, freshSeed, poisoned, randn, rng, testGpu } from '../helpers.js';
import { columnScaleBackwardRef, columnScaleRef } from '../reference/column-scale.js';

const SHAPES = [
  [1, 1],
  [3, 17],
  [100, 33],
  [17, 257],
  [2, 1000],
];

describe('per-column output scale', () => {
  it.each(SHAPES)('forward %ix%i, with bias and saving z, and without', async (rows, cols) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const zh = randn(rows * cols, rand);
    const sh = randn(cols, rand);
    const bh = randn(cols, rand);
    const y = gpu.upload(zh);
    const saved = poisoned(gpu, rows * cols);
    await gpu.run((rec) => columnScaleForward(rec, { y, scale: gpu.upload(sh), bias: gpu.upload(bh), saved, rows, cols }));
    expect(compare(await gpu.readF32(y), columnScaleRef(zh, sh, bh, rows, cols)).rel, `seed ${seed}`).toBeLessThan(1e-4);
    expect(compare(await gpu.readF32(saved), zh).rel, `seed ${seed}`).toBe(0);
    const plain = gpu.upload(zh);
    await gpu.run((rec) => columnScaleForward(rec, { y: plain, scale: gpu.upload(sh), rows, cols }));
    expect(compare(await gpu.readF32(plain), columnScaleRef(zh, sh, null, rows, cols)).rel, `seed ${seed}`).toBeLessThan(1e-4);
  });

  it.each(SHAPES)('backward %ix%i matches the reference, accumulates ds, and matches finite differences', async (rows, cols) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const zh = randn(rows * cols, rand);
    const sh = randn(cols, rand);
    const dyh = randn(rows * cols, rand);
    const ds0 = randn(cols, rand);
    const dz = poisoned(gpu, rows * cols);
    const ds = gpu.upload(ds0);
    await gpu.run((rec) => columnScaleBackward(rec, { dy: gpu.upload(dyh), scale: gpu.upload(sh), dz, grad: { z: gpu.upload(zh), ds }, rows, cols }));
    const want = columnScaleBackwardRef(dyh, sh, zh, rows, cols);
    expect(compare(await gpu.readF32(dz), want.dz).rel, `seed ${seed}`).toBeLessThan(1e-4);
    expect(compare(await gpu.readF32(ds), Array.from(want.ds, (v, c) => v + ds0[c])).rel, `seed ${seed}`).toBeLessThan(1e-4);
    // The reference backward is the gradient of L = Σ dy ⊙ y(z, s): central differences in float64.
    const loss = (z: ArrayLike<number>, s: ArrayLike<number>) => columnScaleRef(z, s, null, rows, cols).reduce((a, v, i) => a + v * dyh[i], 0);
    const h = 1e-6;
    const c = Math.floor(rand() * cols);
    const sp = Float64Array.from(sh, (v, j) => (j === c ? v + h : v));
    const sm = Float64Array.from(sh, (v, j) => (j === c ? v - h : v));
    const fd = (loss(zh, sp) - loss(zh, sm)) / (2 * h);
    expect(Math.abs(fd - want.ds[c]) / Math.max(1, Math.abs(fd)), `seed ${seed}`).toBeLessThan(1e-6);
    const i = Math.floor(rand() * rows * cols);
    const zp = Float64Array.from(zh, (v, j) => (j === i ? v + h : v));
    const zm = Float64Array.from(zh, (v, j) => (j === i ? v - h : v));
    expect(Math.abs((loss(zp, sh) - loss(zm, sh)) / (2 * h) - want.dz[i]), `seed ${seed}`).toBeLessThan(1e-6);
  });

  it('backward without a scale gradient writes dz alone', async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const [rows, cols] = [5, 7];
    const dyh = randn(rows * cols, rand);
    const sh = randn(cols, rand);
    const dz = poisoned(gpu, rows * cols);
    await gpu.run((rec) => columnScaleBackward(rec, { dy: gpu.upload(dyh), scale: gpu.upload(sh), dz, rows, cols }));
    expect(compare(await gpu.readF32(dz), columnScaleBackwardRef(dyh, sh, dyh, rows, cols).dz).rel, `seed ${seed}`).toBeLessThan(1e-4);
  });
});
