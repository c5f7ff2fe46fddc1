/** GaLore's options, their defaults (transformers' galore_adamw) and fields, and the check before loading. */
import { ShapeError } from '../../errors.js';
import type { ModelConfig } from '../../model/config.js';
import { checkOptionKeys, checkSeed, optionKeys } from '../../util/options.js';
import type { OptionField } from '../fields.js';
import { linearModules, type LinearShape } from '../targets.js';

export interface GaloreOptions {
  /** Rank r of each projection (capped at a weight's smaller side). Default 128, transformers' (galore_adamw). */
  rank?: number;
  /** Optimizer steps between recomputations of a projection (T, update_proj_gap). Default 200. */
  updateGap?: number;
  /** Scale α of the projected-back update. Default 0.25, transformers'. */
  scale?: number;
  /** Linear layers GaLore applies to (engine, Hugging Face or 'all-linear'); the rest take plain AdamW. Default 'all-linear'. */
  targetModules?: string[];
  /**
   * Subspace iterations per recomputation, from a Gaussian start (galore_torch takes an exact SVD; the
   * iteration converges to its subspace at the rate of the spectral gap). Default 8.
   */
  iterations?: number;
  /** Seed of the iterations' starts. Default 0. */
  seed?: number;
}

export const GALORE_OPTION_KEYS = optionKeys<GaloreOptions>()(['rank', 'updateGap', 'scale', 'targetModules', 'iterations', 'seed']);
export const GALORE_DEFAULTS = { rank: 128, updateGap: 200, scale: 0.25, iterations: 8, targetModules: ['all-linear'] as readonly string[] };

export const GALORE_FIELDS: readonly OptionField[] = [
  { name: 'galore-rank', path: ['rank'], kind: 'integer', min: 1, max: 65536, default: GALORE_DEFAULTS.rank, help: 'rank of each weight\'s gradient projection (capped at its smaller side)' },
  { name: 'galore-update-gap', path: ['updateGap'], kind: 'integer', min: 1, max: 1e9, default: GALORE_DEFAULTS.updateGap, help: 'optimizer steps between recomputations of the projections' },
  { name: 'galore-scale', path: ['scale'], kind: 'number', above: 0, max: 1000, default: GALORE_DEFAULTS.scale, help: 'scale of the projected-back update' },
  { name: 'galore-targets', path: ['targetModules'], kind: 'list', default: GALORE_DEFAULTS.targetModules, help: 'linear layers GaLore projects (all-linear, or names such as q_proj,down_proj); others take AdamW' },
];

/** The projected linear weights by engine name ('layers.0.q.weight') with their shapes. */
export function galoreWeights(config: ModelConfig, o: GaloreOptions = {}): Map<string, LinearShape> {
  checkOptionKeys('GaLore options', o, GALORE_OPTION_KEYS);
  for (const [key, min] of [['rank', 1], ['updateGap', 1], ['iterations', 1]] as const) {
    const v = o[key];
    if (v !== undefined && !(Number.isInteger(v) && v >= min)) throw new ShapeError(`GaLore ${key} must be an integer >= ${min}, got ${v}`);
  }
  if (o.scale !== undefined && !(o.scale > 0 && Number.isFinite(o.scale))) throw new ShapeError(`GaLore scale must be a positive number, got ${o.scale}`);
  checkSeed('GaLore', o.seed);
  const modules = linearModules(config, [...(o.targetModules ?? GALORE_DEFAULTS.targetModules)], 'GaLore');
  return new Map([...modules].map(([m, shape]) => [`${m}.weight`, shape]));
}
