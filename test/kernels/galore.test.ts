/**
 * GaLore's kernels: in-order orthonormalization (rows and columns) against float64 Gram-Schmidt, the
 * subspace iteration against a float64 SVD of the same matrix (principal angles), and the projected Adam
 * step against its formula in float64.
 */
import { describe, expect, it } from 'vitest';
import { galoreAdam, galoreOrthonormalize, galoreSubspace } from '../../src/kernels/galore.js';
import { compare, freshSeed, poisoned, randn, REDUCTIONS, rng, testGpu } from '../helpers.js';
import { singularSubspace, subspaceCosine } from '../reference/svd.js';

/** Float64 Gram-Schmidt of `count` vectors of `length` (vector k, element i at k vstride + i estride). */
function gramSchmidt(x: ArrayLike<number>, count: number, length: number, vstride: number, estride: number): Float64Array {
  const out = Float64Array.from(x);
  const at = (k: number, i: number) => k * vstride + i * estride;
  for (let k = 0; k < count; k++) {
    for (let j = 0; j < k; j++) {
      let d = 0;
      for (let i = 0; i < length; i++) d += out[at(j, i)] * out[at(k, i)];
      for (let i = 0; i < length; i++) out[at(k, i)] -= d * out[at(j, i)];
    }
    let s = 0;
    for (let i = 0; i < length; i++) s += out[at(k, i)] ** 2;
    for (let i = 0; i < length; i++) out[at(k, i)] /= Math.sqrt(s);
  }
  return out;
}

/** G = U diag(s) V^T with orthonormal U, V from Gram-Schmidt and s_k = 2^-k: a clear gap after any rank. */
function lowRankish(m: number, n: number, rand: () => number): Float64Array {
  const k = Math.min(m, n);
  const u = gramSchmidt(randn(k * m, rand), k, m, m, 1);
  const v = gramSchmidt(randn(k * n, rand), k, n, n, 1);
  const g = new Float64Array(m * n);
  for (let c = 0; c < k; c++) for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) g[i * n + j] += 2 ** -c * u[c * m + i] * v[c * n + j];
  return g;
}

describe.each(REDUCTIONS)('GaLore kernels, %s', (_, reduction) => {
  it.each([
    ['rows', 5, 37, 37, 1],
    ['columns', 6, 29, 1, 6],
  ] as const)('orthonormalizes %s in order as float64 Gram-Schmidt does', async (_, count, length, vstride, estride) => {
    const gpu = await testGpu(reduction);
    const seed = freshSeed();
    const x = randn(count * length, rng(seed));
    const buffer = gpu.upload(x);
    await gpu.run((rec) => galoreOrthonormalize(rec, { vectors: buffer, count, length, vstride, estride }));
    expect(compare(await gpu.readF32(buffer), gramSchmidt(x, count, length, vstride, estride)).rel, `seed ${seed}`).toBeLessThan(1e-4);
  });

  it.each([
    ['right', 40, 24],
    ['left', 20, 36],
  ] as const)('finds the top singular subspace (%s vectors) that a float64 SVD finds', async (side, m, n) => {
    const gpu = await testGpu(reduction);
    const seed = freshSeed();
    const g = lowRankish(m, n, rng(seed));
    const r = 4;
    const right = side === 'right';
    const p = poisoned(gpu, r * (right ? n : m));
    const scratch = poisoned(gpu, r * (right ? m : n));
    // 16 iterations: convergence from a random start depends on how far the start lies from the subspace,
    // and 8 (GaLore's default) left one start in a few hundred at a cosine of 0.9996 (seed 1413532685).
    await gpu.run((rec) => galoreSubspace(rec, { g: gpu.upload(Float32Array.from(g)), rows: m, cols: n, rank: r, p, right, scratch, iterations: 16, key: seed }));
    const got = await gpu.readF32(p);
    const d = right ? n : m;
    const vectors = Array.from({ length: r }, (_, k) => Float64Array.from({ length: d }, (_, i) => (right ? got[k * n + i] : got[i * r + k])));
    const want = singularSubspace(g, m, n, r, side).vectors;
    expect(subspaceCosine(vectors, want), `seed ${seed}`).toBeGreaterThan(0.9999);
    // In order: the first vector is the top singular vector (up to sign).
    const first = Math.abs(vectors[0].reduce((s, v, i) => s + v * want[0][i], 0));
    expect(first, `seed ${seed}`).toBeGreaterThan(0.9999);
  });
});

describe('GaLore Adam', () => {
  it('writes stepSize m / (sqrt(v) + eps) with galore_torch\'s bias correction (float64 reference, two steps)', async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const n = 1031;
    const [g1, g2] = [randn(n, rand), randn(n, rand)];
    const m = gpu.upload(new Float32Array(n));
    const v = gpu.upload(new Float32Array(n));
    const out = poisoned(gpu, n);
    const clip = gpu.upload(new Float32Array([0.7]));
    const o = { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-6, gradScale: 0.5 };
    let mh = new Float64Array(n);
    let vh = new Float64Array(n);
    for (const [step, g] of [[1, g1], [2, g2]] as const) {
      await gpu.run((rec) => galoreAdam(rec, { grads: gpu.upload(g), m, v, clip, out, n, step, ...o }));
      mh = mh.map((x, i) => o.beta1 * x + (1 - o.beta1) * g[i] * 0.5 * 0.7);
      vh = vh.map((x, i) => o.beta2 * x + (1 - o.beta2) * (g[i] * 0.5 * 0.7) ** 2);
      const stepSize = (o.lr * Math.sqrt(1 - o.beta2 ** step)) / (1 - o.beta1 ** step);
      const want = Array.from(mh, (x, i) => (stepSize * x) / (Math.sqrt(vh[i]) + o.eps));
      expect(compare(await gpu.readF32(out), want).rel, `seed ${seed} step ${step}`).toBeLessThan(1e-4);
    }
  });
});
