/** Sparse fine-tuning's options and the check made before any weight is loaded. */
import { ShapeError } from '../../errors.js';
import type { ModelConfig } from '../../model/config.js';
import { budgetModules, columnMask, randomMask, type BudgetOptions } from './budget.js';
import type { SparseMask } from './mask.js';
import { checkOptionKeys, optionKeys } from '../../util/options.js';

export interface SparseOptions extends BudgetOptions {
  /**
   * The positions that train: a mask selected from data (selectMask: Sylva's K-FAC saliency, Fisher,
   * SNIP) or read from a file (SparseMask.fromSafetensors). It decides density, granularity and targets.
   * Without one, a data-free mask is made at attach from `selection` and the budget options.
   */
  mask?: SparseMask;
  /** Data-free selection without a mask: 'random' (default, as PEFT's SHiRA) or 'columns' (PaCA). */
  selection?: 'random' | 'columns';
  /** Seed of a data-free selection. Default 0. */
  seed?: number;
}

const DATA_FREE = ['random', 'columns'];

export const BUDGET_OPTION_KEYS = optionKeys<BudgetOptions>()(['density', 'granularity', 'budget', 'targetModules', 'loraRank']);
export const SPARSE_OPTION_KEYS = optionKeys<SparseOptions>()(['mask', 'selection', 'seed', ...BUDGET_OPTION_KEYS as readonly (keyof BudgetOptions)[]]);

export function checkSparseOptions(config: ModelConfig, o: SparseOptions = {}): void {
  checkOptionKeys('sparse options', o, SPARSE_OPTION_KEYS);
  if (o.mask) return o.mask.checkModel(config);
  if (o.selection !== undefined && !DATA_FREE.includes(o.selection)) {
    throw new ShapeError(`sparse selection at attach must be ${DATA_FREE.map((s) => `'${s}'`).join(' or ')} (got '${String(o.selection)}'); data-driven selections (sylva, fisher, snip) run in selectMask and give a mask`);
  }
  budgetModules(config, o);
}

/** The mask the options ask for: the given one, or a data-free selection. */
export function resolveMask(config: ModelConfig, o: SparseOptions = {}): SparseMask {
  checkSparseOptions(config, o);
  if (o.mask) return o.mask;
  return o.selection === 'columns' ? columnMask(config, o) : randomMask(config, o);
}
