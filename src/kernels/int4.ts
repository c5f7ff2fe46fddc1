/**
 * Group-wise int4 weights (shaders/int4.wgsl): quantize, dequantize, and x @ dequant(W)^T without
 * materializing the f32 weight. The packed format is documented at the top of the shader.
 */
import { ShapeError } from '../errors.js';
import type { BufferLike } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { launch1d, requireDims, requireElements, shaderConstant } from './common.js';
import type { MatmulVariant } from './matmul.js';

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
}

export function int4Layout(N: number, K: number, groupSize: number): Int4Layout {
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
  layout: Int4Layout;
  qweight: BufferLike;
  scales: BufferLike;
  zeros: BufferLike;
}

function requirePacked(kernel: string, w: Int4Weight): void {
  const l = w.layout;
  requireElements(kernel, 'qweight', w.qweight, l.N * l.wordsPerRow);
  requireElements(kernel, 'scales', w.scales, l.N * l.scaleWordsPerRow);
  requireElements(kernel, 'zeros', w.zeros, l.N * l.zeroWordsPerRow);
}

function params(M: number, l: Int4Layout) {
  return { M, N: l.N, K: l.K, G: l.groupSize };
}

/** Quantize an f32 weight [N, K] into `out`'s packed arrays. */
export function quantizeInt4(rec: CommandRecorder, { w, out }: { w: BufferLike; out: Int4Weight }): void {
  const l = out.layout;
  requireElements('quantizeInt4', 'W', w, l.N * l.K);
  requirePacked('quantizeInt4', out);
  rec.dispatch({
    shader: 'int4',
    entryPoint: 'quantize',
    constants: { WG },
    uniforms: params(0, l),
    storage: { W: w, qweight: out.qweight, scales: out.scales, zeros: out.zeros },
    workgroups: launch1d(rec.gpu, l.N * l.zeroWordsPerRow, WG),
    label: `int4 quantize ${l.N}x${l.K}/g${l.groupSize}`,
  });
}

/** Write dequant(W) as f32 [N, K] into `out`. */
export function dequantizeInt4(rec: CommandRecorder, { weight, out }: { weight: Int4Weight; out: BufferLike }): void {
  const l = weight.layout;
  requirePacked('dequantizeInt4', weight);
  requireElements('dequantizeInt4', 'out', out, l.N * l.K);
  rec.dispatch({
    shader: 'int4',
    entryPoint: 'dequantize',
    constants: { WG },
    uniforms: params(0, l),
    storage: { qweight: weight.qweight, scales: weight.scales, zeros: weight.zeros, Y: out },
    workgroups: launch1d(rec.gpu, l.N * l.wordsPerRow, WG),
    label: `int4 dequantize ${l.N}x${l.K}`,
  });
}

/** y [M, N] = x [M, K] @ dequant(W)^T. */
export function matmulInt4(
  rec: CommandRecorder,
  { x, weight, y, M, variant }: { x: BufferLike; weight: Int4Weight; y: BufferLike; M: number; variant?: MatmulVariant },
): void {
  const l = weight.layout;
  requireDims('matmulInt4', { M });
  requirePacked('matmulInt4', weight);
  requireElements('matmulInt4', 'x', x, M * l.K);
  requireElements('matmulInt4', 'y', y, M * l.N);
  // Tiles of BM rows waste most of their work when M is small (decoding), so small M goes direct.
  const v = variant ?? (rec.gpu.tuning.matmulVariant === 'direct' || M < 16 ? 'direct' : 'tiled');
  const rows = M < 4 ? 1 : 4;
  rec.dispatch({
    shader: 'int4',
    entryPoint: v === 'tiled' ? 'matmul_int4' : 'matmul_int4_direct',
    constants: v === 'tiled' ? {} : { ROWS: rows },
    uniforms: params(M, l),
    storage: { qweight: weight.qweight, scales: weight.scales, zeros: weight.zeros, Y: y, X: x },
    workgroups:
      v === 'tiled'
        ? [Math.ceil(l.N / shaderConstant('int4', 'BN')), Math.ceil(M / shaderConstant('int4', 'BM'))]
        : [Math.ceil(l.N / (4 * shaderConstant('int4', 'DX'))), Math.ceil(M / (rows * shaderConstant('int4', 'DY')))],
    label: `matmul_int4 ${v} ${M}x${l.N}x${l.K}`,
  });
}
