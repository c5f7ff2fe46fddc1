import { describe, expect, it } from 'vitest';
import { blockSparseGrad, elementwise, geluForward, normForward, sparseGrad, swigluForward, type NormKind } from '../../src/index.js';
import type { Gpu } from '../../src/gpu/gpu.js';
import type { TensorView } from '../../src/gpu/buffers.js';
import { ShapeError } from '../../src/errors.js';
import { encodeHalves, decodeHalves } from '../../src/model/linear-weights.js';
import { dropoutKeep } from '../../src/util/random.js';
import { compare, freshSeed, poisoned, randn, REDUCTIONS, rng, testGpu } from '../helpers.js';
import { geluRef, normForwardRef, swigluForwardRef } from '../reference/layers.js';
import { blockSparseGradRef, sparseGradRef } from '../reference/sparse.js';

/** Mixed precision's activations: views of f16 values packed two per word. */
function halfView(gpu: Gpu, values: Float32Array | null, n: number): TensorView {
  const words = Math.ceil(n / 2);
  const buffer = values ? gpu.upload(new Uint32Array(encodeHalves(values, 'f16').buffer)) : poisoned(gpu, words);
  return { buffer, offset: 0, size: words * 4, format: 'f16' };
}

const readHalves = async (gpu: Gpu, v: TensorView, n: number) => decodeHalves(await gpu.read(v), n, 'f16');

/** f16 values (as f32) of random normals: inputs the f16 view holds exactly. */
const halves = (n: number, rand: () => number, std = 1) => decodeHalves(encodeHalves(randn(n, rand, std), 'f16').buffer as ArrayBuffer, n, 'f16');

/**
 * An f16 output: the f32 result rounded once, so within half an f16 unit (2^-11 relative) of the exact
 * value, plus the f32 kernel tolerance.
 */
function expectF16Rounded(got: Float32Array, want: ArrayLike<number>, message: string): void {
  let scale = 0;
  for (let i = 0; i < want.length; i++) scale = Math.max(scale, Math.abs(want[i]));
  for (let i = 0; i < want.length; i++) {
    const bound = 2 ** -11 * Math.abs(want[i]) + 1e-4 * scale;
    if (!(Math.abs(got[i] - want[i]) <= bound)) throw new Error(`${message}: element ${i} is ${got[i]}, want ${want[i]} within ${bound}`);
  }
}

const kinds: [NormKind, number][] = [['rmsnorm', 0], ['layernorm', 0], ['rmsnorm', 1]];
describe.each(REDUCTIONS.flatMap(([label, reduction]) => kinds.map(([kind, offset]) => [kind, offset, label, reduction] as const)))('norm forward into f16: %s, weight offset %i, %s', (kind, weightOffset, _, reduction) => {
  it.each([
    [1, 2],
    [17, 100],
    [5, 258],
  ])('%ix%i', async (rows, cols) => {
    const gpu = await testGpu(reduction);
    const seed = freshSeed();
    const rand = rng(seed);
    const [xh, wh, bh] = [randn(rows * cols, rand), randn(cols, rand), randn(cols, rand)];
    const ln = kind === 'layernorm';
    const y = halfView(gpu, null, rows * cols);
    const stats = poisoned(gpu, 2 * rows);
    await gpu.run((rec) => normForward(rec, { kind, rows, cols, eps: 1e-5, weightOffset, x: gpu.upload(xh), weight: gpu.upload(wh), bias: ln ? gpu.upload(bh) : undefined, y, stats }));
    const ref = normForwardRef(kind, xh, wh.map((v) => v + weightOffset), ln ? bh : null, rows, cols, 1e-5);
    expectF16Rounded(await readHalves(gpu, y, rows * cols), ref.y, `seed ${seed}`);
    expect(compare(await gpu.readF32(stats), ref.stats).rel, `seed ${seed}`).toBeLessThan(1e-4);
  });

  it('refuses an odd row length', async () => {
    const gpu = await testGpu(reduction);
    const one = gpu.upload(new Float32Array(3));
    await expect(gpu.run((rec) => normForward(rec, { kind: 'rmsnorm', rows: 1, cols: 3, eps: 1e-5, x: one, weight: one, y: halfView(gpu, null, 4), stats: poisoned(gpu, 2) }))).rejects.toThrow(/even row length/);
  });
});

