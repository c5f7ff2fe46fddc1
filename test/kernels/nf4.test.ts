import { describe, expect, it } from 'vitest';
import { dequantizeQ4, matmulQ4, NF4_CODES, nf4Bytes, nf4Layout, quantizeNf4, type Gpu, type Nf4Weight } from '../../src/index.js';
import { compare, freshSeed, IN_BROWSER, poisoned, randn, rng, testGpu } from '../helpers.js';
import { checkQ4Products } from './q4-products.js';
import { bitsandbytesToNf4, partPlacement } from '../../src/model/bitsandbytes.js';
import { bnbDequantize4bitRef, bnbQuantize4bitRef } from '../reference/bitsandbytes.js';
import { dequantizeNf4Ref, doubleQuantAbsmaxRef, NF4_CODES_REF, NF4_THRESHOLDS_REF, nf4Code, nf4EncodeRef, nf4Normalized, type PackedNf4 } from '../reference/nf4.js';

async function quantized(gpu: Gpu, w: Float32Array, N: number, K: number) {
  const layout = nf4Layout(N, K);
  const bytes = nf4Bytes(layout);
  const weight: Nf4Weight = { format: 'nf4', layout, qweight: gpu.createBuffer(bytes.qweight, undefined, 'qweight'), absmax: gpu.createBuffer(bytes.absmax, undefined, 'absmax') };
  // Poison with all-ones words: every word the quantizer fails to write is detectable.
  for (const b of [weight.qweight, weight.absmax]) gpu.fill(b as GPUBuffer, 0xffffffff, 'u32');
  const W = gpu.upload(w, 'W');
  await gpu.run((rec) => quantizeNf4(rec, { w: W, out: weight }));
  const packed: PackedNf4 = { N, K, qweight: await gpu.readU32(weight.qweight), absmax: await gpu.readF32(weight.absmax) };
  return { weight, packed };
}

/** Whether x lies within a few f32 steps of a threshold, where WGSL's division (2.5 ULP) may pick either side. */
function nearThreshold(x: number): boolean {
  return NF4_THRESHOLDS_REF.some((t) => Math.abs(x - t) <= 8 * 2 ** (Math.floor(Math.log2(Math.abs(t))) - 23));
}

