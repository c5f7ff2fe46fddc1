/** Learning-rate schedules: linear warmup, then cosine or linear decay (the Hugging Face Trainer's). */
import { optionKeys } from '../util/options.js';

export interface ScheduleOptions {
  lr: number;
  warmupSteps?: number;
  /** Total optimizer steps; needed for decay. */
  totalSteps?: number;
  schedule?: 'constant' | 'linear' | 'cosine';
  /** Final learning rate as a fraction of lr. Default 0. */
  minLrRatio?: number;
}

export const SCHEDULE_OPTION_KEYS = optionKeys<ScheduleOptions>()(['lr', 'warmupSteps', 'totalSteps', 'schedule', 'minLrRatio']);

/** Learning rate for optimizer step `step` (1-based). */
export function learningRate(step: number, o: ScheduleOptions): number {
  const warmup = o.warmupSteps ?? 0;
  if (step <= warmup) return (o.lr * step) / Math.max(warmup, 1);
  const kind = o.schedule ?? 'constant';
  if (kind === 'constant' || !o.totalSteps) return o.lr;
  const min = o.lr * (o.minLrRatio ?? 0);
  const progress = Math.min(1, (step - warmup) / Math.max(1, o.totalSteps - warmup));
  const factor = kind === 'linear' ? 1 - progress : 0.5 * (1 + Math.cos(Math.PI * progress));
  return min + (o.lr - min) * factor;
}