describe('MLP activations into f16', () => {
  it.each(['silu', 'gelu_new', 'gelu'] as const)('gated, gate %s, over 1030 values', async (activation) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const n = 1030;
    const [gh, uh] = [randn(n, rand, 3), randn(n, rand)];
    const h = halfView(gpu, null, n);
    await gpu.run((rec) => swigluForward(rec, { gate: gpu.upload(gh), up: gpu.upload(uh), h, n, activation }));
    expectF16Rounded(await readHalves(gpu, h, n), swigluForwardRef(gh, uh, activation), `seed ${seed}`);
  });

  it.each(['gelu_new', 'gelu'] as const)('%s over 1030 values', async (kind) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const n = 1030;
    const xh = randn(n, rand, 3);
    const y = halfView(gpu, null, n);
    await gpu.run((rec) => geluForward(rec, { x: gpu.upload(xh), y, n, kind }));
    expectF16Rounded(await readHalves(gpu, y, n), Array.from(xh, (v) => geluRef(v, kind)), `seed ${seed}`);
  });
});

describe('kernels reading f16 activations', () => {
  it('dropout of an f16 input (LoRA dropout under mixed precision), over 1031 values', async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const n = 1031;
    const [p, maskSeed] = [0.3, Math.floor(rand() * 2 ** 32)];
    const xh = halves(n, rand);
    const y = poisoned(gpu, n);
    await gpu.run((rec) => elementwise(rec, { op: 'dropout', y, x: halfView(gpu, xh, n), n, dropout: { p, seed: maskSeed } }));
    const want = Array.from(xh, (v, i) => (dropoutKeep(i, maskSeed, p) ? v / (1 - p) : 0));
    expect(compare(await gpu.readF32(y), want).rel, `seed ${seed}`).toBeLessThan(1e-4);
  });

  it('the sparse and block-sparse weight gradients of an f16 layer input', async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const [T, N, K] = [19, 32, 48];
    const xh = halves(T * K, rand);
    const dyh = randn(T * N, rand);
    const indices = Uint32Array.from(new Set(Array.from({ length: 100 }, () => Math.floor(rand() * N * K)))).sort();
    const blocks = Uint32Array.from([0, 4]); // of (N / 16) x (K / 16) = 2 x 3 blocks
    const [out, blockOut] = [poisoned(gpu, indices.length), poisoned(gpu, blocks.length * 256)];
    const x = halfView(gpu, xh, T * K);
    const dY = gpu.upload(dyh);
    await gpu.run((rec) => {
      sparseGrad(rec, { indices: gpu.upload(indices), nnz: indices.length, dY, x, T, N, K, out, alpha: 0.5 });
      blockSparseGrad(rec, { blocks: gpu.upload(blocks), numBlocks: blocks.length, blockSize: 16, dY, x, T, N, K, out: blockOut });
    });
    expect(compare(await gpu.readF32(out), sparseGradRef(indices, dyh, xh, T, N, K, 0.5)).rel, `seed ${seed}`).toBeLessThan(1e-4);
    expect(compare(await gpu.readF32(blockOut), blockSparseGradRef(blocks, 16, dyh, xh, T, N, K)).rel, `seed ${seed}`).toBeLessThan(1e-4);
  });

  it('are refused where a kernel reads f32, and readF32 refuses them', async () => {
    const gpu = await testGpu();
    // Words enough for 8 f32 values: only the format tells it apart.
    const x = halfView(gpu, new Float32Array(16), 16);
    await expect(gpu.run((rec) => elementwise(rec, { op: 'add', y: poisoned(gpu, 8), x: poisoned(gpu, 8), z: x, n: 8 }))).rejects.toThrow(/binding 'z' reads f32, and the view bound there holds packed f16 values/);
    await expect(gpu.readF32(x)).rejects.toThrow(ShapeError);
  });
});
