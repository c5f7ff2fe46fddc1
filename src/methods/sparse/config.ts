/** Sparse fine-tuning's options and the check made before any weight is loaded. */
import { ShapeError } from '../../errors.js';
import type { ModelConfig } from '../../model/config.js';
import { budgetModules, columnMask, randomMask, type BudgetOptions } from './budget.js';
import { BLOCK_SIZES, SparseMask } from './mask.js';
import { checkOptionKeys, optionKeys } from '../../util/options.js';
import type { OptionField } from '../fields.js';
import { DEFAULT_DENSITY } from './budget.js';

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
  /** Seed of a data-free selection. Default 0. */
  seed?: number;
}

export const DEFAULT_SELECTION: Selection = 'sylva';

/** Sparse fine-tuning's options as a user sets them (see OptionField). */
export const SPARSE_FIELDS: readonly OptionField[] = [
  { name: 'mask', path: ['mask'], kind: 'file', commandLineOnly: true, decides: ['selection', 'density', 'granularity'], help: 'a saved mask (select-mask); it decides density, granularity and targets', load: (file, config) => SparseMask.fromSafetensors(file.bytes, config, file.name) },
  { name: 'selection', path: ['selection'], kind: 'choice', choices: SELECTIONS, default: DEFAULT_SELECTION, help: 'how the mask is chosen without one: sylva, fisher and snip score the weights on the first training rows' },
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
const DECIDED_BY_MASK = ['selection', 'density', 'granularity', 'budget', 'targetModules', 'loraRank', 'seed'] as const;

export const BUDGET_OPTION_KEYS = optionKeys<BudgetOptions>()(['density', 'granularity', 'budget', 'targetModules', 'loraRank']);
export const SPARSE_OPTION_KEYS = optionKeys<SparseOptions>()(['mask', 'selection', 'seed', ...BUDGET_OPTION_KEYS as readonly (keyof BudgetOptions)[]]);

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
