/**
 * The defaults of a training run, stated once: the Trainer applies them, the command line shows and
 * parses its flags from them, and the demo's form starts from them. A method's own defaults (its learning
 * rate, LoRA's rank, a sparse density) live with the method, in its option fields.
 */
import { ADAMW_DEFAULTS } from '../kernels/adamw.js';

export const TRAINING_DEFAULTS = {
  /** Passes over the training rows when no step count is given. */
  epochs: 1,
  /** Rows per optimizer step. */
  batchSize: 8,
  /** Warmup as a fraction of the steps, rounded up (transformers' warmup_ratio), then cosine decay to 0. */
  warmupRatio: 0.03,
  schedule: 'cosine' as 'cosine' | 'linear' | 'constant',
  /** Decoupled weight decay (the Hugging Face Trainer's 0; AdamW's own default). */
  weightDecay: ADAMW_DEFAULTS.weightDecay,
  /** Global gradient-norm clipping (the Hugging Face Trainer's max_grad_norm). */
  maxGradNorm: 1,
  /** Seed of the row order. */
  seed: 0,
  /** Checkpoints: one every this many optimizer steps (and at the end), the newest this many kept. */
  checkpointEvery: 50,
  checkpointsKept: 2,
  /** Fraction of the rows held out for evaluation where a front end splits them (command line, demo). */
  validation: 0.05,
  /** Tokens per packed row where none is asked: the model's positions, at most this. */
  maxSeqLength: 1024,
};
