import { describe, expect, it } from 'vitest';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, matmul, ShapeError, type MatmulVariant, type WeightFormat } from '../../src/index.js';
import { dropoutKeep } from '../../src/util/random.js';
import type { GpuTuning } from '../../src/gpu/gpu.js';
import { compare, freshSeed, poisoned, randn, rng, testGpu } from '../helpers.js';
import { matmulRef, type MatmulRefArgs } from '../reference/matmul.js';

const VARIANTS: MatmulVariant[] = ['tiled', 'direct'];

/** One matmul call: the reference's arguments without the data, and whether B is shared across the batch. */
type Case = Omit<MatmulRefArgs, 'a' | 'b' | 'c' | 'strideA' | 'strideB' | 'strideC'> & { broadcastB?: boolean; aFormat?: WeightFormat; bFormat?: WeightFormat };

/** B rounded to its 16-bit format (what the reference multiplies) and packed two per word (what the GPU reads). */
function packHalves(b: Float32Array, format: 'bf16' | 'f16'): { rounded: Float32Array; packed: Uint16Array } {
  const bits = format === 'bf16' ? f32ToBf16(b) : f32ToF16(b);
  const packed = new Uint16Array(bits.length + (bits.length % 2)); // whole 4-byte words
  packed.set(bits);
  return { rounded: format === 'bf16' ? bf16ToF32(bits) : f16ToF32(bits), packed };
}

async function check(variant: MatmulVariant, c: Case, tuning?: Partial<GpuTuning>): Promise<void> {
  const gpu = await testGpu(tuning);
  const seed = freshSeed();
  const rand = rng(seed);
  const batch = c.batch ?? 1;
  const strideB = c.broadcastB ? 0 : c.K * c.N;
  let a = randn(batch * c.M * c.K, rand);
  let b = randn(c.broadcastB ? c.K * c.N : batch * c.K * c.N, rand);
  let aData: Float32Array | Uint16Array = a;
  let bData: Float32Array | Uint16Array = b;
  if (c.aFormat && c.aFormat !== 'f32') ({ rounded: a, packed: aData } = packHalves(a, c.aFormat));
  if (c.bFormat && c.bFormat !== 'f32') ({ rounded: b, packed: bData } = packHalves(b, c.bFormat));
  const c0 = randn(batch * c.M * c.N, rand);
  const A = gpu.upload(aData, 'A');
  const B = gpu.upload(bData, 'B');
  // Accumulation reads C, so it starts from random values; otherwise C is poisoned.
  const C = c.accumulate ? gpu.upload(c0, 'C') : poisoned(gpu, batch * c.M * c.N, 'C');
  await gpu.run((rec) =>
    matmul(rec, { a: A, aFormat: c.aFormat, b: B, bFormat: c.bFormat, c: C, M: c.M, N: c.N, K: c.K, batch, strideB, transA: c.transA, transB: c.transB, alpha: c.alpha, accumulate: c.accumulate, variant }),
  );
  const got = await gpu.readF32(C);
  const want = matmulRef({ a, b, c: c0, M: c.M, N: c.N, K: c.K, batch, strideB, transA: c.transA, transB: c.transB, alpha: c.alpha, accumulate: c.accumulate });
  const err = compare(got, want);
  expect(err.rel, `seed ${seed} ${variant} ${JSON.stringify(c)} maxAbs ${err.maxAbs}`).toBeLessThan(1e-4);
  for (const buf of [A, B, C]) gpu.destroyBuffer(buf);
}

describe.each(VARIANTS)('matmul (%s)', (variant) => {
  it.each([
    [1, 1, 1],
    [3, 17, 33],
    [17, 3, 100],
    [33, 100, 17],
    [100, 33, 257],
    [65, 64, 63],
  ])('M=%i N=%i K=%i plain', (M, N, K) => check(variant, { M, N, K }));

  it.each([
    [false, true],
    [true, false],
    [true, true],
  ])('transA=%s transB=%s at 37x29x53', (transA, transB) => check(variant, { M: 37, N: 29, K: 53, transA, transB }));

  it('batched with scale and accumulate (dW += alpha dY^T X)', () =>
    check(variant, { M: 19, N: 23, K: 41, batch: 3, transA: true, alpha: 0.37, accumulate: true }));

  it('broadcasts a shared weight across the batch (y = x W^T)', () =>
    check(variant, { M: 13, N: 31, K: 27, batch: 4, transB: true, broadcastB: true }));
});

