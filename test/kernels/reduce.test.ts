import { describe, expect, it } from 'vitest';
import { elementwise, reduceRows, sumColumns, type ElementwiseOp, type ReduceOp } from '../../src/index.js';
import { compare, freshSeed, poisoned, randn, REDUCTIONS, rng, testGpu } from '../helpers.js';
import { dropoutKeep } from '../../src/util/random.js';
import { reduceRowsRef } from '../reference/reduce.js';

describe.each(REDUCTIONS.flatMap(([label, reduction]) => (['sum', 'max', 'sumsq'] as ReduceOp[]).map((op) => [op, label, reduction] as const)))('reduce rows: %s, %s', (op, _, reduction) => {
  it.each([
    [1, 1],
    [3, 17],
    [17, 257],
    [100, 33],
    [2, 1000],
  ])('%ix%i', async (rows, cols) => {
    const gpu = await testGpu(reduction);
    const seed = freshSeed();
    const rand = rng(seed);
    const xh = randn(rows * cols, rand);
    const x = gpu.upload(xh);
    const out = poisoned(gpu, rows);
    await gpu.run((rec) => reduceRows(rec, { x, out, rows, cols, op }));
    const err = compare(await gpu.readF32(out), reduceRowsRef(xh, rows, cols, op));
    expect(err.rel, `seed ${seed} maxAbs ${err.maxAbs}`).toBeLessThan(1e-4);
  });
});

describe('column sums (a bias\'s gradient)', () => {
  it.each([
    [1, 1, 1, false],
    [53, 37, 0.37, true],
    [129, 65, 1, false],
    [512, 130, -2, true],
  ])('%ix%i, alpha %s, accumulating: %s', async (rows, cols, alpha, accumulate) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const [xh, start] = [randn(rows * cols, rand), randn(cols, rand)];
    const x = gpu.upload(xh);
    const out = accumulate ? gpu.upload(start) : poisoned(gpu, cols);
    await gpu.run((rec) => sumColumns(rec, { x, out, rows, cols, alpha, accumulate }));
    const want = new Float64Array(cols);
    for (let c = 0; c < cols; c++) {
      for (let r = 0; r < rows; r++) want[c] += xh[r * cols + c];
      want[c] = alpha * want[c] + (accumulate ? start[c] : 0);
    }
    const err = compare(await gpu.readF32(out), want);
    expect(err.rel, `seed ${seed} maxAbs ${err.maxAbs}`).toBeLessThan(1e-4);
  });
});

describe.each([1, 8])('element-wise updates, %i elements per invocation', (per) => {
  const ref: Record<Exclude<ElementwiseOp, 'dropout' | 'dropoutAdd'>, (y: number, x: number, z: number, s0: number, s1: number) => number> = {
    scale: (y, _x, _z, s0) => s0 * y,
    axpy: (y, x, _z, s0) => y + s0 * x,
    addcmul: (y, x, z, s0) => y + s0 * x * z,
    sqrtAffine: (_y, x, _z, s0, s1) => Math.sqrt(Math.abs(x)) * s0 + s1,
    addcdiv: (y, x, z, s0) => y + (s0 * x) / z,
    add: (_y, x, z) => x + z,
    softcap: (y, _x, _z, s0) => s0 * Math.tanh(y / s0),
  };
  it.each(Object.keys(ref) as (keyof typeof ref)[])('%s over 1031 elements', async (op) => {
    const gpu = await testGpu({ elementsPerInvocation: per });
    const seed = freshSeed();
    const rand = rng(seed);
    const n = 1031;
    const yh = randn(n, rand);
    const xh = op === 'sqrtAffine' ? randn(n, rand).map(Math.abs) : randn(n, rand);
    const zh = randn(n, rand).map((v) => v + Math.sign(v) * 0.5); // keep divisors away from 0
    const y = gpu.upload(yh);
    await gpu.run((rec) => elementwise(rec, { op, y, x: gpu.upload(xh), z: gpu.upload(zh), n, s0: 0.3, s1: -1.5 }));
    const want = Array.from(yh, (v, i) => ref[op](v, xh[i], zh[i], 0.3, -1.5));
    expect(compare(await gpu.readF32(y), want).rel, `seed ${seed}`).toBeLessThan(1e-4);
  });
});

describe.each([1, 8])('dropout, %i elements per invocation', (per) => {
  it('uses the host-reproducible mask, scales kept values, and its gradient reuses the mask', async () => {
    const gpu = await testGpu({ elementsPerInvocation: per });
    const seed = freshSeed();
    const rand = rng(seed);
    const n = 4099;
    const p = 0.3;
    const xh = randn(n, rand);
    const y0 = randn(n, rand);
    const x = gpu.upload(xh);
    const y = poisoned(gpu, n);
    const acc = gpu.upload(y0);
    await gpu.run((rec) => {
      elementwise(rec, { op: 'dropout', y, x, n, dropout: { p, seed } });
      elementwise(rec, { op: 'dropoutAdd', y: acc, x, n, dropout: { p, seed } });
    });
    const keep = Array.from({ length: n }, (_, i) => dropoutKeep(i, seed, p));
    const want = Array.from(xh, (v, i) => (keep[i] ? v / (1 - p) : 0));
    expect(compare(await gpu.readF32(y), want).rel, `seed ${seed}`).toBeLessThan(1e-6);
    expect(compare(await gpu.readF32(acc), want.map((v, i) => v + y0[i])).rel, `seed ${seed}`).toBeLessThan(1e-6);
    const kept = keep.filter(Boolean).length / n;
    expect(Math.abs(kept - (1 - p))).toBeLessThan(0.03);
  });
});
