/**
 * Reference for bitsandbytes' 4-bit storage, written from its default (pure torch) backend,
 * bitsandbytes/backends/default/ops.py, and functional.py: quantize_4bit blocks the flattened weight in
 * runs of 64 (the last block may be partial), scales each by 1 / absmax, picks the code by the midpoints
 * of the sorted code table (torch.bucketize: the number of midpoints strictly below x) and packs two
 * codes per byte, the first in the high nibble. Double quantization (compress_statistics) subtracts the
 * absmax mean (nested_offset) and quantizes the result blockwise in runs of 256 with the 8-bit dynamic
 * map. f32 arithmetic is emulated with Math.fround.
 */
import { FP4_CODES, NF4_CODES, type Nf4Codes } from '../../src/kernels/nf4.js';

export interface Bnb4bit {
  weight: Uint8Array;
  absmax: Float32Array | Uint8Array;
  quantMap: Float32Array;
  nestedAbsmax?: Float32Array;
  nestedMap?: Float32Array;
  offset: number;
}

const f = Math.fround;

/** create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8), sorted, as f32. */
export function dynamicMapRef(): Float32Array {
  const data: number[] = [];
  for (let i = 0; i < 7; i++) {
    const items = 2 ** i + 1;
    const bounds = Array.from({ length: items }, (_, j) => f(0.1 + (0.9 * j) / (items - 1)));
    for (let j = 0; j + 1 < items; j++) {
      const mean = f((bounds[j] + bounds[j + 1]) / 2);
      const v = f(10 ** (-6 + i) * mean);
      data.push(v, -v);
    }
  }
  data.push(0, 1);
  return new Float32Array(data.sort((a, b) => a - b));
}

/** Blockwise quantization to the nearest entry of a sorted code table: codes and f32 absmax per block. */
function blockwise(a: Float32Array, code: readonly number[], order: number[], block: number): { q: Uint8Array; absmax: Float32Array } {
  const sorted = order.map((i) => code[i]);
  const mids = sorted.slice(1).map((c, i) => f((sorted[i] + c) / 2));
  const blocks = Math.ceil(a.length / block);
  const absmax = new Float32Array(blocks);
  const q = new Uint8Array(a.length);
  for (let b = 0; b < blocks; b++) {
    const end = Math.min(a.length, (b + 1) * block);
    let m = 0;
    for (let i = b * block; i < end; i++) m = Math.max(m, Math.abs(a[i]));
    absmax[b] = m;
    const scale = Math.max(m, 1e-38);
    const inv = f(1 / scale);
    for (let i = b * block; i < end; i++) {
      // Full blocks multiply by the reciprocal, the partial last one divides (as ops.py does).
      const x = Math.min(1, Math.max(-1, end - b * block === block ? f(a[i] * inv) : f(a[i] / scale)));
      q[i] = order[mids.filter((t) => t < x).length];
    }
  }
  return { q, absmax };
}

/** quantize_4bit of an f32 weight (any shape, flattened), NF4 or FP4, optionally double-quantized. */
export function bnbQuantize4bitRef(w: Float32Array, o: { codes: Nf4Codes; doubleQuant: boolean }): Bnb4bit {
  const table = o.codes === 'nf4' ? NF4_CODES : FP4_CODES;
  const order = table.map((_, i) => i).sort((i, j) => table[i] - table[j]);
  const { q, absmax } = blockwise(w, table, order, 64);
  const weight = new Uint8Array(Math.ceil(w.length / 2));
  for (let i = 0; i < w.length; i++) weight[i >> 1] |= i & 1 ? q[i] : q[i] << 4;
  const quantMap = new Float32Array(table);
  if (!o.doubleQuant) return { weight, absmax, quantMap, offset: 0 };
  let sum = 0;
  for (const a of absmax) sum += a;
  const offset = f(sum / absmax.length);
  const centred = absmax.map((a) => f(a - offset));
  const map = dynamicMapRef();
  const nested = blockwise(centred, [...map], [...map.keys()], 256);
  return { weight, absmax: nested.q, quantMap, nestedAbsmax: nested.absmax, nestedMap: map, offset };
}

/** dequantize_4bit: code * absmax per flat block, the absmax first read back through the nested map. */
export function bnbDequantize4bitRef(s: Bnb4bit, count: number): Float32Array {
  const absmax = s.absmax instanceof Uint8Array
    ? Float32Array.from(s.absmax, (c, b) => f(f(s.nestedMap![c] * s.nestedAbsmax![Math.floor(b / 256)]) + s.offset))
    : s.absmax;
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    const byte = s.weight[i >> 1];
    out[i] = f(s.quantMap[i & 1 ? byte & 15 : byte >> 4] * absmax[Math.floor(i / 64)]);
  }
  return out;
}
