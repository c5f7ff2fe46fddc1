import { describe, expect, it } from 'vitest';
import { dequantizeQ4, int4Bytes, int4Layout, quantizeInt4, ShapeError, type Gpu, type Int4Weight } from '../../src/index.js';
import { compare, freshSeed, poisoned, randn, rng, testGpu } from '../helpers.js';
import { dequantizeInt4Ref, int4Scale, type PackedInt4 } from '../reference/int4.js';
import { checkQ4Products } from './q4-products.js';

async function quantized(gpu: Gpu, w: Float32Array, N: number, K: number, groupSize: number) {
  const layout = int4Layout(N, K, groupSize);
  const bytes = int4Bytes(layout);
  const weight: Int4Weight = {
    format: 'int4',
    layout,
    qweight: gpu.createBuffer(bytes.qweight, undefined, 'qweight'),
    scales: gpu.createBuffer(bytes.scales, undefined, 'scales'),
    zeros: gpu.createBuffer(bytes.zeros, undefined, 'zeros'),
  };
  // Poison with all-ones words: every word the quantizer fails to write is detectable.
  for (const b of [weight.qweight, weight.scales, weight.zeros]) gpu.fill(b as GPUBuffer, 0xffffffff, 'u32');
  const W = gpu.upload(w, 'W');
  await gpu.run((rec) => quantizeInt4(rec, { w: W, out: weight }));
  const packed: PackedInt4 = {
    N,
    K,
    groupSize,
    qweight: await gpu.readU32(weight.qweight),
    scales: await gpu.readU32(weight.scales),
    zeros: await gpu.readU32(weight.zeros),
  };
  return { weight, packed };
}

describe.each([32, 64, 128])('int4 group size %i', (groupSize) => {
  it.each([
    [1, 1],
    [3, 17],
    [17, 100],
    [33, 257],
    [5, 300],
  ])('N=%i K=%i: packing, exact dequantization, error bound', async (N, K) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const w = randn(N * K, rand, 0.2);
    if (N * K > 3) w[2] = 0; // exact zeros must survive
    // The last row's first group spans far less than the smallest normal f16 scale times 15.
    for (let k = 0; k < Math.min(K, groupSize); k++) w[(N - 1) * K + k] *= 1e-5;
    const { weight, packed } = await quantized(gpu, w, N, K, groupSize);
    const l = weight.layout;
    // Padding nibbles past K are zero, and unused scale halves are zero.
    if (K % 8) for (let n = 0; n < N; n++) expect(packed.qweight[n * l.wordsPerRow + l.wordsPerRow - 1] >>> (4 * (K % 8)), `seed ${seed}`).toBe(0);
    if (l.groupsPerRow % 2) for (let n = 0; n < N; n++) expect(packed.scales[n * l.scaleWordsPerRow + l.scaleWordsPerRow - 1] >>> 16).toBe(0);

    const out = poisoned(gpu, N * K, 'dequantized');
    await gpu.run((rec) => dequantizeQ4(rec, { weight, out }));
    const got = await gpu.readF32(out);
    const ref = dequantizeInt4Ref(packed);
    // (q - zero) * f16 scale is exact in f32, so GPU and reference agree bit for bit.
    expect(compare(got, ref).maxAbs, `seed ${seed}`).toBe(0);
    // Quantization error: at most half a step, plus the f16 rounding of the scale (15 * 2^-11 steps).
    for (let n = 0; n < N; n++) {
      for (let k = 0; k < K; k++) {
        const s = int4Scale(packed, n, Math.floor(k / groupSize));
        if (w[n * K + k] !== 0) expect(s, `seed ${seed} n ${n} k ${k}`).toBeGreaterThanOrEqual(2 ** -14);
        const err = Math.abs(w[n * K + k] - got[n * K + k]);
        expect(err, `seed ${seed} n ${n} k ${k} scale ${s}`).toBeLessThanOrEqual(s * (0.5 + 15 * 2 ** -11) + 1e-7);
      }
    }
    if (N * K > 3) expect(got[2]).toBe(0);
  });

  it.each([
    [1, 33, 100, 'direct'],
    [17, 5, 257, 'direct'],
    [70, 65, 64, 'direct'],
    [1, 33, 100, 'tiled'],
    [17, 5, 257, 'tiled'],
    [70, 65, 64, 'tiled'],
  ] as const)('fused products M=%i N=%i K=%i (%s): forward and input gradient', async (M, N, K, variant) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const { weight, packed } = await quantized(gpu, randn(N * K, rand, 0.2), N, K, groupSize);
    await checkQ4Products(gpu, weight, dequantizeInt4Ref(packed), M, variant, rand, seed);
  });
});

