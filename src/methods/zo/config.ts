/** Zeroth-order training's options, their defaults and fields, and the check made before any weight loads. */
import { ShapeError } from '../../errors.js';
import type { ModelConfig } from '../../model/config.js';
import { checkOptionKeys, checkSeed, optionKeys } from '../../util/options.js';
import { nestedFields, type OptionField } from '../fields.js';
import { LORA_FIELDS, loraModules, type LoraOptions } from '../lora/config.js';
import { checkSparseOptions, SPARSE_FIELDS, type SparseOptions } from '../sparse/config.js';

/** What the forward-only estimate trains. */
export type ZoTarget = 'lora' | 'full' | 'sparse' | 'quantized';
export const ZO_TARGETS: readonly ZoTarget[] = ['lora', 'full', 'sparse', 'quantized'];

export interface ZoOptions {
  /**
   * What trains: 'lora' (default: adapters over a frozen base, which may be 4-bit), 'full' (every base
   * parameter, as MeZO), 'sparse' (the entries of a sparse mask, in place: Sparse-MeZO), or 'quantized'
   * (a 4-bit NF4 base's block scales, its absmax, so the 4-bit model itself adapts: QZO).
   */
  target?: ZoTarget;
  /**
   * The perturbation's scale ε: the loss is evaluated at θ + εz and θ - εz. Default MeZO's: 1e-2 for
   * LoRA, 1e-3 for base weights (full, sparse).
   */
  epsilon?: number;
  /** Random directions per step (MeZO's n), each two forward passes; their estimates are averaged. Default 1. */
  directions?: number;
  /** Seed of the directions (with the optimizer step and the direction's index). Default 0. */
  seed?: number;
  /** The adapter, for target 'lora' (LoraOptions' defaults). */
  lora?: LoraOptions;
  /** The mask, for target 'sparse' (SparseOptions' defaults). */
  sparse?: SparseOptions;
}

export const ZO_OPTION_KEYS = optionKeys<ZoOptions>()(['target', 'epsilon', 'directions', 'seed', 'lora', 'sparse']);

export const ZO_DEFAULT_TARGET: ZoTarget = 'lora';
export const ZO_DEFAULT_DIRECTIONS = 1;

/**
 * MeZO's ε: 1e-2 for LoRA's adapters, 1e-3 for weights of the model itself; for NF4 block scales
 * (absmax, each the largest |w| of its 64 weights) 1e-3 of a typical scale's size, 1e-4.
 */
export function defaultEpsilon(target: ZoTarget): number {
  return target === 'lora' ? 1e-2 : target === 'quantized' ? 1e-4 : 1e-3;
}

/**
 * MeZO's learning rates (SGD on the projected gradient): 1e-4 for LoRA, 1e-6 for weights of the model
 * itself; a model far smaller than MeZO's 13B tolerates and needs larger ones (tune on validation loss).
 */
export function defaultZoLearningRate(target: ZoTarget): number {
  return target === 'lora' ? 1e-4 : 1e-6;
}

export const ZO_FIELDS: readonly OptionField[] = [
  { name: 'zo-target', path: ['target'], kind: 'choice', choices: ZO_TARGETS, default: ZO_DEFAULT_TARGET, help: 'what the forward-only estimate trains: LoRA adapters, the full model, a sparse mask in place, or a 4-bit NF4 base\'s block scales' },
  { name: 'zo-epsilon', path: ['epsilon'], kind: 'number', above: 0, max: 1, shownDefault: '1e-2 for lora, 1e-4 for quantized, 1e-3 otherwise', help: 'perturbation scale: the loss is taken at θ ± ε z' },
  { name: 'zo-directions', path: ['directions'], kind: 'integer', min: 1, max: 64, default: ZO_DEFAULT_DIRECTIONS, help: 'random directions per step, two forward passes each' },
  // Not LoRA+: zeroth-order's update has no per-tensor rates.
  ...nestedFields('lora', LORA_FIELDS.filter((f) => f.name !== 'loraplus-lr-ratio')).map((f) => ({ ...f, appliesWhen: [{ field: 'zo-target', is: ['lora'] }, ...(f.appliesWhen ?? [])] })),
  ...nestedFields('sparse', SPARSE_FIELDS).map((f) => ({ ...f, appliesWhen: [{ field: 'zo-target', is: ['sparse'] }, ...(f.appliesWhen ?? [])] })),
];

/** The target, checked with the options of what it trains. */
export function checkZoOptions(config: ModelConfig, o: ZoOptions = {}): ZoTarget {
  checkOptionKeys('zeroth-order options', o, ZO_OPTION_KEYS);
  const target = o.target ?? ZO_DEFAULT_TARGET;
  if (!ZO_TARGETS.includes(target)) throw new ShapeError(`unknown zeroth-order target '${String(target).slice(0, 40)}' (${ZO_TARGETS.join(', ')})`);
  if (o.epsilon !== undefined && !(o.epsilon > 0 && o.epsilon <= 1)) throw new ShapeError(`zeroth-order epsilon must be > 0 and <= 1, got ${o.epsilon}`);
  const n = o.directions ?? ZO_DEFAULT_DIRECTIONS;
  if (!Number.isInteger(n) || n < 1 || n > 64) throw new ShapeError(`zeroth-order directions must be an integer from 1 to 64, got ${o.directions}`);
  checkSeed('zeroth-order', o.seed);
  if (o.lora !== undefined && target !== 'lora') throw new ShapeError(`lora options apply to the zeroth-order target 'lora', not '${target}'`);
  if (o.sparse !== undefined && target !== 'sparse') throw new ShapeError(`sparse options apply to the zeroth-order target 'sparse', not '${target}'`);
  // The estimate compares two passes of one function: dropout would make them two.
  if ((o.lora?.dropout ?? 0) > 0) throw new ShapeError('zeroth-order training compares two forward passes of the same function; LoRA dropout would differ between them: leave dropout at 0');
  if ((o.lora?.loraplusLrRatio ?? 1) !== 1) throw new ShapeError('zeroth-order training takes one rate for every tensor: LoRA+ (loraplusLrRatio) does not apply');
  if (target === 'lora') loraModules(config, o.lora);
  if (target === 'sparse') checkSparseOptions(config, o.sparse);
  return target;
}
