/**
 * Sparse fine-tuning as a registered method: options in ./config.ts, masks in ./mask.ts (file format)
 * and ./budget.ts (scores to masks, data-free selections), the method in ./layer.ts.
 */
import type { MethodDefinition } from '../method.js';
import { checkSparseOptions, resolveMask, type SparseOptions } from './config.js';
import { SparseFineTuning } from './layer.js';

export const sparse: MethodDefinition<SparseOptions> = {
  name: 'sparse',
  summary: 'only the weights at a mask train, in place inside the frozen base (Sylva-style); forward costs exactly the base',
  check: (config, options) => checkSparseOptions(config, options),
  baseTrainable: () => () => false,
  writesBase: true,
  attach: (model, options) => new SparseFineTuning(model.gpu, model, resolveMask(model.config, options)),
};

export { SparseFineTuning, type SparseOptions };
export { BLOCK_SIZES, SparseMask, type BlockSize, type Granularity, type MaskEntry, type MaskInfo } from './mask.js';
export { columnMask, randomMask, topK, type BudgetOptions } from './budget.js';
export { calibrate, inverseDiagonal, selectMask, SELECTIONS, sylvaScores, type LayerStatistics, type Selection, type SelectionCost, type SelectOptions } from './select.js';
export { readShiraAdapter, readSparseDelta, shiraAdapterFiles, sparseDeltaFile, type SparseDelta } from './interchange.js';
