/**
 * Row reductions (shaders/reduce.wgsl): out[r] = sum | max | sum of squares over row r of x [rows, cols];
 * and column sums, out[c] (+)= alpha * the sum over the rows of column c.
 */
import type { BufferLike } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { launch1d, requireDims, requireElements, shaderConstant } from './common.js';

export type ReduceOp = 'sum' | 'max' | 'sumsq';

export interface ReduceRowsArgs {
  x: BufferLike;
  out: BufferLike;
  rows: number;
  cols: number;
  op: ReduceOp;
}

export function reduceRows(rec: CommandRecorder, { x, out, rows, cols, op }: ReduceRowsArgs): void {
  requireDims('reduceRows', { rows, cols });
  requireElements('reduceRows', 'x', x, rows * cols);
  requireElements('reduceRows', 'out', out, rows);
  rec.dispatch({
    shader: 'reduce',
    entryPoint: 'reduce_rows',
    constants: { OP: shaderConstant('reduce', `OP_${op.toUpperCase()}`), WG: rec.gpu.tuning.reductionWorkgroupSize },
    uniforms: { rows, cols, alpha: 1 },
    storage: { x, out },
    // one workgroup per row, folded like a 1-D launch of `rows` workgroups of size 1
    workgroups: launch1d(rec.gpu, rows, 1),
    label: `reduce_rows ${op} ${rows}x${cols}`,
  });
}

export interface SumColumnsArgs {
  x: BufferLike;
  /** [cols], overwritten, or with `accumulate` added to. */
  out: BufferLike;
  rows: number;
  cols: number;
  /** Default 1. */
  alpha?: number;
  accumulate?: boolean;
}

/** out[c] (+)= alpha * sum over r of x[r, c]: a bias's gradient from its output's, dy^T 1. */
export function sumColumns(rec: CommandRecorder, { x, out, rows, cols, alpha = 1, accumulate = false }: SumColumnsArgs): void {
  requireDims('sumColumns', { rows, cols });
  requireElements('sumColumns', 'x', x, rows * cols);
  requireElements('sumColumns', 'out', out, cols);
  rec.dispatch({
    shader: 'reduce',
    entryPoint: 'sum_columns',
    constants: { ACCUMULATE: accumulate },
    uniforms: { rows, cols, alpha },
    storage: { x, out },
    workgroups: [Math.ceil(cols / shaderConstant('reduce', 'COLUMNS_WG'))],
    label: `sum_columns ${rows}x${cols}`,
  });
}