describe('int4 with a zero bias of 1 (GPTQ stores zero - 1, so zero points run 1..16)', () => {
  it.each([
    [5, 17, 128, 32],
    [33, 9, 200, 64],
    [70, 24, 256, 128],
  ] as const)('M=%i N=%i K=%i, groups of %i: dequantization and both products read the biased zero points', async (M, N, K, groupSize) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const layout = int4Layout(N, K, groupSize, 1);
    const word = () => (rand() * 2 ** 32) >>> 0;
    const words = (n: number) => Uint32Array.from({ length: n }, word);
    // f16 scales in [2^-8, 2^-4): exponent 7..10, any mantissa, either sign.
    const half = () => ((rand() < 0.5 ? 0x8000 : 0) | ((7 + Math.floor(rand() * 4)) << 10) | Math.floor(rand() * 1024)) >>> 0;
    const packed: PackedInt4 = {
      N, K, groupSize, zeroBias: 1,
      qweight: words(N * layout.wordsPerRow),
      scales: Uint32Array.from({ length: N * layout.scaleWordsPerRow }, () => (half() | (half() << 16)) >>> 0),
      zeros: words(N * layout.zeroWordsPerRow),
    };
    packed.zeros[0] |= 15; // row 0, group 0 has zero point 16
    // Clear what the layout leaves unused, as a writer of the format does.
    for (let n = 0; n < N; n++) {
      if (K % 8) packed.qweight[(n + 1) * layout.wordsPerRow - 1] &= 2 ** (4 * (K % 8)) - 1;
      if (layout.groupsPerRow % 2) packed.scales[(n + 1) * layout.scaleWordsPerRow - 1] &= 0xffff;
    }
    const weight: Int4Weight = {
      format: 'int4', layout, qweight: gpu.upload(packed.qweight, 'qweight'), scales: gpu.upload(packed.scales, 'scales'), zeros: gpu.upload(packed.zeros, 'zeros'),
    };
    const ref = dequantizeInt4Ref(packed);
    const out = poisoned(gpu, N * K, 'dequantized');
    await gpu.run((rec) => dequantizeQ4(rec, { weight, out }));
    expect(compare(await gpu.readF32(out), ref).maxAbs, `seed ${seed}`).toBe(0);
    expect(ref[0]).toBe(((packed.qweight[0] & 15) - 16) * int4Scale(packed, 0, 0));
    for (const variant of ['direct', 'tiled'] as const) await checkQ4Products(gpu, weight, ref, M, variant, rand, seed);
  });

  it('quantizes only with no bias', async () => {
    const gpu = await testGpu();
    const small = gpu.createBuffer(4 * 64);
    const weight: Int4Weight = { format: 'int4', layout: int4Layout(4, 64, 32, 1), qweight: small, scales: small, zeros: small };
    expect(() => quantizeInt4(gpu.recorder(), { w: gpu.createBuffer(4 * 256), out: weight })).toThrow(/no bias/);
  });
});

describe('int4 input checks', () => {
  it('rejects unsupported group sizes and short buffers', async () => {
    const gpu = await testGpu();
    expect(() => int4Layout(4, 64, 48)).toThrow(ShapeError);
    const layout = int4Layout(4, 64, 32);
    const small = gpu.createBuffer(4);
    const weight: Int4Weight = { format: 'int4', layout, qweight: small, scales: small, zeros: small };
    expect(() => quantizeInt4(gpu.recorder(), { w: gpu.createBuffer(4 * 256), out: weight })).toThrow(/qweight needs/);
  });
});
