/**
 * A per-column scale on a linear layer's output, y = s ⊙ z + b with z = x W^T (+ a method's term), and
 * its backward (shaders/column_scale.wgsl): the hook DoRA-style methods rescale the base output with.
 */
import type { BufferLike } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { launch1d, requireDims, requireElements } from './common.js';

const WG = 256;

export interface ColumnScaleForwardArgs {
  /** [rows, cols]: z on entry, s ⊙ z (+ bias) on return. */
  y: BufferLike;
  scale: BufferLike;
  bias?: BufferLike;
  /** Receives z, for the backward pass. */
  saved?: BufferLike;
  rows: number;
  cols: number;
}

export function columnScaleForward(rec: CommandRecorder, { y, scale, bias, saved, rows, cols }: ColumnScaleForwardArgs): void {
  requireDims('columnScaleForward', { rows, cols });
  requireElements('columnScaleForward', 'y', y, rows * cols);
  requireElements('columnScaleForward', 'scale', scale, cols);
  if (bias) requireElements('columnScaleForward', 'bias', bias, cols);
  if (saved) requireElements('columnScaleForward', 'saved', saved, rows * cols);
  const unused = rec.gpu.placeholder();
  rec.dispatch({
    shader: 'column_scale',
    entryPoint: 'column_scale_forward',
    constants: { WG, BIAS: !!bias, SAVE: !!saved },
    uniforms: { rows, cols },
    storage: { y, scale, bias: bias ?? unused, saved: saved ?? rec.gpu.placeholder('write') },
    workgroups: launch1d(rec.gpu, rows * cols, WG),
    label: `column_scale_forward ${rows}x${cols}`,
  });
}

export interface ColumnScaleBackwardArgs {
  dy: BufferLike;
  scale: BufferLike;
  /** Receives dy ⊙ s: the gradient of the unscaled output. */
  dz: BufferLike;
  /** With z (the forward's saved output): ds += Σ_rows dy ⊙ z, divided by `divisor` per column when given. */
  grad?: { z: BufferLike; ds: BufferLike; divisor?: BufferLike };
  rows: number;
  cols: number;
}

export function columnScaleBackward(rec: CommandRecorder, { dy, scale, dz, grad, rows, cols }: ColumnScaleBackwardArgs): void {
  requireDims('columnScaleBackward', { rows, cols });
  requireElements('columnScaleBackward', 'dy', dy, rows * cols);
  requireElements('columnScaleBackward', 'scale', scale, cols);
  requireElements('columnScaleBackward', 'dz', dz, rows * cols);
  if (grad) {
    requireElements('columnScaleBackward', 'grad.z', grad.z, rows * cols);
    requireElements('columnScaleBackward', 'grad.ds', grad.ds, cols);
    if (grad.divisor) requireElements('columnScaleBackward', 'grad.divisor', grad.divisor, cols);
  }
  const unused = rec.gpu.placeholder();
  rec.dispatch({
    shader: 'column_scale',
    entryPoint: 'column_scale_backward',
    constants: { WG, GRAD: !!grad, DIVIDE: !!grad?.divisor },
    uniforms: { rows, cols },
    storage: { dy, scale, z: grad?.z ?? unused, dz, ds: grad?.ds ?? rec.gpu.placeholder('write'), divisor: grad?.divisor ?? unused },
    workgroups: launch1d(rec.gpu, cols, WG),
    label: `column_scale_backward ${rows}x${cols}`,
  });
}
