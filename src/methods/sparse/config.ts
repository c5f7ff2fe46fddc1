/** Sparse fine-tuning's options and the check made before any weight is loaded. */
import { ShapeError } from '../../errors.js';
import type { ModelConfig } from '../../model/config.js';
import { budgetModules, columnMask, randomMask, type BudgetOptions } from './budget.js';
import { BLOCK_SIZES, SparseMask } from './mask.js';
import { checkOptionKeys, optionKeys } from '../../util/options.js';
import type { OptionField } from '../fields.js';
import { DEFAULT_DENSITY } from './budget.js';
import { checkRegrowth, DEFAULT_REGROW_FRACTION, type RegrowthOptions } from './regrowth.js';

/** How a mask is chosen: from data (sylva, fisher, snip; ./select.ts) or data-free (random, columns; ./budget.ts). */
export type Selection = 'sylva' | 'fisher' | 'snip' | 'random' | 'columns';
export const SELECTIONS: Selection[] = ['sylva', 'fisher', 'snip', 'random', 'columns'];

export interface SparseOptions extends BudgetOptions {
  /**
   * The positions that train: a mask selected from data (selectMask) or read from a file
   * (SparseMask.fromSafetensors). It decides density, granularity and targets, so it comes alone.
   */
  mask?: SparseMask;
  /**
   * Without a mask, how one is chosen: from the training rows, 'sylva' (default: K-FAC saliency, as
   * CentML's Sylva), 'fisher' or 'snip', which a Trainer runs on its rows before attaching; or data-free
   * at attach, 'random' (PEFT's SHiRA) or 'columns' (PaCA).
   */
  selection?: Selection;
  /** Token positions of the training rows a data-driven selection scores on. Default CALIBRATION_TOKENS (4096). */
  calibrationTokens?: number;
  /** Seed of a data-free selection. Default 0. */
  seed?: number;
}

export const DEFAULT_SELECTION: Selection = 'sylva';

/**
 * Token positions a selection sees. Fewer make the mean gradient noisy: at 1,024 the method-quality
 * study's Sylva masks at LoRA r8's parameter count scored 7 points lower than at 4,096.
 */
export const CALIBRATION_TOKENS = 4096;

/** Sparse fine-tuning's options as a user sets them (see OptionField). */
export const SPARSE_FIELDS: readonly OptionField[] = [
  { name: 'mask', path: ['mask'], kind: 'file', commandLineOnly: true, decides: ['selection', 'calibration-tokens', 'density', 'granularity'], help: 'a saved mask (select-mask); it decides density, granularity and targets', load: (file, config) => SparseMask.fromSafetensors(file.bytes, config, file.name) },
  { name: 'selection', path: ['selection'], kind: 'choice', choices: SELECTIONS, default: DEFAULT_SELECTION, help: 'how the mask is chosen without one: sylva, fisher and snip score the weights on the first training rows' },
  { name: 'calibration-tokens', path: ['calibrationTokens'], kind: 'integer', min: 1, max: 1 << 24, default: CALIBRATION_TOKENS, appliesWhen: [{ field: 'selection', is: ['sylva', 'fisher', 'snip'] }], help: 'tokens of the first training rows the selection scores on' },
  { name: 'density', path: ['density'], kind: 'number', above: 0, max: 1, default: DEFAULT_DENSITY, help: 'fraction of each weight that trains' },
  { name: 'granularity', path: ['granularity'], kind: 'choice', choices: ['element', ...BLOCK_SIZES], default: 'element', help: 'single weights or square blocks of that side' },
];

/** The selections that score weights on data (the others, random and columns, need none). */
export function selectsOnData(selection: Selection): boolean {
  return selection !== 'random' && selection !== 'columns';
}

/** Why these options need training rows before attaching, or null when they do not. */
export function maskNeedsRows(o: SparseOptions = {}): string | null {
  const selection = o.selection ?? DEFAULT_SELECTION;
  if (o.mask || !selectsOnData(selection)) return null;
  return `the sparse selection '${selection}'${o.selection === undefined ? ' (the default)' : ''} chooses the mask from training rows, which a FineTuner does not have: ` +
    "train with a Trainer or a session (they select on the training rows first), or pass a mask from selectMask, or a data-free selection ('random', 'columns')";
}

/** What a mask decides; given beside one, they would be ignored. */
const DECIDED_BY_MASK = ['selection', 'calibrationTokens', 'density', 'granularity', 'budget', 'targetModules', 'loraRank', 'seed'] as const;

export const BUDGET_OPTION_KEYS = optionKeys<BudgetOptions>()(['density', 'granularity', 'budget', 'targetModules', 'loraRank']);
export const SPARSE_OPTION_KEYS = optionKeys<SparseOptions>()(['mask', 'selection', 'calibrationTokens', 'seed', ...BUDGET_OPTION_KEYS as readonly (keyof BudgetOptions)[]]);

