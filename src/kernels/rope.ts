/** Rotary position embedding in place (shaders/rope.wgsl), forward and backward. */
import { ShapeError } from '../errors.js';
import type { BufferLike } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { launch1d, requireDims, requireElements } from './common.js';

const WG = 256;

/**
 * How a checkpoint rescales RoPE's frequencies for a longer context than it was pre-trained on, as
 * transformers' modeling_rope_utils.py computes them (_compute_linear_scaling_rope_parameters,
 * _compute_llama3_parameters); both leave the attention scale at 1.
 */
export type RopeScaling =
  | { type: 'linear'; factor: number }
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number };

/** The inverse frequencies theta^(-2j/D), j < D/2, rescaled as `scaling` says; float64. */
export function ropeInverseFrequencies(headDim: number, theta: number, scaling: RopeScaling | null = null): Float64Array {
  const inv = Float64Array.from({ length: headDim / 2 }, (_, j) => theta ** (-(2 * j) / headDim));
  if (!scaling) return inv;
  if (scaling.type === 'linear') return inv.map((f) => f / scaling.factor);
  // Llama 3.1: wavelengths longer than the pre-training context divided by `factor`, those shorter than
  // context / highFreqFactor kept, and a smooth blend in between.
  const { factor, lowFreqFactor: low, highFreqFactor: high, originalMaxPositions: context } = scaling;
  return inv.map((f) => {
    const wavelength = (2 * Math.PI) / f;
    if (wavelength < context / high) return f;
    if (wavelength > context / low) return f / factor;
    const smooth = (context / wavelength - low) / (high - low);
    return (1 - smooth) * (f / factor) + smooth * f;
  });
}

/** cos and sin of pos * theta^(-2j/D) (rescaled by `scaling`), interleaved as [maxPositions, D/2, 2], computed in float64. */
export function ropeTable(headDim: number, theta: number, maxPositions: number, scaling: RopeScaling | null = null): Float32Array {
  if (headDim % 2) throw new ShapeError(`rope: head dim ${headDim} must be even`);
  const half = headDim / 2;
  const inv = ropeInverseFrequencies(headDim, theta, scaling);
  const out = new Float32Array(maxPositions * half * 2);
  for (let pos = 0; pos < maxPositions; pos++) {
    for (let j = 0; j < half; j++) {
      const angle = pos * inv[j];
      out[(pos * half + j) * 2] = Math.cos(angle);
      out[(pos * half + j) * 2 + 1] = Math.sin(angle);
    }
  }
  return out;
}

export interface RopeArgs {
  /** [T, rowStride], rotated in place. */
  x: BufferLike;
  /** u32 [T]: position of each token (restarting at 0 for each packed document). */
  positions: BufferLike;
  /** ropeTable(headDim, theta, maxPositions, scaling). */
  table: BufferLike;
  T: number;
  heads: number;
  headDim: number;
  maxPositions: number;
  /** Floats per row of x; default heads * headDim. */
  rowStride?: number;
  /** Column where the first head starts; default 0. */
  colOffset?: number;
  /** Apply the inverse rotation: the gradient with respect to the input. */
  backward?: boolean;
}

export function rope(rec: CommandRecorder, a: RopeArgs): void {
  const rowStride = a.rowStride ?? a.heads * a.headDim;
  const colOffset = a.colOffset ?? 0;
  requireDims('rope', { T: a.T, heads: a.heads, headDim: a.headDim, maxPositions: a.maxPositions, rowStride, colOffset });
  if (a.headDim % 2) throw new ShapeError(`rope: head dim ${a.headDim} must be even`);
  if (colOffset + a.heads * a.headDim > rowStride) throw new ShapeError('rope: heads run past the end of the row');
  requireElements('rope', 'x', a.x, a.T * rowStride);
  requireElements('rope', 'positions', a.positions, a.T);
  requireElements('rope', 'table', a.table, a.maxPositions * a.headDim);
  rec.dispatch({
    shader: 'rope',
    entryPoint: 'rope',
    constants: { WG, BACKWARD: !!a.backward },
    uniforms: { T: a.T, heads: a.heads, D: a.headDim, rowStride, colOffset, maxPos: a.maxPositions },
    storage: { x: a.x, positions: a.positions, table: a.table },
    workgroups: launch1d(rec.gpu, (a.T * a.heads * a.headDim) / 2, WG),
    label: `rope${a.backward ? ' backward' : ''} ${a.T}x${a.heads}x${a.headDim}`,
  });
}
