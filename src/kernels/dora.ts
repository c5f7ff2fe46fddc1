/**
 * DoRA's kernels (shaders/dora.wgsl): the squared row norms ‖W_j‖² of a weight through its own product
 * (identity chunks in, column sums of squares out), the per-pass norm n = ‖W + s B A‖ and column scale
 * m / n from the small products P = A W^T and G = A A^T, and the row rescaling that merges, unmerges and
 * forms the merged delta.
 */
import type { BufferLike } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { launch1d, requireDims, requireElements } from './common.js';

const WG = 256;

function uniforms(u: Partial<Record<'rows' | 'cols' | 'offset' | 'R' | 's', number>>): Record<string, number> {
  return { rows: 0, cols: 0, offset: 0, R: 0, s: 0, ...u };
}

/** x [rows, cols] = rows `offset` to `offset + rows` of the cols x cols identity. */
export function identityChunk(rec: CommandRecorder, { x, rows, cols, offset }: { x: BufferLike; rows: number; cols: number; offset: number }): void {
  requireDims('identityChunk', { rows, cols });
  requireElements('identityChunk', 'x', x, rows * cols);
  rec.dispatch({
    shader: 'dora', entryPoint: 'identity_chunk', constants: { WG },
    uniforms: uniforms({ rows, cols, offset }),
    storage: { x },
    workgroups: launch1d(rec.gpu, rows * cols, WG),
    label: `dora identity ${rows}x${cols}+${offset}`,
  });
}

/** sums[j] += Σ_i x[i, j]² over x [rows, cols]. */
export function columnSumSquares(rec: CommandRecorder, { x, sums, rows, cols }: { x: BufferLike; sums: BufferLike; rows: number; cols: number }): void {
  requireDims('columnSumSquares', { rows, cols });
  requireElements('columnSumSquares', 'x', x, rows * cols);
  requireElements('columnSumSquares', 'sums', sums, cols);
  rec.dispatch({
    shader: 'dora', entryPoint: 'column_sumsq', constants: { WG },
    uniforms: uniforms({ rows, cols }),
    storage: { x, y: sums },
    workgroups: launch1d(rec.gpu, cols, WG),
    label: `dora column sumsq ${rows}x${cols}`,
  });
}

export interface DoraNormArgs {
  /** ‖W_j‖² [N]. */
  weightSquares: BufferLike;
  /** A W^T [R, N]. */
  P: BufferLike;
  /** A A^T [R, R]. */
  G: BufferLike;
  /** B [N, R]. */
  B: BufferLike;
  /** The magnitude m [N] (unread when initializing). */
  magnitude: BufferLike;
  /** Receives n = ‖W + s B A‖ per row [N]. */
  norm: BufferLike;
  /** Receives m / n [N]; null writes only n (initializing m, bound as `norm`). */
  scale: BufferLike | null;
  N: number;
  R: number;
  s: number;
}

/** n_j = ‖W_j + s (B A)_j‖ from the small products, and the column scale m_j / n_j. */
export function doraNorm(rec: CommandRecorder, a: DoraNormArgs): void {
  const { N, R } = a;
  requireDims('doraNorm', { N, R });
  for (const [name, buf, n] of [['weightSquares', a.weightSquares, N], ['P', a.P, R * N], ['G', a.G, R * R], ['B', a.B, N * R], ['norm', a.norm, N]] as const) {
    requireElements('doraNorm', name, buf, n);
  }
  if (a.scale) {
    requireElements('doraNorm', 'magnitude', a.magnitude, N);
    requireElements('doraNorm', 'scale', a.scale, N);
  }
  rec.dispatch({
    shader: 'dora', entryPoint: 'column_norm', constants: { WG, SCALE: !!a.scale },
    uniforms: uniforms({ cols: N, R, s: a.s }),
    storage: { wn2: a.weightSquares, P: a.P, G: a.G, B: a.B, m: a.scale ? a.magnitude : rec.gpu.placeholder(), norm: a.norm, y: a.scale ?? rec.gpu.placeholder('write') },
    workgroups: launch1d(rec.gpu, N, WG),
    label: `dora norm ${N}x${R}`,
  });
}

export interface RowRescaleArgs {
  /** The weight-shaped [rows, cols] buffer rescaled in place. */
  w: BufferLike;
  magnitude: BufferLike;
  /** merge writes each row's norm here; unmerge reads it. */
  norm: BufferLike;
  /** delta: the base weight. */
  base?: BufferLike;
  rows: number;
  cols: number;
}

const MODES = { merge: 0, unmerge: 1, delta: 2, 'merged delta': 3 } as const;

/**
 * merge: w holds W + s B A; each row becomes m_j / ‖w_j‖ w_j, the norm kept in `norm`. unmerge: each
 * row of a merged weight times norm_j / m_j. delta: w holds s B A; each row becomes the merged row
 * minus the base's, m_j / ‖base_j + w_j‖ (base_j + w_j) - base_j. merged delta: the same from a merged
 * base W' (W = norm / m ⊙ W' - s B A): w_j += (1 - norm_j / m_j) W'_j.
 */
export function doraRowRescale(rec: CommandRecorder, mode: keyof typeof MODES, { w, magnitude, norm, base, rows, cols }: RowRescaleArgs): void {
  requireDims('doraRowRescale', { rows, cols });
  requireElements('doraRowRescale', 'w', w, rows * cols);
  requireElements('doraRowRescale', 'magnitude', magnitude, rows);
  requireElements('doraRowRescale', 'norm', norm, rows);
  if (mode === 'delta' || mode === 'merged delta') {
    if (!base) throw new Error('doraRowRescale: the delta needs the base weight');
    requireElements('doraRowRescale', 'base', base, rows * cols);
  }
  rec.dispatch({
    shader: 'dora', entryPoint: 'row_rescale', constants: { WG, MODE: MODES[mode] },
    uniforms: uniforms({ rows, cols }),
    storage: { x: w, m: magnitude, norm, base: base ?? rec.gpu.placeholder() },
    workgroups: launch1d(rec.gpu, rows, 1),
    label: `dora ${mode} ${rows}x${cols}`,
  });
}