describe('nf4', () => {
  it('the codebook is bitsandbytes\' and the thresholds are its midpoints', () => {
    expect(NF4_CODES).toEqual(NF4_CODES_REF);
    for (let i = 0; i < 15; i++) expect(Math.abs(NF4_THRESHOLDS_REF[i] - (NF4_CODES_REF[i] + NF4_CODES_REF[i + 1]) / 2)).toBeLessThan(1e-6);
  });

  it('encodes a hand-checked row exactly', async () => {
    const gpu = await testGpu();
    // absmax 1, so x = w exactly. Nearest codes: 1 -> 15, -1 -> 0, 0 -> 7, 0.5 -> 12 (0.4407), -0.5 -> 2
    // (-0.5251), 0.1 -> 8 (0.0796), 0.2 -> 9 (0.1609), 0.8 -> 14 (0.7230).
    const { packed } = await quantized(gpu, Float32Array.from([1, -1, 0, 0.5, -0.5, 0.1, 0.2, 0.8]), 1, 8);
    expect(packed.qweight[0].toString(16)).toBe('e982c70f');
    expect(Array.from(packed.absmax)).toEqual([1]);
  });

  it.each([
    [1, 1],
    [3, 17],
    [17, 100],
    [33, 257],
    [5, 300],
    [4, 128],
  ])('N=%i K=%i: codes and absmax as the reference encoder, exact dequantization, error bound', async (N, K) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const w = randn(N * K, rand, 0.2);
    if (N > 1) w.fill(0, 0, Math.min(K, 64)); // an all-zero block
    const { weight, packed } = await quantized(gpu, w, N, K);
    const ref = nf4EncodeRef(w, N, K);
    expect(Array.from(packed.absmax), `seed ${seed}`).toEqual(Array.from(ref.absmax));
    let ambiguous = 0;
    for (let n = 0; n < N; n++) {
      for (let k = 0; k < K; k++) {
        const got = nf4Code(packed, n, k);
        const want = nf4Code(ref, n, k);
        if (got === want) continue;
        const { x } = nf4Normalized(w[n * K + k], ref.absmax[n * Math.ceil(K / 64) + Math.floor(k / 64)]);
        expect(nearThreshold(x) && Math.abs(got - want) === 1, `seed ${seed} n ${n} k ${k}: code ${got}, reference ${want}, x ${x}`).toBe(true);
        ambiguous++;
      }
    }
    expect(ambiguous, `seed ${seed}`).toBeLessThanOrEqual(2);
    const kw = Math.ceil(K / 8);
    if (K % 8) for (let n = 0; n < N; n++) expect(packed.qweight[n * kw + kw - 1] >>> (4 * (K % 8)), `seed ${seed}`).toBe(0);

    const out = poisoned(gpu, N * K, 'dequantized');
    await gpu.run((rec) => dequantizeQ4(rec, { weight, out }));
    const got = await gpu.readF32(out);
    expect(compare(got, dequantizeNf4Ref(packed)).maxAbs, `seed ${seed}`).toBe(0);
    // Quantization error: at most half the widest gap between codes (-1 to -0.6962), times absmax.
    const halfGap = Math.max(...NF4_CODES_REF.slice(1).map((c, i) => (c - NF4_CODES_REF[i]) / 2));
    for (let n = 0; n < N; n++) {
      for (let k = 0; k < K; k++) {
        const amax = packed.absmax[n * Math.ceil(K / 64) + Math.floor(k / 64)];
        expect(Math.abs(w[n * K + k] - got[n * K + k]), `seed ${seed} n ${n} k ${k}`).toBeLessThanOrEqual(amax * halfGap * (1 + 2 ** -20));
      }
    }
    if (N > 1) for (let k = 0; k < Math.min(K, 64); k++) expect(Math.abs(got[k])).toBe(0);
  });

  it.each([
    [1, 33, 100, 'direct'],
    [17, 5, 257, 'direct'],
    [70, 65, 64, 'direct'],
    [1, 33, 100, 'tiled'],
    [17, 5, 257, 'tiled'],
    [70, 65, 130, 'tiled'],
  ] as const)('fused products M=%i N=%i K=%i (%s): forward and input gradient', async (M, N, K, variant) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const { weight, packed } = await quantized(gpu, randn(N * K, rand, 0.2), N, K);
    await checkQ4Products(gpu, weight, dequantizeNf4Ref(packed), M, variant, rand, seed);
  });

  it.each([
    [1, 1],
    [5, 300],
    [33, 257],
    [300, 130],
  ])('double quantization N=%i K=%i: the same codes, absmax in 8 bits within half a step, products on the decoded absmax', async (N, K) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const w = randn(N * K, rand, 0.2);
    const plain = await quantized(gpu, w, N, K);
    const layout = nf4Layout(N, K, { doubleQuant: true });
    const T = N * layout.blocksPerRow;
    expect(layout.absmaxWords).toBe(Math.ceil(T / 4) + Math.ceil(T / 256) + 1);
    const bytes = nf4Bytes(layout);
    const weight: Nf4Weight = { format: 'nf4', layout, qweight: gpu.createBuffer(bytes.qweight, undefined, 'qweight'), absmax: gpu.createBuffer(bytes.absmax, undefined, 'absmax') };
    for (const b of [weight.qweight, weight.absmax]) gpu.fill(b as GPUBuffer, 0xffffffff, 'u32');
    const scratch = poisoned(gpu, T, 'scratch');
    await gpu.run((rec) => quantizeNf4(rec, { w: gpu.upload(w, 'W'), out: weight, scratch }));
    expect(Array.from(await gpu.readU32(weight.qweight)), `seed ${seed}`).toEqual(Array.from(plain.packed.qweight));
    const exact = plain.packed.absmax;
    const dq = doubleQuantAbsmaxRef(await gpu.readU32(weight.absmax), T);
    const mean = exact.reduce((a, b) => a + b, 0) / T;
    expect(Math.abs(dq.mean - mean) / mean, `seed ${seed}`).toBeLessThan(1e-5);
    for (let j = 0; j < dq.scales.length; j++) {
      const group = Array.from(exact.slice(j * 256, (j + 1) * 256));
      expect(dq.scales[j], `seed ${seed} group ${j}`).toBe(Math.fround(Math.max(...group.map((a) => Math.abs(Math.fround(a - dq.mean))))));
    }
    for (let i = 0; i < T; i++) {
      const step = dq.scales[Math.floor(i / 256)] / 127;
      expect(Math.abs(dq.absmax[i] - exact[i]), `seed ${seed} block ${i}`).toBeLessThanOrEqual(step * (0.5 + 1e-4) + 1e-7);
    }
    const decoded: PackedNf4 = { N, K, qweight: plain.packed.qweight, absmax: Float32Array.from(dq.absmax) };
    const out = poisoned(gpu, N * K, 'dequantized');
    await gpu.run((rec) => dequantizeQ4(rec, { weight, out }));
    const got = compare(await gpu.readF32(out), dequantizeNf4Ref(decoded));
    expect(got.rel, `seed ${seed} maxAbs ${got.maxAbs}`).toBeLessThan(1e-6);
    for (const variant of ['direct', 'tiled'] as const) await checkQ4Products(gpu, weight, dequantizeNf4Ref(decoded), 7, variant, rand, seed);
    if (T >= 256) expect(bytes.absmax).toBeLessThan(0.3 * nf4Bytes(nf4Layout(N, K)).absmax);
    expect(() => quantizeNf4(gpu.recorder(), { w: gpu.upload(w, 'W'), out: weight })).toThrow(/needs a scratch buffer/);
  });

  it('rejects short buffers', async () => {
    const gpu = await testGpu();
    const small = gpu.createBuffer(4);
    const weight: Nf4Weight = { format: 'nf4', layout: nf4Layout(4, 64), qweight: small, absmax: small };
    expect(() => quantizeNf4(gpu.recorder(), { w: gpu.createBuffer(4 * 256), out: weight })).toThrow(/qweight needs/);
    expect(() => matmulQ4(gpu.recorder(), { x: gpu.createBuffer(4 * 64), weight, y: gpu.createBuffer(16), M: 1 })).toThrow(/qweight needs/);
  });
});

