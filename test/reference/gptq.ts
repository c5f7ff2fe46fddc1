/**
 * A GPTQ 4-bit encoder and decoder written from AutoGPTQ's QuantLinear (qlinear_cuda_old: pack and the
 * torch dequantization of forward), independent of src/model/gptq.ts: round-to-nearest codes with
 * AutoGPTQ's per-group scale and zero rule, packed as its files hold them, and decoded as its kernels read
 * them (a v1 file's stored zero - 1, masked to 4 bits, plus 1).
 */
import { f32ToF16 } from '../../src/io/safetensors.js';
import { f16ToNumber } from './int4.js';

export interface GptqTensors {
  K: number;
  N: number;
  G: number;
  /** [K / 8, N] */
  qweight: Int32Array;
  /** [ceil(K / G), N / 8] */
  qzeros: Int32Array;
  /** [ceil(K / G), N], f16 values */
  scales: Float32Array;
  /** [K] */
  gIdx: Int32Array;
  /** checkpoint_format 'gptq_v2': zeros stored as they are, not minus one. */
  v2: boolean;
}

const f16 = (x: number) => f16ToNumber(f32ToF16(new Float32Array([x]))[0]);

/**
 * Encode W [N, K] (out, in). Every group's range includes 0 (AutoGPTQ's xmin <= 0 <= xmax); sym pins the
 * zero at 8. A v1 file stores zero - 1, so a zero of 0 (an all-positive group) reads back as 16, as it
 * does in every GPTQ runtime.
 */
export function encodeGptq(w: ArrayLike<number>, N: number, K: number, G: number, o: { sym: boolean; v2: boolean }): GptqTensors {
  const groups = Math.ceil(K / G);
  const qweight = new Int32Array((K / 8) * N);
  const qzeros = new Int32Array(groups * (N / 8));
  const scales = new Float32Array(groups * N);
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < groups; g++) {
      let lo = 0;
      let hi = 0;
      for (let k = g * G; k < Math.min(K, (g + 1) * G); k++) {
        lo = Math.min(lo, w[n * K + k]);
        hi = Math.max(hi, w[n * K + k]);
      }
      if (o.sym) {
        hi = Math.max(-lo, hi);
        if (lo < 0) lo = -hi;
      }
      if (lo === hi) [lo, hi] = [-1, 1];
      const scale = f16((hi - lo) / 15);
      const zero = o.sym ? 8 : Math.round(-lo / scale);
      scales[g * N + n] = scale;
      const stored = (o.v2 ? zero : zero - 1) & 15;
      qzeros[g * (N / 8) + (n >> 3)] |= stored << (4 * (n & 7));
      for (let k = g * G; k < Math.min(K, (g + 1) * G); k++) {
        const q = Math.min(15, Math.max(0, Math.round(w[n * K + k] / scale) + zero));
        qweight[(k >> 3) * N + n] |= q << (4 * (k & 7));
      }
    }
  }
  const gIdx = Int32Array.from({ length: K }, (_, k) => Math.floor(k / G));
  return { K, N, G, qweight, qzeros, scales, gIdx, v2: o.v2 };
}

/** W [N, K] as GPTQ's kernels compute it from the packed tensors: scale * (q - zero). */
export function dequantizeGptqRef(t: GptqTensors): Float64Array {
  const out = new Float64Array(t.N * t.K);
  for (let n = 0; n < t.N; n++) {
    for (let k = 0; k < t.K; k++) {
      const g = t.gIdx[k];
      const q = (t.qweight[(k >> 3) * t.N + n] >>> (4 * (k & 7))) & 15;
      const stored = (t.qzeros[g * (t.N / 8) + (n >> 3)] >>> (4 * (n & 7))) & 15;
      out[n * t.K + k] = t.scales[g * t.N + n] * (q - (t.v2 ? stored : stored + 1));
    }
  }
  return out;
}
