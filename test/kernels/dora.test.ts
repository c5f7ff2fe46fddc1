/**
 * DoRA's kernels against float64 references built from the whole matrix W + s B A (the kernels never form
 * it): the row norms of a weight through its product, the per-pass norm and scale from A W^T and A A^T,
 * the merge, unmerge and deltas, and the magnitude's gradient through the column scale's divisor.
 */
import { describe, expect, it } from 'vitest';
import { columnSumSquares, doraNorm, doraRowRescale, identityChunk } from '../../src/kernels/dora.js';
import { columnScaleBackward } from '../../src/kernels/column-scale.js';
import { matmul } from '../../src/kernels/matmul.js';
import { compare, freshSeed, poisoned, randn, rng, testGpu } from '../helpers.js';
import { directionRef, rowNormsRef } from '../reference/dora.js';
import { columnScaleBackwardRef } from '../reference/column-scale.js';

// [N, K, R]: odd sizes, a rank of 1, more rows than one workgroup, rows longer than one.
const SHAPES = [
  [1, 1, 1],
  [7, 13, 3],
  [33, 300, 5],
  [300, 17, 2],
];

describe('DoRA kernels', () => {
  it.each(SHAPES)('the row norms of W [%i, %i] through its product over identity chunks', async (N, K) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const W = randn(N * K, rand);
    const w = gpu.upload(W);
    const rows = Math.max(1, Math.floor(K / 3)); // several chunks, the last one short
    const eye = poisoned(gpu, rows * K);
    const y = poisoned(gpu, rows * N);
    const sums = gpu.upload(new Float32Array(N));
    await gpu.run((rec) => {
      for (let offset = 0; offset < K; offset += rows) {
        const M = Math.min(rows, K - offset);
        identityChunk(rec, { x: eye, rows: M, cols: K, offset });
        matmul(rec, { a: eye, b: w, c: y, M, N, K, transB: true });
        columnSumSquares(rec, { x: y, sums, rows: M, cols: N });
      }
    });
    const want = rowNormsRef(W, N, K).map((v) => v * v);
    expect(compare(await gpu.readF32(sums), want).rel, `seed ${seed}`).toBeLessThan(1e-5);
  });

  it.each(SHAPES)('the norm ‖W + s B A‖ and scale m / n of [%i, %i] at rank %i from A W^T and A A^T', async (N, K, R) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const [W, A, B, m] = [randn(N * K, rand), randn(R * K, rand), randn(N * R, rand, 0.5), randn(N, rand)];
    const s = 0.5 + rand();
    const wn2 = Float32Array.from(rowNormsRef(W, N, K), (v) => v * v);
    const [a, P, G] = [gpu.upload(A), poisoned(gpu, R * N), poisoned(gpu, R * R)];
    const norm = poisoned(gpu, N);
    const scale = poisoned(gpu, N);
    await gpu.run((rec) => {
      matmul(rec, { a, b: gpu.upload(W), c: P, M: R, N, K, transB: true });
      matmul(rec, { a, b: a, c: G, M: R, N: R, K, transB: true });
      doraNorm(rec, { weightSquares: gpu.upload(wn2), P, G, B: gpu.upload(B), magnitude: gpu.upload(m), norm, scale, N, R, s });
    });
    const n = rowNormsRef(directionRef(W, A, B, s, N, K, R), N, K);
    expect(compare(await gpu.readF32(norm), n).rel, `seed ${seed}`).toBeLessThan(1e-4);
    expect(compare(await gpu.readF32(scale), n.map((v, j) => m[j] / v)).rel, `seed ${seed}`).toBeLessThan(1e-4);
    // Initializing writes n alone (into m's place, as the caller binds it) and leaves the scale alone.
    const only = poisoned(gpu, N);
    await gpu.run((rec) => {
      matmul(rec, { a, b: gpu.upload(W), c: P, M: R, N, K, transB: true });
      doraNorm(rec, { weightSquares: gpu.upload(wn2), P, G, B: gpu.upload(B), magnitude: gpu.upload(m), norm: only, scale: null, N, R, s });
    });
    expect(compare(await gpu.readF32(only), n).rel, `seed ${seed}`).toBeLessThan(1e-4);
  });

  it.each(SHAPES)('merge, unmerge and the deltas of [%i, %i] at rank %i', async (N, K, R) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const [W, A, B, m] = [randn(N * K, rand), randn(R * K, rand), randn(N * R, rand, 0.5), randn(N, rand).map((v) => 1 + Math.abs(v))];
    const s = 0.5 + rand();
    const V = directionRef(W, A, B, s, N, K, R);
    const n = rowNormsRef(V, N, K);
    const merged = V.map((v, i) => (m[Math.floor(i / K)] / n[Math.floor(i / K)]) * v);
    const magnitude = gpu.upload(m);
    const norm = poisoned(gpu, N);
    // merge: w holds W + s B A.
    const w = gpu.upload(Float32Array.from(V));
    await gpu.run((rec) => doraRowRescale(rec, 'merge', { w, magnitude, norm, rows: N, cols: K }));
    expect(compare(await gpu.readF32(w), merged).rel, `seed ${seed}`).toBeLessThan(1e-5);
    expect(compare(await gpu.readF32(norm), n).rel, `seed ${seed}`).toBeLessThan(1e-5);
    // unmerge: back to W + s B A with the kept norm.
    await gpu.run((rec) => doraRowRescale(rec, 'unmerge', { w, magnitude, norm, rows: N, cols: K }));
    expect(compare(await gpu.readF32(w), V).rel, `seed ${seed}`).toBeLessThan(1e-5);
    // delta from the base, and from the merged weight: both the merged weight minus W.
    const sBA = V.map((v, i) => v - W[i]);
    const want = merged.map((v, i) => v - W[i]);
    const out = gpu.upload(Float32Array.from(sBA));
    await gpu.run((rec) => doraRowRescale(rec, 'delta', { w: out, magnitude, norm: poisoned(gpu, N), base: gpu.upload(W), rows: N, cols: K }));
    expect(compare(await gpu.readF32(out), want).rel, `seed ${seed}`).toBeLessThan(1e-4);
    const out2 = gpu.upload(Float32Array.from(sBA));
    await gpu.run((rec) => doraRowRescale(rec, 'merged delta', { w: out2, magnitude, norm: gpu.upload(Float32Array.from(n)), base: gpu.upload(Float32Array.from(merged)), rows: N, cols: K }));
    expect(compare(await gpu.readF32(out2), want).rel, `seed ${seed}`).toBeLessThan(1e-4);
  });

  it('the magnitude gradient: the column scale backward divides each column sum by n', async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const [rows, cols] = [19, 70];
    const [z, sc, dy, n, ds0] = [randn(rows * cols, rand), randn(cols, rand), randn(rows * cols, rand), randn(cols, rand).map((v) => 1 + Math.abs(v)), randn(cols, rand)];
    const ds = gpu.upload(ds0);
    await gpu.run((rec) => columnScaleBackward(rec, { dy: gpu.upload(dy), scale: gpu.upload(sc), dz: poisoned(gpu, rows * cols), grad: { z: gpu.upload(z), ds, divisor: gpu.upload(n) }, rows, cols }));
    const want = columnScaleBackwardRef(dy, sc, z, rows, cols).ds.map((v, c) => ds0[c] + v / n[c]);
    expect(compare(await gpu.readF32(ds), want).rel, `seed ${seed}`).toBeLessThan(1e-4);
  });
});
