/**
 * Automatic micro-batch size: the largest number of rows per forward/backward pass that fits, with
 * gradient accumulation making up the requested effective batch. Candidates are the divisors of the
 * effective batch (so micro-batch x accumulation is exactly it), largest first. Each is checked against
 * the device's limits and the activation budget from the arena plan before anything is allocated, then
 * tried for real: one training pass of that shape, which either runs or fails with out-of-memory, and
 * then the next smaller is tried. Gradient checkpointing ('auto') is turned on only when not even one
 * row fits without it.
 */
import { BufferTooLargeError, GPUOutOfMemoryError, ShapeError } from '../errors.js';
import { Activations } from '../model/activations.js';
import type { PackedRows } from '../data/packing.js';
import type { FineTuner } from './finetuner.js';
import { methodDefinition } from '../methods/registry.js';

export interface MicroBatchTrial {
  rows: number;
  checkpointed: boolean;
  outcome: 'fits' | 'over-limit' | 'over-budget' | 'out-of-memory';
  detail: string;
}

export interface MicroBatchChoice {
  microBatch: number;
  accumulation: number;
  gradientCheckpointing: boolean;
  /** One line: what was chosen and what stopped a larger one. */
  reason: string;
  trials: MicroBatchTrial[];
}

export interface MicroBatchOptions {
  /** Rows per optimizer step. */
  batchSize: number;
  /** A fixed micro-batch (checked, not probed), or 'auto'. */
  microBatch: number | 'auto';
  /** Bytes the activations of one micro-batch may take. Default: the model's activationCacheBytes. */
  budgetBytes?: number;
  /** Recompute layers in the backward pass: always, never, or 'auto' (default): only when memory demands it. */
  gradientCheckpointing?: boolean | 'auto';
}

const forwardOnly = (ft: FineTuner) => Boolean(methodDefinition(ft.options.method).forwardOnly);

const mib = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;

function divisorsDescending(n: number): number[] {
  const out: number[] = [];
  for (let d = n; d >= 1; d--) if (n % d === 0) out.push(d);
  return out;
}

/** Why `rows` rows of S tokens cannot run here, from the plan alone, or null when they may. */
export function planProblem(ft: FineTuner, rows: number, S: number, budgetBytes: number, checkpointed = false): MicroBatchTrial | null {
  // A method that trains from forward passes alone needs inference's activations.
  const kind = forwardOnly(ft) ? 'inference' : checkpointed ? 'checkpointed' : 'train';
  const plan = Activations.plan(ft.model.config, rows, S, kind, ft.model.halfActivations, ft.gpu.tuning.attentionVariant);
  const limit = Math.min(ft.gpu.limits.maxStorageBufferBindingSize, ft.gpu.limits.maxBufferSize);
  const largest = Activations.buffersOf(plan).reduce((a, b) => (b.bytes > a.bytes ? b : a));
  if (largest.bytes > limit) {
    return { rows, checkpointed, outcome: 'over-limit', detail: `its activation '${largest.name}' takes ${mib(largest.bytes)}, over the device's ${mib(limit)} per binding` };
  }
  const bytes = Activations.bytesOf(plan);
  if (bytes > budgetBytes) return { rows, checkpointed, outcome: 'over-budget', detail: `its activations take ${mib(bytes)}, over the ${mib(budgetBytes)} budget` };
  return null;
}

export async function chooseMicroBatch(ft: FineTuner, data: PackedRows, o: MicroBatchOptions): Promise<MicroBatchChoice> {
  const { batchSize } = o;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new ShapeError(`batchSize must be a positive integer, got ${batchSize}`);
  const budget = o.budgetBytes ?? ft.model.activationCacheBytes;
  const S = data.S;
  // Checkpointing saves backward memory: nothing to save without a backward pass.
  const modes = forwardOnly(ft) ? [false] : o.gradientCheckpointing === true ? [true] : o.gradientCheckpointing === false ? [false] : [false, true];
  const choose = (microBatch: number, checkpointed: boolean, reason: string, trials: MicroBatchTrial[]): MicroBatchChoice => {
    ft.model.gradientCheckpointing = checkpointed;
    return { microBatch, accumulation: batchSize / microBatch, gradientCheckpointing: checkpointed, reason: checkpointed && o.gradientCheckpointing !== true ? `${reason}; gradient checkpointing on, as without it not even one row fits` : reason, trials };
  };
  const trials: MicroBatchTrial[] = [];
  if (o.microBatch !== 'auto') {
    const m = o.microBatch;
    if (!Number.isInteger(m) || m < 1 || batchSize % m !== 0) throw new ShapeError(`microBatch must be a positive divisor of the batch size ${batchSize}, got ${m}`);
    let problem: MicroBatchTrial | null = null;
    for (const checkpointed of modes) {
      problem = planProblem(ft, m, S, budget, checkpointed);
      if (!problem) return choose(m, checkpointed, `micro-batch ${m} as given`, [{ rows: m, checkpointed, outcome: 'fits', detail: 'as given' }]);
    }
    const fits = modes.map((c) => divisorsDescending(batchSize).find((r) => !planProblem(ft, r, S, budget, c))).find((r) => r !== undefined);
    throw new ShapeError(`a micro-batch of ${m} rows of ${S} tokens cannot run here: ${problem!.detail}; ${fits ? `the largest that fits is ${fits}` : 'not even one row fits: use a shorter sequence'}`);
  }
  for (const checkpointed of modes) {
    for (const rows of divisorsDescending(batchSize)) {
      const problem = planProblem(ft, rows, S, budget, checkpointed);
      if (problem) {
        trials.push(problem);
        continue;
      }
      ft.model.gradientCheckpointing = checkpointed;
      try {
        await ft.probe(data.batch(Array.from({ length: rows }, (_, i) => i % data.rows)));
      } catch (e) {
        if (!(e instanceof GPUOutOfMemoryError || e instanceof BufferTooLargeError)) throw e;
        ft.model.releaseActivations();
        trials.push({ rows, checkpointed, outcome: 'out-of-memory', detail: e.message });
        continue;
      }
      trials.push({ rows, checkpointed, outcome: 'fits', detail: 'a training pass ran' });
      const larger = trials.find((t) => t.outcome !== 'fits' && t.checkpointed === checkpointed);
      const reason = larger
        ? `micro-batch ${rows} x ${batchSize / rows} accumulated: ${larger.rows} rows would not fit (${larger.detail})`
        : `micro-batch ${rows}: the whole batch fits in one pass`;
      return choose(rows, checkpointed, reason, trials);
    }
  }
  const last = trials[trials.length - 1];
  throw new ShapeError(`not even one row of ${S} tokens fits here (${last.detail}): use a shorter sequence, a smaller model or --quantize`);
}
