/** Rotary position embedding in place (shaders/rope.wgsl), forward and backward. */
import { ShapeError } from '../errors.js';
import type { BufferLike } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { launch1d, requireDims, requireElements } from './common.js';

const WG = 256;

/**
 * How a checkpoint rescales RoPE's frequencies for a longer context than it was pre-trained on, as
 * transformers' modeling_rope_utils.py computes them (_compute_linear_scaling_rope_parameters,
 * _compute_llama3_parameters, _compute_longrope_parameters). LongRoPE (Phi-3.5, Phi-4-mini) divides each
 * frequency by its own factor, the short ones for sequences within the pre-training context and the long
 * ones beyond it, and scales cos and sin by `attentionFactor`; the others leave that scale at 1.
 */
export type RopeScaling =
  | { type: 'linear'; factor: number }
  /** Dynamic NTK: the base grows once a sequence passes max_position_embeddings, which the engine never runs, so RoPE stays plain. */
  | { type: 'dynamic'; factor: number }
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositions: number }
  | { type: 'longrope'; shortFactor: number[]; longFactor: number[]; originalMaxPositions: number; attentionFactor: number };

/** Which of LongRoPE's factor sets a table uses: 'long' for a batch whose positions reach past the pre-training context. */
export type RopeRange = 'short' | 'long';

/** The inverse frequencies theta^(-2j/D), j < D/2, rescaled as `scaling` says; float64. */
export function ropeInverseFrequencies(headDim: number, theta: number, scaling: RopeScaling | null = null, range: RopeRange = 'short'): Float64Array {
  const inv = Float64Array.from({ length: headDim / 2 }, (_, j) => theta ** (-(2 * j) / headDim));
  if (!scaling || scaling.type === 'dynamic') return inv;
  if (scaling.type === 'linear') return inv.map((f) => f / scaling.factor);
  if (scaling.type === 'longrope') {
    const ext = range === 'long' ? scaling.longFactor : scaling.shortFactor;
    return inv.map((f, j) => f / ext[j]);
  }
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

/**
 * cos and sin of pos * theta^(-2j/D) (rescaled by `scaling`, times LongRoPE's attention factor),
 * interleaved as [maxPositions, D/2, 2], computed in float64. D is the rotated part of a head.
 */
export function ropeTable(rotaryDim: number, theta: number, maxPositions: number, scaling: RopeScaling | null = null, range: RopeRange = 'short'): Float32Array {
  if (rotaryDim % 2) throw new ShapeError(`rope: rotated dims ${rotaryDim} must be even`);
  const half = rotaryDim / 2;
  const inv = ropeInverseFrequencies(rotaryDim, theta, scaling, range);
  const scale = scaling?.type === 'longrope' ? scaling.attentionFactor : 1;
  const out = new Float32Array(maxPositions * half * 2);
  for (let pos = 0; pos < maxPositions; pos++) {
    for (let j = 0; j < half; j++) {
      const angle = pos * inv[j];
      out[(pos * half + j) * 2] = Math.cos(angle) * scale;
      out[(pos * half + j) * 2 + 1] = Math.sin(angle) * scale;
    }
  }
  return out;
}

export interface RopeArgs {
  /** [T, rowStride], rotated in place. */
  x: BufferLike;
  /** u32 [T]: position of each token (restarting at 0 for each packed document). */
  positions: BufferLike;
  /** ropeTable(rotaryDim ?? headDim, theta, maxPositions, scaling). */
  table: BufferLike;
  T: number;
  heads: number;
  headDim: number;
  /** The leading values of each head that rotate (partial rotation, Phi-4-mini); default headDim. */
  rotaryDim?: number;
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
  const D = a.rotaryDim ?? a.headDim;
  requireDims('rope', { T: a.T, heads: a.heads, headDim: a.headDim, rotaryDim: D, maxPositions: a.maxPositions, rowStride, colOffset });
  if (D % 2) throw new ShapeError(`rope: rotated dims ${D} must be even`);
  if (D > a.headDim) throw new ShapeError(`rope: ${D} rotated dims exceed the head dim ${a.headDim}`);
  if (colOffset + a.heads * a.headDim > rowStride) throw new ShapeError('rope: heads run past the end of the row');
  requireElements('rope', 'x', a.x, a.T * rowStride);
  requireElements('rope', 'positions', a.positions, a.T);
  requireElements('rope', 'table', a.table, a.maxPositions * D);
  rec.dispatch({
    shader: 'rope',
    entryPoint: 'rope',
    constants: { WG, BACKWARD: !!a.backward },
    uniforms: { T: a.T, heads: a.heads, D, rowStride, colOffset, maxPos: a.maxPositions, headStride: a.headDim },
    storage: { x: a.x, positions: a.positions, table: a.table },
    workgroups: launch1d(rec.gpu, (a.T * a.heads * D) / 2, WG),
    label: `rope${a.backward ? ' backward' : ''} ${a.T}x${a.heads}x${D}/${a.headDim}`,
  });
}