describe('nf4 in bitsandbytes\' layout', () => {
  // Whole weights [N, K] (parts: rows each, as GPT-2's c_attn splits) covering per-row blocks (K a
  // multiple of 64), flat blocks spanning rows, partial last blocks, and a part whose double-quantization
  // scales start mid-group and cross a 256-block boundary.
  const cases: { N: number; K: number; parts: number[]; codes: 'nf4' | 'fp4'; doubleQuant: boolean }[] = [
    { N: 5, K: 40, parts: [5], codes: 'nf4', doubleQuant: false },
    { N: 7, K: 72, parts: [7], codes: 'fp4', doubleQuant: true },
    { N: 6, K: 128, parts: [6], codes: 'nf4', doubleQuant: true },
    { N: 9, K: 24, parts: [8, 1], codes: 'fp4', doubleQuant: false },
    { N: 520, K: 40, parts: [264, 256], codes: 'nf4', doubleQuant: true },
  ];
  // Chromium: one of each code book, double-quantized (see IN_BROWSER).
  it.each(IN_BROWSER ? [cases[1], cases[4]] : cases)('$N x $K in parts $parts, $codes, double quant $doubleQuant: dequantizes to bitsandbytes\' values, products against float64', async ({ N, K, parts, codes, doubleQuant }) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const w = randn(N * K, rand);
    const stored = bnbQuantize4bitRef(w, { codes, doubleQuant });
    const want = bnbDequantize4bitRef(stored, N * K);
    let first = 0;
    for (const count of parts) {
      const arrays = bitsandbytesToNf4({ weight: stored.weight, absmax: stored.absmax, nestedAbsmax: stored.nestedAbsmax, nestedMap: stored.nestedMap, offset: stored.offset }, { K, first, count, codes });
      const layout = nf4Layout(count, K, { doubleQuant, bitsandbytes: { codes, dqOffset: partPlacement(first, K, doubleQuant).dqOffset } });
      expect(layout.flatBlocks).toBe(K % 64 !== 0);
      const weight: Nf4Weight = { format: 'nf4', layout, qweight: gpu.upload(arrays.qweight, 'qweight'), absmax: gpu.upload(arrays.absmax, 'absmax') };
      const out = poisoned(gpu, count * K, 'dequantized');
      await gpu.run((rec) => dequantizeQ4(rec, { weight, out }));
      const got = await gpu.readF32(out);
      const part = want.subarray(first * K, (first + count) * K);
      const differs = part.findIndex((v, i) => v !== got[i]);
      expect(differs, `seed ${seed} rows ${first}.. value ${differs}: ${got[differs]} vs ${part[differs]}`).toBe(-1);
      // The products read the same scales: checked on the smaller weights (the largest one is there for its scale groups).
      if (count <= 64) for (const variant of ['tiled', 'direct'] as const) await checkQ4Products(gpu, weight, Float64Array.from(part), 19, variant, rand, seed);
      first += count;
    }
  });

  it('is loaded, never written by the quantizer', async () => {
    const gpu = await testGpu();
    const layout = nf4Layout(4, 40, { bitsandbytes: { codes: 'nf4' } });
    const b = gpu.createBuffer(nf4Bytes(layout).total);
    expect(() => quantizeNf4(gpu.recorder(), { w: gpu.createBuffer(4 * 160), out: { format: 'nf4', layout, qweight: b, absmax: b } })).toThrow(/bitsandbytes' layout/);
    expect(() => nf4Layout(4, 36, { bitsandbytes: { codes: 'nf4' } })).toThrow(/multiple of 8/);
  });
});
