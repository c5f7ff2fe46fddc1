/**
 * Learning-rate schedules: linear warmup, then constant, linear or cosine decay, as transformers'
 * get_{constant,linear,cosine}_schedule_with_warmup (transformers/optimization.py) compute them.
 */
import { optionKeys } from '../util/options.js';

export interface ScheduleOptions {
  lr: number;
  warmupSteps?: number;
  /** Total optimizer steps; needed for decay. */
  totalSteps?: number;
  schedule?: 'constant' | 'linear' | 'cosine';
  /** Final learning rate as a fraction of lr (transformers' `min_lr_rate`). Default 0. */
  minLrRatio?: number;
}

export const SCHEDULE_OPTION_KEYS = optionKeys<ScheduleOptions>()(['lr', 'warmupSteps', 'totalSteps', 'schedule', 'minLrRatio']);

/**
 * The learning rate of the optimizer step that follows `step` earlier updates (0-based, as transformers'
 * `current_step`). After warmup it is transformers' factor at `step`, so the last of T steps decays
 * towards the end value without reaching it and a run of one step trains. Warmup runs one step ahead
 * of transformers' (whose first step has factor 0 and so changes nothing): step k < W uses (k + 1) / W.
 */
export function learningRate(step: number, o: ScheduleOptions): number {
  const warmup = o.warmupSteps ?? 0;
  if (step < warmup) return (o.lr * (step + 1)) / warmup;
  const kind = o.schedule ?? 'constant';
  if (kind === 'constant' || !o.totalSteps) return o.lr;
  const min = o.lr * (o.minLrRatio ?? 0);
  const progress = Math.min(1, (step - warmup) / Math.max(1, o.totalSteps - warmup));
  const factor = kind === 'linear' ? 1 - progress : 0.5 * (1 + Math.cos(Math.PI * progress));
  return min + (o.lr - min) * factor;
}

/** Warmup steps for a fraction of the run, rounded up as transformers' TrainingArguments.get_warmup_steps. */
export function warmupSteps(ratio: number, totalSteps: number): number {
  return Math.ceil(ratio * totalSteps);
}
