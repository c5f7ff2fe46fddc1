/**
 * Turning importance scores into a mask: the budget (a density of each matrix, or one density over the
 * whole model so important matrices take more), the granularity (elements, or square blocks scored by
 * the sum of their elements' scores), and the data-free selections (random, SHiRA's default; whole
 * random input columns, PaCA's partial connections).
 */
import { ShapeError } from '../../errors.js';
import type { ModelConfig } from '../../model/config.js';
import { shapesDigest, type ModelFingerprint } from '../../model/fingerprint.js';
import { rng } from '../../util/random.js';
import { linearModules, type LinearShape } from '../targets.js';
import { BLOCK_SIZES, SparseMask, type Granularity, type MaskEntry } from './mask.js';

export interface BudgetOptions {
  /** Fraction of each targeted weight's elements that trains, in (0, 1]. Default 0.01. */
  density?: number;
  /** 'element' (default) or square blocks of 16, 32 or 64. */
  granularity?: Granularity;
  /** 'per-matrix' (default): the density in every matrix; 'global': the top scores over all of them. */
  budget?: 'per-matrix' | 'global';
  /** Linear layers to target (engine or Hugging Face names, or 'all-linear', the default). */
  targetModules?: string[];
  /**
   * Instead of a density: r * (in + out) elements per matrix, the parameter count of a rank-r LoRA
   * adapter on it and the budget rule of PEFT's SHiRA adapters (element granularity only).
   */
  loraRank?: number;
}

export const DEFAULT_DENSITY = 0.01;

/** Checks budget options against a model without allocating; returns the targeted modules. */
export function budgetModules(config: ModelConfig, o: BudgetOptions = {}): Map<string, LinearShape> {
  const density = o.density ?? DEFAULT_DENSITY;
  if (!(density > 0 && density <= 1)) throw new ShapeError(`sparse density must be in (0, 1], got ${density}`);
  const g = o.granularity ?? 'element';
  if (g !== 'element' && !BLOCK_SIZES.includes(g)) throw new ShapeError(`sparse granularity must be 'element' or a block size of ${BLOCK_SIZES.join(', ')}, got ${String(g)}`);
  if (o.budget !== undefined && o.budget !== 'per-matrix' && o.budget !== 'global') throw new ShapeError(`sparse budget must be 'per-matrix' or 'global', got '${String(o.budget)}'`);
  const modules = linearModules(config, o.targetModules ?? ['all-linear'], 'sparse');
  if (o.loraRank !== undefined) {
    if (!Number.isInteger(o.loraRank) || o.loraRank < 1) throw new ShapeError(`sparse loraRank must be a positive integer, got ${o.loraRank}`);
    if (g !== 'element') throw new ShapeError('a loraRank budget counts elements: use element granularity');
    for (const [m, d] of modules) if (o.loraRank * (d.out + d.in) > d.out * d.in) throw new ShapeError(`sparse: rank ${o.loraRank}'s budget ${o.loraRank * (d.out + d.in)} exceeds the ${d.out * d.in} elements of '${m}'`);
  }
  if (g !== 'element') {
    for (const [m, d] of modules) if (d.out % g || d.in % g) throw new ShapeError(`sparse: ${g}x${g} blocks do not tile '${m}' (${d.out}x${d.in}); choose a block size that divides both`);
  }
  return modules;
}

/** Selections from scores; `scores(module)` gives one score per element of the module's weight [out, in]. */
export function maskFromScores(
  config: ModelConfig,
  o: BudgetOptions,
  scores: (module: string, shape: LinearShape) => Float64Array | Float32Array,
  info: { selection: string; calibrationTokens: number; fingerprint: ModelFingerprint | null },
): SparseMask {
  const modules = budgetModules(config, o);
  const g = o.granularity ?? 'element';
  const b = g === 'element' ? 1 : g;
  const density = o.density ?? DEFAULT_DENSITY;
  /** Units (elements or blocks) a module keeps under a per-matrix budget. */
  const keep = (d: LinearShape, units: number) => (o.loraRank ? o.loraRank * (d.out + d.in) : Math.max(1, Math.round(density * units)));
  // Per unit (element or block) scores of every module.
  const units = new Map<string, Float64Array | Float32Array>();
  for (const [m, d] of modules) {
    const s = scores(m, d);
    if (s.length !== d.out * d.in) throw new Error(`scores of '${m}': ${s.length} values for a ${d.out}x${d.in} weight`);
    units.set(m, b === 1 ? s : blockSums(s, d, b));
  }
  const entries = new Map<string, MaskEntry>();
  if ((o.budget ?? 'per-matrix') === 'per-matrix') {
    for (const [m, d] of modules) {
      const u = units.get(m)!;
      entries.set(m, { rows: d.out, cols: d.in, indices: topK(u, keep(d, u.length)) });
    }
  } else {
    const total = [...units.values()].reduce((s, u) => s + u.length, 0);
    const all = new Float64Array(total);
    let at = 0;
    for (const u of units.values()) {
      all.set(u, at);
      at += u.length;
    }
    const chosen = topK(all, [...modules].reduce((n, [m, d]) => n + keep(d, units.get(m)!.length), 0));
    let start = 0;
    let c = 0;
    for (const [m, d] of modules) {
      const n = units.get(m)!.length;
      const mine: number[] = [];
      while (c < chosen.length && chosen[c] < start + n) mine.push(chosen[c++] - start);
      if (mine.length) entries.set(m, { rows: d.out, cols: d.in, indices: Uint32Array.from(mine) });
      start += n;
    }
  }
  return new SparseMask(g, entries, { ...info, budget: o.budget ?? 'per-matrix' });
}

