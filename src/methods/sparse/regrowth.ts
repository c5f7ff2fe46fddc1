/**
 * Drop-and-regrow for sparse fine-tuning, after SpIEL (Ansell et al., "Scaling Sparse Fine-Tuning to
 * Large Language Models", 2024): every `every` optimizer steps, each module drops the `fraction` of its
 * trained entries whose change from the base is smallest, restoring their base values, and grows as many
 * new ones where the magnitude of the full weight gradient of that step's last micro-batch is largest
 * (SpIEL-AG's growth criterion on one batch); the count stays. Kept entries keep their values, base
 * values and AdamW moments, re-sorted into the new index order; grown ones start at the base value with
 * zero moments. The forward pass stays the base model's.
 *
 * The gradient is read back after the step that computes it, so the new mask takes effect from the next
 * step (a caller that awaits each step's loss always gets it then). Computing it costs one dense [out,
 * in] product per module in that step and, for as long as the readback takes, f32 room for every
 * targeted weight: the memory full fine-tuning's gradients take.
 */
import { ShapeError } from '../../errors.js';
import type { CommandRecorder } from '../../gpu/recorder.js';
import { sparseGather, sparseScatter } from '../../kernels/sparse.js';
import { topK } from './budget.js';

export interface RegrowthOptions {
  /** Optimizer steps between regrowths (> 0). */
  every: number;
  /** Fraction of each module's entries swapped at each regrowth, in (0, 0.5]. Default 0.1. */
  fraction?: number;
}

export const DEFAULT_REGROW_FRACTION = 0.1;

/** Valid settings, on an element mask (blocks are refused: a swap moves single weights). */
export function checkRegrowth(o: RegrowthOptions, granularity: 'element' | number = 'element'): void {
  if (granularity !== 'element') throw new ShapeError(`drop-and-regrow swaps single weights; this mask has ${granularity}x${granularity} blocks`);
  if (!Number.isInteger(o.every) || o.every < 1) throw new ShapeError(`regrowth every must be a positive integer of steps, got ${String(o.every).slice(0, 40)}`);
  const f = o.fraction ?? DEFAULT_REGROW_FRACTION;
  if (!(typeof f === 'number' && f > 0 && f <= 0.5)) throw new ShapeError(`regrowth fraction must lie in (0, 0.5], got ${String(f).slice(0, 40)}`);
}

/** One module's swap: positions are into value order (old or new), flat indices into the weight. */
export interface ModuleSwap {
  /** The new sorted flat indices (as many as before). */
  indices: Uint32Array;
  /** Dropped entries: their flat indices and old positions. */
  droppedFlat: Uint32Array;
  droppedOld: Uint32Array;
  /** Kept entries: old positions, and their positions in the new order, pairwise. */
  keptOld: Uint32Array;
  keptNew: Uint32Array;
}

/**
 * Which entries of one module to drop (the `k` smallest |delta|) and grow (the `k` largest |gradient|
 * outside the mask), k = round(fraction * nnz), at least 1 while the module has room; null when nothing
 * changes. `indices` are the sorted flat indices, `delta` the trained change in value order, `gradient`
 * the dense gradient [rows * cols].
 */
export function planSwap(indices: Uint32Array, delta: Float32Array, gradient: Float32Array, fraction: number): ModuleSwap | null {
  const n = indices.length;
  const free = gradient.length - n;
  const k = Math.min(Math.max(1, Math.round(fraction * n)), n, free);
  if (k <= 0) return null;
  const dropPositions = topK(Float64Array.from(delta, (d) => -Math.abs(d)), k);
  const score = Float64Array.from(gradient, Math.abs);
  for (const i of indices) score[i] = -1; // already trained: never grown
  const grown = topK(score, k);
  const dropped = new Uint8Array(n);
  for (const p of dropPositions) dropped[p] = 1;
  const droppedFlat = Uint32Array.from(dropPositions, (p) => indices[p]);
  // Merge the kept (sorted) and grown (sorted) flat indices, noting where each kept one lands.
  const out = new Uint32Array(n);
  const keptOld = new Uint32Array(n - k);
  const keptNew = new Uint32Array(n - k);
  let at = 0;
  let kept = 0;
  let g = 0;
  for (let p = 0; p <= n; p++) {
    if (p < n && dropped[p]) continue;
    const flat = p < n ? indices[p] : Infinity;
    while (g < k && grown[g] < flat) out[at++] = grown[g++];
    if (p === n) break;
    keptOld[kept] = p;
    keptNew[kept++] = at;
    out[at++] = flat;
  }
  return { indices: out, droppedFlat, droppedOld: dropPositions, keptOld, keptNew };
}

/** A module's arrays the swap rewrites on the GPU: values, base values, moments, and its weight. */
export interface SwapTarget {
  nnz: number;
  indices: GPUBuffer | { buffer: GPUBuffer; offset: number; size: number };
  values: { buffer: GPUBuffer; offset: number; size: number };
  originals: { buffer: GPUBuffer; offset: number; size: number };
  /** Arrays whose kept entries move and grown ones start at zero: AdamW's moments, the gradient. */
  moved: { buffer: GPUBuffer; offset: number; size: number }[];
  weight: { buffer: GPUBuffer; offset: number; size: number };
  weightSize: number;
  weightFormat: 'f32' | 'f16' | 'bf16';
}

/** Room for a swap's position arrays (each as many u32 as the largest module's entries) and two f32 arrays as long. */
export interface SwapScratch {
  droppedFlat: GPUBuffer;
  droppedOld: GPUBuffer;
  keptOld: GPUBuffer;
  keptNew: GPUBuffer;
  old: GPUBuffer;
  moved: GPUBuffer;
}

/**
 * Records one module's swap; the new indices must already be in `t.indices` and each position array in
 * its scratch buffer.
 */
export function recordSwap(rec: CommandRecorder, t: SwapTarget, s: ModuleSwap, scratch: SwapScratch): void {
  const k = s.droppedFlat.length;
  const kept = s.keptOld.length;
  const old = { buffer: scratch.old, offset: 0, size: t.nnz * 4 };
  const moved = { buffer: scratch.moved, offset: 0, size: t.nnz * 4 };
  const fmt = { weightFormat: t.weightFormat };
  // The dropped entries' base values back into the weight.
  sparseGather(rec, { indices: scratch.droppedOld, nnz: k, values: moved, weight: t.originals, weightSize: t.nnz });
  sparseScatter(rec, { indices: scratch.droppedFlat, nnz: k, values: moved, weight: t.weight, weightSize: t.weightSize, ...fmt });
  // Each array in the new order: from the weight (values and base values of grown entries) or zero
  // (moments, gradient), then the kept entries moved from their old positions.
  for (const [array, fromWeight] of [[t.values, true], [t.originals, true], ...t.moved.map((m) => [m, false] as const)] as const) {
    rec.copy(array, old);
    if (fromWeight) sparseGather(rec, { indices: t.indices, nnz: t.nnz, values: array, weight: t.weight, weightSize: t.weightSize, ...fmt });
    else rec.clear(array);
    if (!kept) continue;
    sparseGather(rec, { indices: scratch.keptOld, nnz: kept, values: moved, weight: old, weightSize: t.nnz });
    sparseScatter(rec, { indices: scratch.keptNew, nnz: kept, values: moved, weight: array, weightSize: t.nnz });
  }
}
