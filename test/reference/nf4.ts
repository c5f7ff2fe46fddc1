/**
 * Reference for shaders/nf4.wgsl: an encoder following bitsandbytes' kQuantizeBlockwise for NF4 (f32
 * arithmetic emulated with Math.fround; its decision tree read as "how many thresholds x exceeds") and
 * a decoder of the documented packed format.
 */
export interface PackedNf4 {
  N: number;
  K: number;
  qweight: Uint32Array;
  absmax: Float32Array;
}

/** bitsandbytes' nf4 lookup table. */
export const NF4_CODES_REF = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
  0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
].map(Math.fround);

/** The split points of bitsandbytes' dQuantizeNF4 tree, ascending, as f32. */
export const NF4_THRESHOLDS_REF = [
  -0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544, -0.23460740596055984, -0.13791173323988914, -0.045525018125772476,
  0.03979014977812767, 0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683, 0.5016634166240692, 0.6427869200706482, 0.8614784181118011,
].map(Math.fround);

const BLOCK = 64;

/** The normalized value x = w * (1 / absmax) in f32, and its code. */
export function nf4Normalized(w: number, absmax: number): { x: number; code: number } {
  const x = Math.fround(Math.fround(w) * Math.fround(1 / absmax));
  return { x, code: NF4_THRESHOLDS_REF.filter((t) => x > t).length };
}

export function nf4EncodeRef(w: Float32Array, N: number, K: number): PackedNf4 {
  const kw = Math.ceil(K / 8);
  const nb = Math.ceil(K / BLOCK);
  const qweight = new Uint32Array(N * kw);
  const absmax = new Float32Array(N * nb);
  for (let n = 0; n < N; n++) {
    for (let b = 0; b < nb; b++) {
      let amax = 0;
      for (let k = b * BLOCK; k < Math.min(K, (b + 1) * BLOCK); k++) amax = Math.max(amax, Math.abs(w[n * K + k]));
      absmax[n * nb + b] = amax;
      for (let k = b * BLOCK; k < Math.min(K, (b + 1) * BLOCK); k++) {
        qweight[n * kw + (k >> 3)] |= nf4Normalized(w[n * K + k], amax).code << (4 * (k % 8));
      }
    }
  }
  return { N, K, qweight, absmax };
}

export function nf4Code(p: PackedNf4, n: number, k: number): number {
  return (p.qweight[n * Math.ceil(p.K / 8) + (k >> 3)] >>> (4 * (k % 8))) & 15;
}

/** out (N, K) = code value * absmax, each product rounded to f32 as the shader's. */
export function dequantizeNf4Ref(p: PackedNf4): Float64Array {
  const nb = Math.ceil(p.K / BLOCK);
  const out = new Float64Array(p.N * p.K);
  for (let n = 0; n < p.N; n++) {
    for (let k = 0; k < p.K; k++) out[n * p.K + k] = Math.fround(NF4_CODES_REF[nf4Code(p, n, k)] * p.absmax[n * nb + Math.floor(k / BLOCK)]);
  }
  return out;
}

/**
 * The absmax of T blocks from a double-quantized absmax array (shaders/nf4.wgsl): int8 code / 127 times
 * the 256-block scale, plus the mean, in f64.
 */
export function doubleQuantAbsmaxRef(words: Uint32Array, T: number): { absmax: Float64Array; codes: Int8Array; scales: Float32Array; mean: number } {
  const f32 = new Float32Array(words.buffer, words.byteOffset, words.length);
  const C = Math.ceil(T / 4);
  const S = Math.ceil(T / 256);
  const codes = new Int8Array(words.buffer, words.byteOffset, T);
  const scales = f32.slice(C, C + S);
  const mean = f32[C + S];
  return { absmax: Float64Array.from(codes, (c, i) => (c / 127) * scales[Math.floor(i / 256)] + mean), codes: codes.slice(), scales, mean };
}