// A frozen 16-bit weight read as stored, packed in u32 words or (devices with shader-f16) by f16 loads:
// the forward product (x W^T) and the input gradient (dY W).
const hasF16 = (await testGpu()).features.shaderF16;
const HALF_LOADS = VARIANTS.flatMap((variant) => (hasF16 ? (['packed', 'native'] as const) : (['packed'] as const)).map((halfLoads) => [variant, halfLoads] as const));
describe.each(HALF_LOADS)('matmul (%s) with a 16-bit B, %s loads', (variant, halfLoads) => {
  const tuning = { halfLoads };
  it.each([
    ['bf16', true, 17, 33, 101],
    ['bf16', false, 33, 17, 3],
    ['f16', true, 3, 65, 33],
    ['f16', false, 100, 33, 17],
  ] as const)('B stored %s, transB=%s at %ix%ix%i', (bFormat, transB, M, N, K) => check(variant, { M, N, K, transB, bFormat }, tuning));
  it('B stored bf16 and broadcast across a batch', () => check(variant, { M: 7, N: 9, K: 11, batch: 3, transB: true, broadcastB: true, bFormat: 'bf16' }, tuning));
  // 16-bit activations (mixed precision): the forward product with both operands 16-bit, and A transposed (dW = dY^T X).
  it.each([
    ['f16', 'f16', false, true, 17, 33, 101],
    ['f16', 'f32', true, false, 33, 17, 3],
    ['bf16', 'bf16', false, true, 3, 65, 33],
    ['f16', 'bf16', true, true, 65, 9, 40],
  ] as const)('A stored %s and B %s, transA=%s transB=%s at %ix%ix%i', (aFormat, bFormat, transA, transB, M, N, K) => check(variant, { M, N, K, transA, transB, aFormat, bFormat }, tuning));
  it('A stored f16 in a batch with accumulation', () => check(variant, { M: 7, N: 9, K: 11, batch: 3, alpha: 0.5, accumulate: true, aFormat: 'f16' }, tuning));
});

describe('matmul of f16 operands against the exact product of the unrounded ones', () => {
  // Rounding each input to f16 (unit roundoff u = 2^-11) moves a product a*b by at most (2u + u^2)|a b|;
  // the product of two f16 values is exact in f32, and summing K of them in f32 adds at most
  // gamma_K = K v / (1 - K v), v = 2^-24, of the sum of their magnitudes. Per element of C:
  //   |C - exact| <= (2u + u^2) sum |a b| + gamma_K sum |a~ b~|   (a~, b~ the rounded inputs).
  it.each([
    [17, 33, 257],
    [64, 64, 1000],
  ])('%ix%ix%i stays within the derived bound, and the rounding shows beyond the f32 tolerance', async (M, N, K) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const a = randn(M * K, rand);
    const b = randn(N * K, rand);
    const ah = packHalves(a, 'f16');
    const bh = packHalves(b, 'f16');
    const C = poisoned(gpu, M * N);
    await gpu.run((rec) => matmul(rec, { a: gpu.upload(ah.packed), aFormat: 'f16', b: gpu.upload(bh.packed), bFormat: 'f16', c: C, M, N, K, transB: true }));
    const got = await gpu.readF32(C);
    const [u, v] = [2 ** -11, 2 ** -24];
    const gamma = (K * v) / (1 - K * v);
    let worst = 0;
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let exact = 0;
        let magnitude = 0;
        let roundedMagnitude = 0;
        for (let k = 0; k < K; k++) {
          exact += a[m * K + k] * b[n * K + k];
          magnitude += Math.abs(a[m * K + k] * b[n * K + k]);
          roundedMagnitude += Math.abs(ah.rounded[m * K + k] * bh.rounded[n * K + k]);
        }
        const bound = (2 * u + u * u) * magnitude + gamma * roundedMagnitude;
        worst = Math.max(worst, Math.abs(got[m * N + n] - exact) / bound);
      }
    }
    expect(worst, `seed ${seed}: worst error over its bound`).toBeLessThanOrEqual(1);
    // Rounding the inputs does move the result: more than f32's kernel tolerance allows.
    const f32Product = matmulRef({ a, b, c: new Float32Array(M * N), M, N, K, transB: true });
    expect(compare(got, f32Product).rel, `seed ${seed}`).toBeGreaterThan(1e-4);
  });
});

