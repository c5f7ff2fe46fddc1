/** RMSNorm and LayerNorm forward and backward (shaders/norm.wgsl). */
import { asView, type BufferLike } from '../gpu/buffers.js';
import { ShapeError } from '../errors.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { launch1d, requireDims, requireElements, shaderConstant } from './common.js';

export type NormKind = 'rmsnorm' | 'layernorm';

interface NormShape {
  kind: NormKind;
  rows: number;
  cols: number;
  eps: number;
  /** The scale is weight + offset: 1 for Gemma's RMSNorm, x * rstd * (1 + w); default 0. */
  weightOffset?: number;
}

function check(kernel: string, s: NormShape, views: Record<string, [BufferLike | undefined, number]>): void {
  requireDims(kernel, { rows: s.rows, cols: s.cols });
  for (const [name, [b, n]] of Object.entries(views)) if (b) requireElements(kernel, name, b, n);
}

const uniforms = (s: NormShape) => ({ rows: s.rows, cols: s.cols, eps: s.eps, offset: s.weightOffset ?? 0 });

export interface NormForwardArgs extends NormShape {
  x: BufferLike;
  weight: BufferLike;
  /** LayerNorm only. */
  bias?: BufferLike;
  /** The normalized rows: f32, or a view of packed f16 values (format 'f16', an even cols) that takes them rounded. */
  y: BufferLike;
  /** [rows, 2]: mean and rstd per row, saved for the backward pass. */
  stats: BufferLike;
}

export function normForward(rec: CommandRecorder, a: NormForwardArgs): void {
  const ln = a.kind === 'layernorm';
  // A y view of packed f16 values (mixed precision) takes the normalized rows rounded to f16.
  const half = asView(a.y).format;
  if (half && (half !== 'f16' || a.cols % 2 !== 0)) throw new ShapeError(`normForward: a 16-bit output is f16 with an even row length, got ${half} rows of ${a.cols}`);
  check('normForward', a, { x: [a.x, a.rows * a.cols], weight: [a.weight, a.cols], bias: [a.bias, a.cols], y: [a.y, half ? (a.rows * a.cols) / 2 : a.rows * a.cols], stats: [a.stats, 2 * a.rows] });
  if (ln && !a.bias) throw new TypeError('normForward: layernorm needs a bias');
  rec.dispatch({
    shader: 'norm',
    entryPoint: 'norm_forward',
    constants: { WG: rec.gpu.tuning.reductionWorkgroupSize, LAYERNORM: ln, HALF_OUT: !!half },
    uniforms: uniforms(a),
    // `b` and `db` are statically used even when LAYERNORM is off, so RMSNorm binds the placeholder.
    storage: { x: a.x, w: a.weight, b: ln ? a.bias! : rec.gpu.placeholder(), y: half ? rec.gpu.placeholder('write') : a.y, yh: half ? a.y : rec.gpu.placeholder('write'), stats: a.stats },
    workgroups: launch1d(rec.gpu, a.rows, 1),
    label: `${a.kind} forward ${a.rows}x${a.cols}`,
  });
}

export interface NormBackwardArgs extends NormShape {
  x: BufferLike;
  weight: BufferLike;
  stats: BufferLike;
  dy: BufferLike;
  /** Overwritten, or with `accumulate` added to. */
  dx: BufferLike;
  /** Add the input gradient to dx (a residual stream's gradient) rather than overwrite it. Default false. */
  accumulate?: boolean;
  /** Accumulated (+=); omit when the norm weight is frozen. */
  dWeight?: BufferLike;
  /** LayerNorm: accumulated (+=) with dWeight. */
  dBias?: BufferLike;
}

export function normBackward(rec: CommandRecorder, a: NormBackwardArgs): void {
  const ln = a.kind === 'layernorm';
  const n = a.rows * a.cols;
  check('normBackward', a, { x: [a.x, n], weight: [a.weight, a.cols], stats: [a.stats, 2 * a.rows], dy: [a.dy, n], dx: [a.dx, n], dWeight: [a.dWeight, a.cols], dBias: [a.dBias, a.cols] });
  const constants = { WG: rec.gpu.tuning.reductionWorkgroupSize, LAYERNORM: ln, ACCUMULATE: a.accumulate ?? false };
  rec.dispatch({
    shader: 'norm',
    entryPoint: 'norm_backward',
    constants,
    uniforms: uniforms(a),
    storage: { x: a.x, w: a.weight, stats: a.stats, dy: a.dy, dx: a.dx },
    workgroups: launch1d(rec.gpu, a.rows, 1),
    label: `${a.kind} backward ${a.rows}x${a.cols}`,
  });
  if (!a.dWeight) return;
  if (ln && !a.dBias) throw new TypeError('normBackward: layernorm weight gradients need dBias too');
  rec.dispatch({
    shader: 'norm',
    entryPoint: 'norm_backward_weight',
    constants: { LAYERNORM: ln },
    uniforms: uniforms(a),
    storage: { x: a.x, stats: a.stats, dy: a.dy, dw: a.dWeight, db: ln ? a.dBias! : rec.gpu.placeholder('write') },
    workgroups: [Math.ceil(a.cols / shaderConstant('norm', 'WEIGHT_COLS'))],
    label: `${a.kind} backward weight ${a.rows}x${a.cols}`,
  });
}