/** Sum of each b x b block's element scores, by block id (row-major over blocks). */
function blockSums(s: ArrayLike<number>, d: LinearShape, b: number): Float64Array {
  const perRow = d.in / b;
  const out = new Float64Array((d.out / b) * perRow);
  for (let o = 0; o < d.out; o++) {
    const row = Math.floor(o / b) * perRow;
    for (let i = 0; i < d.in; i++) out[row + Math.floor(i / b)] += s[o * d.in + i];
  }
  return out;
}

/**
 * Indices of the k largest scores, sorted ascending (ties broken toward lower indices), in expected
 * linear time: a quickselect finds the k-th largest value, then one pass collects.
 */
export function topK(scores: ArrayLike<number>, k: number): Uint32Array {
  const n = scores.length;
  if (k >= n) return Uint32Array.from({ length: n }, (_, i) => i);
  for (let i = 0; i < n; i++) if (Number.isNaN(scores[i])) throw new Error(`importance score ${i} is NaN`);
  const copy = Float64Array.from(scores);
  const threshold = kthLargest(copy, k);
  const out = new Uint32Array(k);
  let at = 0;
  for (let i = 0; i < n && at < k; i++) if (scores[i] > threshold) out[at++] = i;
  for (let i = 0; i < n && at < k; i++) if (scores[i] === threshold) out[at++] = i;
  return out.sort();
}

/** The k-th largest value (1-based) of a, which it reorders (Hoare's selection, random pivots). */
function kthLargest(a: Float64Array, k: number): number {
  let lo = 0;
  let hi = a.length - 1;
  const target = k - 1; // index in descending order
  let seed = 0x9e3779b9;
  while (lo < hi) {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
    const pivot = a[lo + (seed % (hi - lo + 1))];
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i] > pivot) i++;
      while (a[j] < pivot) j--;
      if (i <= j) {
        const t = a[i];
        a[i] = a[j];
        a[j] = t;
        i++;
        j--;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else return a[target];
  }
  return a[target];
}

/** A uniformly random mask (SHiRA's default selection): the baseline every other selection must beat. */
export function randomMask(config: ModelConfig, o: BudgetOptions & { seed?: number } = {}): SparseMask {
  const rand = rng(o.seed ?? 0);
  return maskFromScores(config, o, (_m, d) => Float32Array.from({ length: d.out * d.in }, () => rand()), { selection: 'random', calibrationTokens: 0, fingerprint: anyWeights(config) });
}

/**
 * Whole input columns chosen at random (PaCA's partial connections): each targeted weight trains
 * round(density * in) complete columns, so the gradient is a dense product over those inputs only.
 */
export function columnMask(config: ModelConfig, o: BudgetOptions & { seed?: number } = {}): SparseMask {
  if ((o.granularity ?? 'element') !== 'element') throw new ShapeError('column selection picks whole input columns: use element granularity');
  const rand = rng(o.seed ?? 0);
  const entries = new Map<string, MaskEntry>();
  for (const [m, d] of budgetModules(config, o)) {
    const cols = topK(Float32Array.from({ length: d.in }, () => rand()), Math.max(1, Math.round((o.density ?? DEFAULT_DENSITY) * d.in)));
    const indices = new Uint32Array(d.out * cols.length);
    for (let r = 0; r < d.out; r++) for (let c = 0; c < cols.length; c++) indices[r * cols.length + c] = r * d.in + cols[c];
    entries.set(m, { rows: d.out, cols: d.in, indices });
  }
  return new SparseMask('element', entries, { selection: 'columns', budget: 'per-matrix', calibrationTokens: 0, fingerprint: anyWeights(config) });
}

/** The fingerprint of a data-free mask: it fits any weights of this configuration and shapes. */
function anyWeights(config: ModelConfig): ModelFingerprint {
  return { shapes: shapesDigest(config), weights: '' };
}
