/** float64 reference for shaders/int4.wgsl: decodes the documented packed format byte for byte. */
export interface PackedInt4 {
  N: number;
  K: number;
  groupSize: number;
  qweight: Uint32Array;
  scales: Uint32Array;
  zeros: Uint32Array;
  /** Added to each stored zero point (GPTQ stores zero - 1); default 0. */
  zeroBias?: number;
}

/** IEEE binary16 bits to a number. */
export function f16ToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

export function int4Scale(p: PackedInt4, n: number, g: number): number {
  const groups = Math.ceil(p.K / p.groupSize);
  const word = p.scales[n * Math.ceil(groups / 2) + Math.floor(g / 2)];
  return f16ToNumber(g % 2 === 0 ? word & 0xffff : word >>> 16);
}

export function int4Zero(p: PackedInt4, n: number, g: number): number {
  const groups = Math.ceil(p.K / p.groupSize);
  return ((p.zeros[n * Math.ceil(groups / 8) + Math.floor(g / 8)] >>> (4 * (g % 8))) & 15) + (p.zeroBias ?? 0);
}

export function int4Code(p: PackedInt4, n: number, k: number): number {
  return (p.qweight[n * Math.ceil(p.K / 8) + Math.floor(k / 8)] >>> (4 * (k % 8))) & 15;
}

// out (N, K) = (q - (zero + zeroBias)) * scale
export function dequantizeInt4Ref(p: PackedInt4): Float64Array {
  const out = new Float64Array(p.N * p.K);
  for (let n = 0; n < p.N; n++) {
    for (let k = 0; k < p.K; k++) {
      const g = Math.floor(k / p.groupSize);
      out[n * p.K + k] = (int4Code(p, n, k) - int4Zero(p, n, g)) * int4Scale(p, n, g);
    }
  }
  return out;
}
