/**
 * MeZO's step (Malladi et al. 2023): for each of n random directions z_j, the loss at θ + εz_j and at
 * θ - εz_j from two forward passes (no backward, no activations kept between them beyond inference's),
 * θ put back, and then ZO-SGD: θ -= lr (Σ_j g_j z_j / n + wd θ) with the projected gradient
 * g_j = (L+ - L-) / 2ε over the step's target tokens. z is regenerated on the GPU from (seed, optimizer
 * step, j, tensor, element) whenever it is needed (shaders/zo.wgsl), so nothing per parameter is stored.
 */
import type { Gpu } from '../../gpu/gpu.js';
import type { CommandRecorder } from '../../gpu/recorder.js';
import type { TensorView } from '../../gpu/buffers.js';
import { zoLossSum, zoPerturb, zoRun, zoUpdate, ZO_SKIP, type ZoRun, type ZoSegment } from '../../kernels/zo.js';
import type { Activations } from '../../model/activations.js';
import type { CausalLM } from '../../model/causal-lm.js';
import type { PreparedBatch } from '../../model/batch.js';
import { decays, type AdamWConfig, type Optimizer } from '../../optim/adamw.js';
import type { RecordedStep, StepContext, TrainableTensors, TrainingStep } from '../method.js';

export interface ZoSettings {
  epsilon: number;
  directions: number;
  seed: number;
}

/**
 * ZO-SGD over a method's trainable tensors. Its only state is the optimizer step, which with the seed
 * decides every direction: a checkpoint needs nothing more. The loss sums of the step's passes
 * accumulate in `acc` (+ε at even slots, -ε at odd) until the update reads them.
 */
export class ZoSgd implements Optimizer {
  step = 0;
  /** The step's summed token losses per pass, over its micro-batches. */
  readonly acc: GPUBuffer;
  /** The last micro-batch's, for its reported loss. */
  readonly sums: GPUBuffer;
  private readonly runs: ZoRun[];

  constructor(
    private readonly gpu: Gpu,
    trainable: TrainableTensors,
    readonly settings: ZoSettings,
    readonly config: AdamWConfig = {},
  ) {
    const decay = config.decay ?? decays;
    const made: GPUBuffer[] = [];
    try {
      this.runs = runsOf(gpu, trainable.names.map((name, t) => ({ view: trainable.param(name), tensor: t, decay: decay(name) })), made);
      this.acc = gpu.createBuffer(8 * settings.directions, undefined, 'zo loss sums');
      made.push(this.acc);
      this.sums = gpu.createBuffer(8 * settings.directions, undefined, 'zo micro-batch loss sums');
    } catch (e) {
      for (const b of made) gpu.destroyBuffer(b); // a failure part way releases what was made
      throw e;
    }
    const rec = gpu.recorder();
    rec.clear(this.acc);
    void rec.submit();
  }

  /** θ += scale z_direction of the current step. */
  perturb(rec: CommandRecorder, direction: number, scale: number): void {
    for (const run of this.runs) zoPerturb(rec, run, { seed: this.settings.seed, step: this.step, direction, scale });
  }

  /**
   * ZO-SGD from the step's accumulated loss sums; `gradScale` is 1 over the step's target tokens. With
   * `restore`, the last direction's restoring step (θ += restore z) is done in the same pass.
   */
  record(rec: CommandRecorder, lr: number, gradScale = 1, restore = 0): void {
    const { epsilon, directions, seed } = this.settings;
    const coef = gradScale / (2 * epsilon * directions);
    for (const run of this.runs) zoUpdate(rec, run, { seed, step: this.step, directions, acc: this.acc, coef, lr, weightDecay: this.config.weightDecay ?? 0, restore, skipNonFinite: this.config.skipNonFinite });
    rec.clear(this.acc);
    this.step++;
  }

  gradView(name: string): TensorView {
    throw new RangeError(`zeroth-order training keeps no gradient ('${name}'): it estimates a projection of it per step`);
  }

  stateViews(): Map<string, TensorView> {
    return new Map(); // the step and the seed decide everything
  }

  destroy(): void {
    for (const run of this.runs) this.gpu.destroyBuffer(run.segments);
    this.gpu.destroyBuffer(this.acc);
    this.gpu.destroyBuffer(this.sums);
  }
}

/**
 * One run per buffer holding trainable tensors, from the first to the end of the last, with what lies
 * between them (alignment padding, frozen tensors) skipped: one dispatch per buffer and pass.
 */
function runsOf(gpu: Gpu, tensors: { view: TensorView; tensor: number; decay: boolean }[], made: GPUBuffer[]): ZoRun[] {
  const byBuffer = new Map<GPUBuffer, typeof tensors>();
  for (const t of tensors) byBuffer.set(t.view.buffer, [...(byBuffer.get(t.view.buffer) ?? []), t]);
  return [...byBuffer].map(([buffer, list]) => {
    list.sort((a, b) => a.view.offset - b.view.offset);
    const start = list[0].view.offset;
    const segments: ZoSegment[] = [];
    let cursor = start;
    for (const { view, tensor, decay } of list) {
      if (view.offset > cursor) segments.push({ start: (cursor - start) / 4, tensor: ZO_SKIP, decay: false });
      segments.push({ start: (view.offset - start) / 4, tensor, decay });
      cursor = view.offset + view.size;
    }
    const run = zoRun(gpu, { buffer, offset: start, size: cursor - start }, (cursor - start) / 4, segments);
    made.push(run.segments);
    return run;
  });
}

/**
 * The step: per direction, perturb, forward, sum; perturb back past θ, forward, sum; restore. `written`
 * brings what derives from the trainable tensors up to date after each change (sparse: the weights).
 */
export function zoStep(optimizer: () => ZoSgd, written?: (rec: CommandRecorder) => void): TrainingStep {
  return {
    record(rec: CommandRecorder, { model, batch, first, update, pass }: StepContext): RecordedStep {
      const opt = optimizer();
      const { epsilon, directions } = opt.settings;
      if (first) rec.clear(opt.acc);
      let acts: Activations | null = null;
      try {
        for (let j = 0; j < directions; j++) {
          for (const [slot, scale] of [[2 * j, epsilon], [2 * j + 1, -2 * epsilon]] as const) {
            opt.perturb(rec, j, scale);
            written?.(rec);
            // An evaluation pass (no dropout): both sides of the difference see the same function.
            acts?.unpin();
            acts = null;
            acts = model.record(rec, batch, undefined, { training: false, pass: pass.pass });
            zoLossSum(rec, { losses: acts.losses, n: batch.B * batch.S, slot, sums: opt.sums, acc: opt.acc });
          }
          // Back to θ; the last direction's step back goes with the update when this micro-batch has one.
          if (update && j === directions - 1) break;
          opt.perturb(rec, j, epsilon);
          written?.(rec);
        }
        if (update) {
          opt.record(rec, update.lr, update.gradScale, epsilon);
          written?.(rec);
        }
      } catch (e) {
        acts?.unpin();
        throw e;
      }
      return {
        finish: () => {
          try {
            // The loss reported is the mean of the two sides (L at θ to second order in ε), over the directions.
            return model.gpu.readF32(opt.sums).then((s) => s.reduce((a, b) => a + b, 0) / (2 * directions));
          } finally {
            acts?.unpin();
          }
        },
      };
    },
    probe(rec: CommandRecorder, model: CausalLM, batch: PreparedBatch): () => void {
      const acts = model.record(rec, batch);
      return () => acts.unpin();
    },
  };
}