describe('16-bit weights read natively and packed', () => {
  for (const format of ['f16', 'bf16'] as const) it.skipIf(!hasF16)(`give the same products bit for bit, subnormals, zeros of both signs and extremes included (${format})`, async () => {
    const seed = freshSeed();
    const rand = rng(seed);
    const [M, N, K] = [5, 7, 9];
    // Bit patterns straight from the format's range: random ones, then the special finite values.
    // Clearing the exponent's top bit (bit 14 in both formats) keeps the random ones finite.
    const bits = Uint16Array.from({ length: N * K + 1 } /* whole 4-byte words */, () => Math.floor(rand() * 0x10000) & 0xbfff);
    // Zeros of both signs, the smallest subnormal, the largest subnormal (negative), the smallest normal, ±max, one.
    const special = format === 'f16' ? [0x0000, 0x8000, 0x0001, 0x83ff, 0x0400, 0x7bff, 0xfbff, 0x3c00] : [0x0000, 0x8000, 0x0001, 0x807f, 0x0080, 0x7f7f, 0xff7f, 0x3f80];
    bits.set(special);
    const a = randn(M * K, rand);
    const results = [];
    for (const halfLoads of ['packed', 'native'] as const) {
      const gpu = await testGpu({ halfLoads });
      const C = poisoned(gpu, M * N);
      await gpu.run((rec) => matmul(rec, { a: gpu.upload(a), b: gpu.upload(bits), bFormat: format, c: C, M, N, K, transB: true }));
      results.push(Array.from(await gpu.readF32(C)));
    }
    expect(results[1], `seed ${seed}`).toEqual(results[0]);
  });
});

describe.each(VARIANTS)('matmul epilogue: bias and a low-rank (LoRA) term fused into the store (%s)', (variant) => {
  it.each([
    // M, N, K, rank, transV, accumulate, bias, dropout p
    [1, 1, 1, 1, false, false, true, 0],
    [37, 29, 53, 3, true, false, false, 0], // forward: x W^T + s (x A^T) B^T
    [100, 33, 17, 16, false, true, false, 0], // backward: dx += dy W + du A
    [65, 70, 9, 5, true, false, true, 0], // bias and adapter together (Qwen2's q, v)
    [33, 100, 20, 7, false, true, false, 0.3], // backward with dropout on the adapter input
    [17, 3, 100, 2, true, true, true, 0.5],
  ])('M=%i N=%i K=%i rank %i transV %s accumulate %s bias %s dropout %f', async (M, N, K, R, transV, accumulate, withBias, p) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const [a, b, c0, u, v, bias] = [randn(M * K, rand), randn(N * K, rand), randn(M * N, rand), randn(M * R, rand), randn(R * N, rand), randn(N, rand)];
    const [alpha, scale, dropSeed] = [0.7, 1.9, Math.floor(rand() * 2 ** 32)];
    const C = accumulate ? gpu.upload(c0) : poisoned(gpu, M * N);
    await gpu.run((rec) =>
      matmul(rec, {
        a: gpu.upload(a), b: gpu.upload(b), c: C, M, N, K, transB: true, alpha, accumulate, variant,
        bias: withBias ? gpu.upload(bias) : undefined,
        lowRank: { u: gpu.upload(u), v: gpu.upload(v), rank: R, transV, scale, dropout: p ? { p, seed: dropSeed } : undefined },
      }),
    );
    const want = matmulRef({ a, b, c: c0, M, N, K, transB: true, alpha, accumulate });
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let term = 0;
        for (let r = 0; r < R; r++) term += u[m * R + r] * v[transV ? n * R + r : r * N + n];
        const keep = p === 0 ? 1 : dropoutKeep(m * N + n, dropSeed, p) ? 1 / (1 - p) : 0;
        want[m * N + n] += scale * keep * term + (withBias ? bias[n] : 0);
      }
    }
    expect(compare(await gpu.readF32(C), want).rel, `seed ${seed}`).toBeLessThan(1e-4);
  });

  it('refuses a low-rank term on a batch and a short bias', async () => {
    const gpu = await testGpu();
    const x = gpu.createBuffer(4 * 64);
    const rec = gpu.recorder();
    const lowRank = { u: x, v: x, rank: 2 };
    expect(() => matmul(rec, { a: x, b: x, c: x, M: 2, N: 2, K: 2, batch: 2, lowRank })).toThrow(/batch 1/);
    const big = gpu.createBuffer(4 * 400);
    expect(() => matmul(rec, { a: big, b: big, c: big, M: 4, N: 80, K: 1, bias: x })).toThrow(/bias needs 80/);
  });
});

describe('matmul input checks', () => {
  it('rejects buffers smaller than the shapes say', async () => {
    const gpu = await testGpu();
    const A = gpu.createBuffer(4 * 10);
    const B = gpu.createBuffer(4 * 12);
    const C = gpu.createBuffer(4 * 6);
    const rec = gpu.recorder();
    expect(() => matmul(rec, { a: A, b: B, c: C, M: 2, N: 3, K: 5 })).toThrow(ShapeError);
    expect(() => matmul(rec, { a: A, b: B, c: C, M: 2, N: 3, K: -1 })).toThrow(ShapeError);
    expect(() => matmul(rec, { a: A, b: B, c: C, M: 2, N: 3, K: 4, batch: 2 })).toThrow(/needs \d+ elements/);
  });
});
