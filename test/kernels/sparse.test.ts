import { describe, expect, it } from 'vitest';
import { blockSparseGrad, matmul, sparseGather, sparseGrad, sparseScatter, ShapeError, validateMask } from '../../src/index.js';
import { compare, freshSeed, poisoned, randn, rng, testGpu } from '../helpers.js';
import { blockSparseGradRef, randomMask, scatterRef, sparseGradRef } from '../reference/sparse.js';

describe('sparse gradient at masked positions (sampled dense-dense product)', () => {
  it.each([
    [1, 1, 1, 1.0],
    [3, 17, 33, 0.1],
    [17, 100, 3, 0.05],
    [33, 257, 17, 0.01],
    [100, 33, 100, 0.3],
  ])('T=%i N=%i K=%i density %f', async (T, N, K, density) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const mask = randomMask(N * K, density, rand);
    const nnz = mask.length;
    const dYh = randn(T * N, rand);
    const xh = randn(T * K, rand);
    const indices = gpu.upload(mask, 'mask');
    const dY = gpu.upload(dYh, 'dY');
    const x = gpu.upload(xh, 'x');
    const out = poisoned(gpu, nnz, 'grad');
    await gpu.run((rec) => sparseGrad(rec, { indices, nnz, dY, x, T, N, K, out, alpha: 0.75 }));
    const err = compare(await gpu.readF32(out), sparseGradRef(mask, dYh, xh, T, N, K, 0.75));
    expect(err.rel, `seed ${seed} maxAbs ${err.maxAbs}`).toBeLessThan(1e-4);
  });

  it('accumulates across micro-batches and matches the dense dW at the mask', async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const [T, N, K] = [29, 37, 41];
    const mask = randomMask(N * K, 0.2, rand);
    const nnz = mask.length;
    const dYh = randn(T * N, rand);
    const xh = randn(T * K, rand);
    const initial = randn(nnz, rand);
    const indices = gpu.upload(mask);
    const dY = gpu.upload(dYh);
    const x = gpu.upload(xh);
    const out = gpu.upload(initial);
    const dense = poisoned(gpu, N * K, 'dense dW');
    await gpu.run((rec) => {
      sparseGrad(rec, { indices, nnz, dY, x, T, N, K, out, accumulate: true });
      matmul(rec, { a: dY, b: x, c: dense, M: N, N: K, K: T, transA: true });
    });
    const got = await gpu.readF32(out);
    expect(compare(got, sparseGradRef(mask, dYh, xh, T, N, K, 1, initial)).rel, `seed ${seed}`).toBeLessThan(1e-4);
    const d = await gpu.readF32(dense);
    const denseAtMask = Array.from(mask, (i, k) => d[i] + initial[k]);
    expect(compare(got, denseAtMask).rel, `seed ${seed}`).toBeLessThan(1e-4);
  });
});

describe('block-sparse gradient (a tiled product per selected block)', () => {
  it.each([
    [1, 16, 16, 16, 1.0, false],
    [17, 48, 32, 16, 0.4, true],
    [5, 64, 96, 32, 0.5, false],
    [33, 128, 64, 64, 0.5, true],
    [40, 96, 160, 32, 0.1, true],
  ])('T=%i N=%i K=%i blocks of %i, density %f, accumulate %s', async (T, N, K, bs, density, accumulate) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const blocks = randomMask((N / bs) * (K / bs), density, rand);
    const dYh = randn(T * N, rand);
    const xh = randn(T * K, rand);
    const initial = accumulate ? randn(blocks.length * bs * bs, rand) : undefined;
    const out = initial ? gpu.upload(initial, 'grad') : poisoned(gpu, blocks.length * bs * bs, 'grad');
    await gpu.run((rec) => blockSparseGrad(rec, { blocks: gpu.upload(blocks), numBlocks: blocks.length, blockSize: bs, dY: gpu.upload(dYh), x: gpu.upload(xh), T, N, K, out, alpha: 1.25, accumulate }));
    const err = compare(await gpu.readF32(out), blockSparseGradRef(blocks, bs, dYh, xh, T, N, K, 1.25, initial));
    expect(err.rel, `seed ${seed} maxAbs ${err.maxAbs}`).toBeLessThan(1e-4);
  });

  it('refuses block sizes that do not tile the weight, or that the kernel lacks', async () => {
    const gpu = await testGpu();
    const buf = gpu.upload(new Float32Array(64 * 64));
    const blocks = gpu.upload(new Uint32Array([0]));
    const args = { blocks, numBlocks: 1, dY: buf, x: buf, T: 1, N: 48, K: 64, out: buf };
    await expect(gpu.run((rec) => blockSparseGrad(rec, { ...args, blockSize: 32 }))).rejects.toThrow(ShapeError);
    await expect(gpu.run((rec) => blockSparseGrad(rec, { ...args, N: 64, blockSize: 8 }))).rejects.toThrow(ShapeError);
  });
});

describe('scatter and gather', () => {
  it.each([false, true])('add=%s on a 33x100 weight', async (add) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const size = 33 * 100;
    const w0 = randn(size, rand);
    const mask = randomMask(size, 0.07, rand);
    const vals = randn(mask.length, rand);
    const W = gpu.upload(w0);
    const indices = gpu.upload(mask);
    const values = gpu.upload(vals);
    const gathered = poisoned(gpu, mask.length, 'gathered');
    await gpu.run((rec) => {
      sparseGather(rec, { indices, nnz: mask.length, values: gathered, weight: W, weightSize: size });
      sparseScatter(rec, { indices, nnz: mask.length, values, weight: W, weightSize: size, add });
    });
    expect(compare(await gpu.readF32(gathered), Array.from(mask, (i) => w0[i])).maxAbs).toBe(0);
    expect(compare(await gpu.readF32(W), scatterRef(mask, vals, w0, add)).rel, `seed ${seed}`).toBeLessThan(1e-6);
  });
});

describe('mask validation', () => {
  it('rejects unsorted, duplicate and out-of-range indices', () => {
    expect(() => validateMask(Uint32Array.from([1, 5, 3]), 2, 4)).toThrow(ShapeError);
    expect(() => validateMask(Uint32Array.from([1, 1]), 2, 4)).toThrow(/strictly increasing/);
    expect(() => validateMask(Uint32Array.from([0, 8]), 2, 4)).toThrow(/outside/);
    expect(() => validateMask(Uint32Array.from([0, 7]), 2, 4)).not.toThrow();
  });

  it('rejects buffers shorter than the mask', async () => {
    const gpu = await testGpu();
    const b = gpu.createBuffer(16);
    expect(() =>
      sparseGrad(gpu.recorder(), { indices: b, nnz: 5, dY: b, x: b, T: 1, N: 2, K: 2, out: b }),
    ).toThrow(ShapeError);
  });
});