export function checkSparseOptions(config: ModelConfig, o: SparseOptions = {}): void {
  checkOptionKeys('sparse options', o, SPARSE_OPTION_KEYS);
  if (o.mask) {
    const decided = DECIDED_BY_MASK.filter((k) => o[k] !== undefined);
    if (decided.length) throw new ShapeError(`a sparse mask decides ${decided.join(', ')}: give the mask alone`);
    return o.mask.checkModel(config);
  }
  if (o.selection !== undefined && !SELECTIONS.includes(o.selection)) throw new ShapeError(`unknown sparse selection '${String(o.selection).slice(0, 40)}' (${SELECTIONS.join(', ')})`);
  budgetModules(config, o);
}

/** The mask the options ask for: the given one, or a data-free selection (a data-driven one was made before attaching). */
export function resolveMask(config: ModelConfig, o: SparseOptions = {}): SparseMask {
  checkSparseOptions(config, o);
  if (o.mask) return o.mask;
  const needsRows = maskNeedsRows(o);
  if (needsRows) throw new ShapeError(needsRows);
  return o.selection === 'columns' ? columnMask(config, o) : randomMask(config, o);
}

/** The sparse method's own options: a mask as SparseOptions choose it, and drop-and-regrow (./regrowth.ts). */
export interface SparseMethodOptions extends SparseOptions {
  /** Drop the least-changed entries and grow new ones where the gradient is largest, periodically (SpIEL). */
  regrow?: boolean;
  /** With regrow: optimizer steps between regrowths. Default 20. */
  regrowEvery?: number;
  /** With regrow: fraction of each module's entries swapped at each regrowth. Default 0.1. */
  regrowFraction?: number;
}

export const DEFAULT_REGROW_EVERY = 20;

const WITH_REGROW = [{ field: 'regrow', is: ['true'] }];

export const REGROWTH_FIELDS: readonly OptionField[] = [
  { name: 'regrow', path: ['regrow'], kind: 'boolean', default: false, help: 'drop-and-regrow (SpIEL): periodically drop the least-changed trained weights and grow as many where the gradient is largest; element masks' },
  { name: 'regrow-every', path: ['regrowEvery'], kind: 'integer', min: 1, max: 1_000_000, default: DEFAULT_REGROW_EVERY, appliesWhen: WITH_REGROW, help: 'optimizer steps between regrowths' },
  { name: 'regrow-fraction', path: ['regrowFraction'], kind: 'number', above: 0, max: 0.5, default: DEFAULT_REGROW_FRACTION, appliesWhen: WITH_REGROW, help: 'fraction of each layer\'s trained weights swapped at each regrowth' },
];

type RegrowthKeys = Pick<SparseMethodOptions, 'regrow' | 'regrowEvery' | 'regrowFraction'>;

/** The mask options and the regrowth options, apart. */
export function splitRegrowth(o: SparseMethodOptions = {}): { sparse: SparseOptions; regrowth: RegrowthKeys } {
  const { regrow, regrowEvery, regrowFraction, ...sparse } = o;
  const regrowth: RegrowthKeys = {};
  if (regrow !== undefined) regrowth.regrow = regrow;
  if (regrowEvery !== undefined) regrowth.regrowEvery = regrowEvery;
  if (regrowFraction !== undefined) regrowth.regrowFraction = regrowFraction;
  return { sparse, regrowth };
}

/**
 * Drop-and-regrow as the options ask (checked by checkSparseMethodOptions and the method), or undefined;
 * its settings without regrow are refused, not ignored.
 */
export function regrowthOf(o: SparseMethodOptions = {}): RegrowthOptions | undefined {
  if (o.regrow !== undefined && typeof o.regrow !== 'boolean') throw new ShapeError(`regrow must be true or false, got '${String(o.regrow).slice(0, 40)}'`);
  if (!o.regrow) {
    const given = (['regrowEvery', 'regrowFraction'] as const).filter((k) => o[k] !== undefined);
    if (given.length) throw new ShapeError(`${given.join(' and ')} apply with regrow: true`);
    return undefined;
  }
  return { every: o.regrowEvery ?? DEFAULT_REGROW_EVERY, fraction: o.regrowFraction ?? DEFAULT_REGROW_FRACTION };
}

export function checkSparseMethodOptions(config: ModelConfig, o: SparseMethodOptions = {}): void {
  const { sparse } = splitRegrowth(o);
  checkSparseOptions(config, sparse);
  const regrowth = regrowthOf(o);
  if (regrowth) checkRegrowth(regrowth, sparse.mask?.granularity ?? sparse.granularity ?? 'element');
}
