/** LISA's options, their defaults and fields, the check made before any weight loads, and its sampling. */
import { ShapeError } from '../../errors.js';
import type { ModelConfig } from '../../model/config.js';
import { checkOptionKeys, checkSeed, optionKeys } from '../../util/options.js';
import { hash32, rng } from '../../util/random.js';
import type { OptionField } from '../fields.js';

export interface LisaOptions {
  /** Decoder layers trained at a time (γ). Default 2, LMFlow's. */
  layers?: number;
  /** Optimizer steps between resamplings (K). Default 20, LMFlow's. */
  interval?: number;
  /**
   * Whether what lies outside the decoder layers (embeddings, final norm, LM head) trains at every step,
   * as the paper keeps them. Default true.
   */
  outside?: boolean;
  /**
   * A layer's AdamW moments when it is sampled again: 'reset' (default: fresh moments each period, so the
   * optimizer holds γ layers' worth; PyTorch's per-parameter step restarts with them) or 'keep' (the
   * moments it had, parked while it is frozen: a full model's worth of moments, but γ layers' gradients).
   */
  moments?: 'reset' | 'keep';
  /** Seed of the sampling. Default 0. */
  seed?: number;
}

export const LISA_OPTION_KEYS = optionKeys<LisaOptions>()(['layers', 'interval', 'outside', 'moments', 'seed']);
export const LISA_DEFAULT_LAYERS = 2;
export const LISA_DEFAULT_INTERVAL = 20;

export const LISA_FIELDS: readonly OptionField[] = [
  { name: 'lisa-layers', path: ['layers'], kind: 'integer', min: 1, max: 1024, default: LISA_DEFAULT_LAYERS, help: 'decoder layers trained at a time (sampled anew every interval)' },
  { name: 'lisa-interval', path: ['interval'], kind: 'integer', min: 1, max: 1e9, default: LISA_DEFAULT_INTERVAL, help: 'optimizer steps between samplings of the trained layers' },
  { name: 'lisa-moments', path: ['moments'], kind: 'choice', choices: ['reset', 'keep'], default: 'reset', help: 'a layer\'s AdamW moments when sampled again: fresh, or kept from before (a full model\'s worth of memory)' },
];

export function checkLisaOptions(config: ModelConfig, o: LisaOptions = {}): void {
  checkOptionKeys('LISA options', o, LISA_OPTION_KEYS);
  const layers = o.layers ?? LISA_DEFAULT_LAYERS;
  if (!Number.isInteger(layers) || layers < 1) throw new ShapeError(`LISA layers must be a positive integer, got ${o.layers}`);
  if (layers > config.numLayers) throw new ShapeError(`LISA trains ${layers} layers at a time, but the model has ${config.numLayers}`);
  const interval = o.interval ?? LISA_DEFAULT_INTERVAL;
  if (!Number.isInteger(interval) || interval < 1) throw new ShapeError(`LISA interval must be a positive integer, got ${o.interval}`);
  if (o.moments !== undefined && o.moments !== 'reset' && o.moments !== 'keep') throw new ShapeError(`LISA moments must be 'reset' or 'keep', got '${String(o.moments).slice(0, 40)}'`);
  if (o.outside !== undefined && typeof o.outside !== 'boolean') throw new ShapeError('LISA outside must be true or false');
  checkSeed('LISA', o.seed);
}

/**
 * The layers period `period` trains: `count` of `total`, drawn without replacement from a generator
 * seeded by (seed, period), in ascending order. A pure function, so a resumed run samples the same.
 */
export function lisaLayers(seed: number, period: number, total: number, count: number): number[] {
  const rand = rng(hash32((hash32(seed >>> 0) ^ period) >>> 0));
  const pool = Array.from({ length: total }, (_, i) => i);
  for (let i = 0; i < count; i++) {
    const j = i + Math.floor(rand() * (total - i));
    [pool[i], pool[j]] = [pool[j], pool[i]];
  }
  return pool.slice(0, count).sort((a, b) => a - b);
}
