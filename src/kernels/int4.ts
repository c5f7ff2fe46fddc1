/**
 * Group-wise int4 weights (shaders/int4.wgsl): the layout and quantization. The packed format is
 * documented at the top of the shader; dequantization and the products are the 4-bit family's
 * (q4-matmul.ts).
 */
import { ShapeError } from '../errors.js';
import type { BufferLike } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { launch1d, requireDims, requireElements } from './common.js';

export const INT4_GROUP_SIZES = [32, 64, 128] as const;
export type Int4GroupSize = (typeof INT4_GROUP_SIZES)[number];
const WG = 64;

/** Word counts of the packed arrays for a weight of shape [N, K]. */
export interface Int4Layout {
  N: number;
  K: number;
  groupSize: Int4GroupSize;
  /** u32 words of packed values per row: ceil(K / 8). */
  wordsPerRow: number;
  /** Groups per row: ceil(K / groupSize). */
  groupsPerRow: number;
  /** u32 words of f16 scale pairs per row: ceil(groups / 2). */
  scaleWordsPerRow: number;
  /** u32 words of 4-bit zero points per row: ceil(groups / 8). */
  zeroWordsPerRow: number;
  /** Added to every stored zero point: 0 for weights quantized here, 1 for GPTQ's (zero - 1) storage. */
  zeroBias: Int4ZeroBias;
}

export type Int4ZeroBias = 0 | 1;

export function int4Layout(N: number, K: number, groupSize: number, zeroBias: Int4ZeroBias = 0): Int4Layout {
  requireDims('int4', { N, K });
  if (!INT4_GROUP_SIZES.includes(groupSize as Int4GroupSize)) {
    throw new ShapeError(`int4: group size must be one of ${INT4_GROUP_SIZES.join(', ')}, got ${groupSize}`);
  }
  const groupsPerRow = Math.ceil(K / groupSize);
  return {
    N,
    K,
    groupSize: groupSize as Int4GroupSize,
    wordsPerRow: Math.ceil(K / 8),
    groupsPerRow,
    scaleWordsPerRow: Math.ceil(groupsPerRow / 2),
    zeroWordsPerRow: Math.ceil(groupsPerRow / 8),
    zeroBias,
  };
}

/** Bytes of the three packed arrays. */
export function int4Bytes(l: Int4Layout): { qweight: number; scales: number; zeros: number; total: number } {
  const qweight = l.N * l.wordsPerRow * 4;
  const scales = l.N * l.scaleWordsPerRow * 4;
  const zeros = l.N * l.zeroWordsPerRow * 4;
  return { qweight, scales, zeros, total: qweight + scales + zeros };
}

export interface Int4Weight {
  format: 'int4';
  layout: Int4Layout;
  qweight: BufferLike;
  scales: BufferLike;
  zeros: BufferLike;
}

/** The packed arrays by their shader names, each checked to hold its layout's words. */
export function int4Arrays(kernel: string, w: Int4Weight): Record<string, BufferLike> {
  const l = w.layout;
  requireElements(kernel, 'qweight', w.qweight, l.N * l.wordsPerRow);
  requireElements(kernel, 'scales', w.scales, l.N * l.scaleWordsPerRow);
  requireElements(kernel, 'zeros', w.zeros, l.N * l.zeroWordsPerRow);
  return { qweight: w.qweight, scales: w.scales, zeros: w.zeros };
}

/** Quantize an f32 weight [N, K] into `out`'s packed arrays. */
export function quantizeInt4(rec: CommandRecorder, { w, out }: { w: BufferLike; out: Int4Weight }): void {
  const l = out.layout;
  if (l.zeroBias !== 0) throw new ShapeError('quantizeInt4: weights quantized here store zero points with no bias');
  requireElements('quantizeInt4', 'W', w, l.N * l.K);
  const arrays = int4Arrays('quantizeInt4', out);
  rec.dispatch({
    shader: 'int4',
    entryPoint: 'quantize',
    constants: { WG },
    uniforms: { M: 0, N: l.N, K: l.K, G: l.groupSize, ZB: 0 },
    storage: { W: w, ...arrays },
    workgroups: launch1d(rec.gpu, l.N * l.zeroWordsPerRow, WG),
    label: `int4 quantize ${l.N}x${l.K}/g${l.groupSize}`,
  });
}
