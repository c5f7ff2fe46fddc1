/**
 * A data-driven sparse mask chosen on the training rows before the method attaches: what the Trainer
 * runs for a sparse method whose options name a selection (Sylva's saliency by default) and no mask.
 */
import type { TrainingData } from '../../data/dataset.js';
import type { Gpu } from '../../gpu/gpu.js';
import type { BatchInput } from '../../model/batch.js';
import { CausalLM } from '../../model/causal-lm.js';
import type { Checkpoint } from '../../model/checkpoint.js';
import { selectionProgress, type ProgressEvent } from '../../train/progress.js';
import type { Prepared, PrepareContext } from '../method.js';
import { CALIBRATION_TOKENS, DEFAULT_SELECTION, type SparseOptions } from './config.js';
import type { SparseMask } from './mask.js';
import { selectMask, type SelectOptions } from './select.js';

/** Tokens per calibration batch where the rows come from a dataset. */
export const CALIBRATION_BATCH_TOKENS = 4096;

/** The first rows of the training data, as calibration batches of about CALIBRATION_BATCH_TOKENS tokens. */
export function calibrationRows(data: TrainingData, tokens = CALIBRATION_TOKENS): BatchInput[] {
  const S = data.train.S;
  return [...data.train.batches(Math.max(1, Math.floor(CALIBRATION_BATCH_TOKENS / S)), Math.ceil(tokens / S))];
}

/** A mask selected on a frozen copy of the base from the first training rows. */
export async function selectMaskOnRows(gpu: Gpu, ckpt: Checkpoint, data: TrainingData, select: SelectOptions, onProgress?: (e: ProgressEvent) => void, tokens = CALIBRATION_TOKENS) {
  const model = await CausalLM.fromCheckpoint(gpu, ckpt);
  try {
    return await selectMask(model, calibrationRows(data, tokens), onProgress ? { ...select, onProgress: (p) => onProgress(selectionProgress(p)) } : select);
  } finally {
    model.destroy();
  }
}

/** Sparse options that train at `mask`: what decided the mask (selection, budget) has done its work. */
export function withMask(mask: SparseMask): SparseOptions {
  return { mask };
}

/** Selects the mask the options ask for on the training rows (see maskNeedsRows). */
export async function prepareMask(o: SparseOptions = {}, context: PrepareContext): Promise<Prepared<SparseOptions>> {
  const { mask: _mask, selection = DEFAULT_SELECTION, calibrationTokens, ...budget } = o;
  const { mask, cost } = await selectMaskOnRows(context.gpu, context.ckpt, context.data, { ...budget, selection }, context.onProgress, calibrationTokens);
  return {
    options: withMask(mask),
    report: { label: 'mask', text: `${selection} selection, ${(100 * mask.density).toFixed(2)}% of ${cost.layers} layers in ${cost.seconds.toFixed(1)} s on ${cost.calibrationTokens} training tokens` },
  };
}
