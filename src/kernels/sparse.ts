/**
 * Sparse fine-tuning kernels (shaders/sparse.wgsl): the masked weight gradient, scatter and gather.
 * The optimizer for the values is sparseAdamwStep in ./adamw.ts (it also writes the values into W).
 */
import { ShapeError } from '../errors.js';
import type { BufferLike } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { launch1d, requireDims, requireElements, shaderConstant } from './common.js';

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
  /** Layer input X [T, K]. */
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
  requireElements('sparseGrad', 'X', a.x, a.T * a.K);
  requireElements('sparseGrad', 'out', a.out, a.nnz);
  rec.dispatch({
    shader: 'sparse',
    entryPoint: 'sparse_grad',
    constants: { WG, ACCUMULATE: !!a.accumulate },
    uniforms: { nnz: a.nnz, T: a.T, N: a.N, K: a.K, alpha: a.alpha ?? 1 },
    storage: { idx: a.indices, dY: a.dY, X: a.x, values: a.out },
    workgroups: launch1d(rec.gpu, a.nnz, WG),
    label: `sparse_grad nnz=${a.nnz} T=${a.T}`,
  });
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
  requireElements('blockSparseGrad', 'X', a.x, a.T * a.K);
  requireElements('blockSparseGrad', 'out', a.out, a.numBlocks * bs * bs);
  rec.dispatch({
    shader: 'sparse',
    entryPoint: 'block_grad',
    constants: { BS: bs, ACCUMULATE: !!a.accumulate },
    uniforms: { nnz: a.numBlocks, T: a.T, N: a.N, K: a.K, alpha: a.alpha ?? 1 },
    storage: { idx: a.blocks, dY: a.dY, X: a.x, values: a.out },
    workgroups: launch1d(rec.gpu, a.numBlocks, 1),
    label: `block_grad ${a.numBlocks}x${bs}^2 T=${a.T}`,
  });
}

export interface ScatterArgs extends MaskArgs {
  values: BufferLike;
  weight: BufferLike;
  /** Elements in the dense weight. */
  weightSize: number;
  /** weight[idx] += values instead of =. */
  add?: boolean;
}

function requireScatterArgs(kernel: string, a: Omit<ScatterArgs, 'add'>): void {
  requireDims(kernel, { nnz: a.nnz, weightSize: a.weightSize });
  requireElements(kernel, 'indices', a.indices, a.nnz);
  requireElements(kernel, 'values', a.values, a.nnz);
  requireElements(kernel, 'weight', a.weight, a.weightSize);
}

/** weight[indices[i]] = values[i] (or +=). */
export function sparseScatter(rec: CommandRecorder, a: ScatterArgs): void {
  requireScatterArgs('sparseScatter', a);
  rec.dispatch({
    shader: 'sparse',
    entryPoint: 'scatter',
    constants: { WG, ADD: !!a.add },
    uniforms: { nnz: a.nnz, T: 0, N: 0, K: 0, alpha: 0 },
    storage: { idx: a.indices, values: a.values, W: a.weight },
    workgroups: launch1d(rec.gpu, a.nnz, WG),
    label: `sparse scatter ${a.nnz}`,
  });
}

/** values[i] = weight[indices[i]]. */
export function sparseGather(rec: CommandRecorder, a: Omit<ScatterArgs, 'add'>): void {
  requireScatterArgs('sparseGather', a);
  rec.dispatch({
    shader: 'sparse',
    entryPoint: 'gather',
    constants: { WG },
    uniforms: { nnz: a.nnz, T: 0, N: 0, K: 0, alpha: 0 },
    storage: { idx: a.indices, values: a.values, W: a.weight },
    workgroups: launch1d(rec.gpu, a.nnz, WG),
    label: `sparse gather ${a.nnz}`,
  });
}
