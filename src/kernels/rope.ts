/** Rotary position embedding in place (shaders/rope.wgsl), forward and backward. */
import { ShapeError } from '../errors.js';
import type { BufferLike } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { launch1d, requireDims, requireElements } from './common.js';

const WG = 256;

/** cos and sin of pos * theta^(-2j/D), interleaved as [maxPositions, D/2, 2], computed in float64. */
export function ropeTable(headDim: number, theta: number, maxPositions: number): Float32Array {
  if (headDim % 2) throw new ShapeError(`rope: head dim ${headDim} must be even`);
  const half = headDim / 2;
  const out = new Float32Array(maxPositions * half * 2);
  for (let pos = 0; pos < maxPositions; pos++) {
    for (let j = 0; j < half; j++) {
      const angle = pos * theta ** (-(2 * j) / headDim);
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
  /** ropeTable(headDim, theta, maxPositions). */
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
