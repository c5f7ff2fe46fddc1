/**
 * Sparse fine-tuning kernels (shaders/sparse.wgsl): the masked weight gradient, scatter and gather.
 * The optimizer for the values is sparseAdamwStep in ./adamw.ts (it also writes the values into W).
 */
import { ShapeError } from '../errors.js';
import { asView, type BufferLike } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { halfConstant, launch1d, requireDims, requireElements, shaderConstant } from './common.js';
import type { WeightFormat } from './matmul.js';

const WG = 256;

/** Checks that a mask is sorted, unique and inside a [rows, cols] matrix; throws ShapeError otherwise. */
export function validateMask(indices: Uint32Array, rows: number, cols: number): void {
  requireDims('mask', { rows, cols });
  const size = rows * cols;
  if (size > 2 ** 32) throw new ShapeError(`mask: a ${rows}x${cols} matrix does not fit u32 flat indices`);
  for (let i = 0; i < indices.length; i++) {
    if (indices[i] >= size) throw new ShapeError(`mask: index ${indices[i]} at ${i} is outside a ${rows}x${cols} matrix`);
    if (i > 0 && indices[i] <= indices[i - 1]) {
      throw new ShapeError(`mask: indices must be strictly increasing (position ${i}: ${indices[i - 1]} then ${indices[i]})`);
    }
  }
}

interface MaskArgs {
  /** Sorted, unique flat indices n * K + k (u32). */
  indices: BufferLike;
  nnz: number;
}

export interface SparseGradArgs extends MaskArgs {
  /** Upstream gradient dY [T, N]. */
  dY: BufferLike;
  /** Layer input X [T, K]: f32, or a view of packed f16 values (mixed precision). */
  x: BufferLike;
  T: number;
  N: number;
  K: number;
  /** out[i] = alpha * sum_t dY[t, n_i] X[t, k_i] (+ out[i] when accumulate). */
  out: BufferLike;
  alpha?: number;
  accumulate?: boolean;
}

export function sparseGrad(rec: CommandRecorder, a: SparseGradArgs): void {
  requireDims('sparseGrad', { nnz: a.nnz, T: a.T, N: a.N, K: a.K });
  if (a.N * a.K > 2 ** 32) throw new ShapeError('sparseGrad: N * K exceeds u32 flat indices');
  requireElements('sparseGrad', 'indices', a.indices, a.nnz);
  requireElements('sparseGrad', 'dY', a.dY, a.T * a.N);
  const x = layerInput('sparseGrad', rec, a.x, a.T * a.K);
  requireElements('sparseGrad', 'out', a.out, a.nnz);
  rec.dispatch({
    shader: 'sparse',
    entryPoint: 'sparse_grad',
    constants: { WG, ACCUMULATE: !!a.accumulate, HALF_X: x.half },
    uniforms: { nnz: a.nnz, T: a.T, N: a.N, K: a.K, alpha: a.alpha ?? 1 },
    storage: { idx: a.indices, dY: a.dY, ...x.bindings, values: a.out },
    workgroups: launch1d(rec.gpu, a.nnz, WG),
    label: `sparse_grad nnz=${a.nnz} T=${a.T}`,
  });
}

/** The layer input's bindings: X (f32), or Xh for a view of packed f16 values (mixed precision). */
function layerInput(kernel: string, rec: CommandRecorder, x: BufferLike, n: number): { half: boolean; bindings: { X: BufferLike; Xh: BufferLike } } {
  const format = asView(x).format;
  if (format && format !== 'f16') throw new ShapeError(`${kernel}: X holds ${format} values; a 16-bit X is f16`);
  requireElements(kernel, 'X', x, format ? Math.ceil(n / 2) : n);
  const unused = rec.gpu.placeholder();
  return { half: !!format, bindings: format ? { X: unused, Xh: x } : { X: x, Xh: unused } };
}

export interface BlockSparseGradArgs extends Omit<SparseGradArgs, 'indices' | 'nnz'> {
  /** Sorted block ids (n / blockSize) * (K / blockSize) + k / blockSize (u32). */
  blocks: BufferLike;
  numBlocks: number;
  /** Side of the square blocks: 16, 32 or 64; it must divide N and K. */
  blockSize: number;
}

/**
 * out[p * bs^2 + r * bs + c] = alpha * sum_t dY[t, n0 + r] X[t, k0 + c] for each selected block p at
 * (n0, k0) (+ out when accumulate): the weight gradient of y = x W^T on whole blocks only.
 */
