/**
 * Sparse fine-tuning as a registered method: options in ./config.ts, masks in ./mask.ts (file format)
 * and ./budget.ts (scores to masks, data-free selections), the method in ./layer.ts.
 */
import { ShapeError } from '../../errors.js';
import type { ModelConfig } from '../../model/config.js';
import type { MethodDefinition } from '../method.js';
import { checkSparseMethodOptions, maskNeedsRows, regrowthOf, REGROWTH_FIELDS, resolveMask, SPARSE_FIELDS, splitRegrowth, type SparseMethodOptions, type SparseOptions } from './config.js';
import { prepareMask, withMask } from './prepare.js';
import { SparseFineTuning } from './layer.js';
import { SparseMask } from './mask.js';
import { sparseDeltaFile } from './interchange.js';
import { hasSupertuningForm, supertuningAdapterFiles } from './supertuning.js';

export const sparse: MethodDefinition<SparseMethodOptions> = {
  name: 'sparse',
  summary: 'only the weights at a mask train, in place inside the frozen base (Sylva-style); forward costs exactly the base',
  fields: [...SPARSE_FIELDS, ...REGROWTH_FIELDS],
  learningRate: 2e-4,
  prepare: {
    needed: (options) => maskNeedsRows(splitRegrowth(options).sparse),
    run: async (options, context) => {
      const { sparse: mask, regrowth } = splitRegrowth(options);
      const prepared = await prepareMask(mask, context);
      return { ...prepared, options: { ...prepared.options, ...regrowth } };
    },
  },
  check: (config, options) => checkSparseMethodOptions(config, options),
  baseTrainable: () => () => false,
  writesBase: true,
  attach: (model, options) => new SparseFineTuning(model.gpu, model, resolveMask(model.config, splitRegrowth(options).sparse), regrowthOf(options)),
  checkpointFiles: (method, config) => ({ [MASK_FILE]: (method as SparseFineTuning).mask.toSafetensors(config) }),
  // The engine's delta file, and PEFT's Super-Tuning adapter beside it where the model has one (not GPT-2).
  exportFiles: async (method, config, o) => ({
    [DELTA_FILE]: await sparseDeltaFile(method as SparseFineTuning, config),
    ...(hasSupertuningForm(config) ? await supertuningAdapterFiles(method as SparseFineTuning, config, o) : {}),
  }),
  // The mask a checkpoint kept is the one training reached (drop-and-regrow changes it).
  restoreOptions: async (options, files, config) => ({ ...withMask(await savedMask(files, config)), ...splitRegrowth(options).regrowth }),
};

/** The file name of an exported sparse delta. */
export const DELTA_FILE = 'sparse_delta.safetensors';

/** The file a checkpoint keeps a sparse method's mask in. */
export const MASK_FILE = 'mask.safetensors';

/** The mask a checkpoint kept. */
export async function savedMask(files: Record<string, Uint8Array>, config: ModelConfig): Promise<SparseMask> {
  if (!files[MASK_FILE]) throw new ShapeError(`the checkpoint has no ${MASK_FILE}, which a sparse method needs to resume`);
  return SparseMask.fromSafetensors(files[MASK_FILE], config, MASK_FILE);
}

export { SparseFineTuning, type SparseMethodOptions, type SparseOptions };
export { CALIBRATION_TOKENS, DEFAULT_SELECTION, maskNeedsRows, REGROWTH_FIELDS, selectsOnData, SPARSE_FIELDS } from './config.js';
export { planSwap, type ModuleSwap, type RegrowthOptions } from './regrowth.js';
export { CALIBRATION_BATCH_TOKENS, calibrationRows, selectMaskOnRows } from './prepare.js';
export { BLOCK_SIZES, SparseMask, type BlockSize, type Granularity, type MaskEntry, type MaskInfo } from './mask.js';
export { columnMask, randomMask, topK, type BudgetOptions } from './budget.js';
export { calibrate, inverseDiagonal, selectMask, SELECTIONS, sylvaScores, type LayerStatistics, type Selection, type SelectionCost, type SelectOptions, type SelectProgress } from './select.js';
export { readShiraAdapter, readSparseDelta, shiraAdapterFiles, sparseDeltaFile, type SparseDelta } from './interchange.js';
export { hasSupertuningForm, readSupertuningAdapter, supertuningAdapterFiles, type SupertuningAdapter } from './supertuning.js';