export function blockSparseGrad(rec: CommandRecorder, a: BlockSparseGradArgs): void {
  const bs = a.blockSize;
  requireDims('blockSparseGrad', { numBlocks: a.numBlocks, T: a.T, N: a.N, K: a.K });
  if (bs % 16 || bs < 16 || bs > shaderConstant('sparse', 'MAX_BS')) throw new ShapeError(`blockSparseGrad: block size ${bs} is not 16, 32 or 64`);
  if (a.N % bs || a.K % bs) throw new ShapeError(`blockSparseGrad: ${bs}x${bs} blocks do not tile a ${a.N}x${a.K} weight`);
  requireElements('blockSparseGrad', 'blocks', a.blocks, a.numBlocks);
  requireElements('blockSparseGrad', 'dY', a.dY, a.T * a.N);
  const x = layerInput('blockSparseGrad', rec, a.x, a.T * a.K);
  requireElements('blockSparseGrad', 'out', a.out, a.numBlocks * bs * bs);
  rec.dispatch({
    shader: 'sparse',
    entryPoint: 'block_grad',
    constants: { BS: bs, ACCUMULATE: !!a.accumulate, HALF_X: x.half },
    uniforms: { nnz: a.numBlocks, T: a.T, N: a.N, K: a.K, alpha: a.alpha ?? 1 },
    storage: { idx: a.blocks, dY: a.dY, ...x.bindings, values: a.out },
    workgroups: launch1d(rec.gpu, a.numBlocks, 1),
    label: `block_grad ${a.numBlocks}x${bs}^2 T=${a.T}`,
  });
}

export interface ScatterArgs extends MaskArgs {
  values: BufferLike;
  weight: BufferLike;
  /** Elements in the dense weight. */
  weightSize: number;
  /** How the weight is stored: f32 (default), or bf16 / f16 packed two per u32 (values are rounded in). */
  weightFormat?: WeightFormat;
  /** weight[idx] += values instead of = (f32 weights only). */
  add?: boolean;
}

/** The weight binding of a sparse kernel: W (f32) or WH (16-bit, packed in pairs), checked for size. */
export function weightBinding(kernel: string, weight: BufferLike, weightSize: number, format: WeightFormat = 'f32'): { W: BufferLike } | { WH: BufferLike } {
  if (format === 'f32') {
    requireElements(kernel, 'weight', weight, weightSize);
    return { W: weight };
  }
  requireElements(kernel, 'weight', weight, Math.ceil(weightSize / 2));
  return { WH: weight };
}

function requireScatterArgs(kernel: string, a: Omit<ScatterArgs, 'add'>): void {
  requireDims(kernel, { nnz: a.nnz, weightSize: a.weightSize });
  requireElements(kernel, 'indices', a.indices, a.nnz);
  requireElements(kernel, 'values', a.values, a.nnz);
}

/** weight[indices[i]] = values[i] (or +=); a 16-bit weight takes each value rounded. */
export function sparseScatter(rec: CommandRecorder, a: ScatterArgs): void {
  requireScatterArgs('sparseScatter', a);
  const format = a.weightFormat ?? 'f32';
  if (a.add && format !== 'f32') throw new ShapeError(`sparseScatter: adding into a ${format} weight is not supported`);
  rec.dispatch({
    shader: 'sparse',
    entryPoint: format === 'f32' ? 'scatter' : 'scatter_half',
    constants: format === 'f32' ? { WG, ADD: !!a.add } : { WG, HALF: halfConstant('sparse', format) },
    uniforms: { nnz: a.nnz, T: 0, N: 0, K: 0, alpha: 0 },
    storage: { idx: a.indices, values: a.values, ...weightBinding('sparseScatter', a.weight, a.weightSize, format) },
    workgroups: launch1d(rec.gpu, a.nnz, WG),
    label: `sparse scatter ${a.nnz}`,
  });
}

/** values[i] = weight[indices[i]] (widened from 16 bits for a 16-bit weight). */
export function sparseGather(rec: CommandRecorder, a: Omit<ScatterArgs, 'add'>): void {
  requireScatterArgs('sparseGather', a);
  const format = a.weightFormat ?? 'f32';
  rec.dispatch({
    shader: 'sparse',
    entryPoint: format === 'f32' ? 'gather' : 'gather_half',
    constants: format === 'f32' ? { WG } : { WG, HALF: halfConstant('sparse', format) },
    uniforms: { nnz: a.nnz, T: 0, N: 0, K: 0, alpha: 0 },
    storage: { idx: a.indices, values: a.values, ...weightBinding('sparseGather', a.weight, a.weightSize, format) },
    workgroups: launch1d(rec.gpu, a.nnz, WG),
    label: `sparse gather ${a.nnz}`,
  });
}
