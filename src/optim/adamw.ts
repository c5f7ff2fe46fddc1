/**
 * AdamW over a set of named trainable tensors: moments in arenas laid out like the tensors trained, the global
 * gradient norm and clipping factor computed on the GPU (no host round trip), then one fused AdamW
 * dispatch over every dense tensor of a set of buffers (an arena's). Weight decay skips biases and norm
 * weights, as the Hugging Face Trainer does. Tensors of masked values (sparse fine-tuning) take the sparse kernel, which writes each updated value
 * into its frozen weight in place.
 */
import type { TensorView } from '../gpu/buffers.js';
import type { Gpu } from '../gpu/gpu.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { ADAMW_DEFAULTS, adamwMultiStep, gradNorm, gradNormScratchSize, sparseAdamwStep, type AdamWTensor } from '../kernels/adamw.js';
import { Arena, bindingLimit, planArena } from '../model/arena.js';
import { optionKeys } from '../util/options.js';
import type { WeightFormat } from '../kernels/matmul.js';

/**
 * AdamW settings; the defaults are PyTorch's and the Hugging Face Trainer's. Learning rate and schedule
 * are ScheduleOptions (the optimizer gets the rate per step).
 */
export interface AdamWConfig {
  /** Default 0.9. */
  beta1?: number;
  /** Default 0.999. */
  beta2?: number;
  /** Default 1e-8. */
  eps?: number;
  /** Decoupled weight decay. Default 0. */
  weightDecay?: number;
  /**
   * Which tensors weight decay applies to, by engine name (base parameters such as 'layers.0.q.weight',
   * 'layers.0.norm1.weight', 'layers.0.q.bias', 'embed', 'lm_head'; adapter tensors such as
   * 'layers.0.q.lora_A'), in the
   * spirit of PyTorch's parameter groups. Default `decays`: every tensor but biases and norm weights,
   * as the Hugging Face Trainer does.
   */
  decay?: (name: string) => boolean;
  /**
   * Clip the global gradient norm to this value, on by default as in the Hugging Face Trainer
   * (max_grad_norm 1); 0 or Infinity disables clipping. Default 1.
   */
  maxGradNorm?: number;
  /**
   * Leave every parameter and moment as it is when the global gradient norm is not finite (an overflow),
   * as PyTorch's GradScaler skips such a step; decided on the GPU, with no host round trip. The skipped
   * step still counts in the schedule and in bias correction. Default: on under mixed precision, off in
   * f32 (where torch.optim.AdamW applies whatever the gradient holds).
   */
  skipNonFinite?: boolean;
}

export const ADAMW_CONFIG_KEYS = optionKeys<AdamWConfig>()(['beta1', 'beta2', 'eps', 'weightDecay', 'decay', 'maxGradNorm', 'skipNonFinite']);

/** Named trainable tensors, their views, and the arena their gradients accumulate in. */
export interface TrainableSet {
  /** Engine names (base parameters such as 'layers.0.q.weight', or a method's own tensors). */
  names: string[];
  param(name: string): TensorView;
  /** The gradient arena; moments get arenas of the same layout. */
  grads: Arena;
}

/** An update rule over a trainable set, with its state for checkpoints. */
export interface Optimizer {
  /** Optimizer steps taken: the next update's schedule step (schedules are 0-based). */
  step: number;
  /**
   * Record one update at learning rate `lr` of the gradients times `gradScale` (FineTuner passes 1 over
   * the step's target tokens: the gradients hold sums over them).
   */
  record(rec: CommandRecorder, lr: number, gradScale?: number): void;
  /** Where the gradient of trainable tensor `name` accumulates (unscaled). */
  gradView(name: string): TensorView;
  /** Its state tensors by checkpoint name (e.g. '<tensor>.adam_m'), to save and restore. */
  stateViews(): Map<string, TensorView>;
  /** Steps it left out for a gradient norm that was not finite (AdamWConfig.skipNonFinite), where it counts them. */
  skippedSteps?(): Promise<number>;
  destroy(): void;
}

/** The default decay rule: biases, norm weights and a 4-bit weight's block scales are not decayed. */
export function decays(name: string): boolean {
  return !/(\.bias$|norm[^.]*\.weight$|\.absmax$)/.test(name);
}

/** Where a trainable tensor of masked values lives inside a frozen weight (sparse fine-tuning). */
export interface InPlaceTarget {
  /** Flat element indices into `weight` (u32), one per value, in value order. */
  indices: TensorView;
  /** The weight the updated values are written into: f32, or 16-bit packed in pairs (holding them rounded). */
  weight: TensorView;
  /** Elements of the weight and how it is stored (default f32). */
  weightSize: number;
  weightFormat?: WeightFormat;
}

/**
 * A trainable set and, for tensors of masked values, where they live in a frozen weight: those update
 * with the sparse AdamW kernel, which also writes each new value into the weight (W[idx] = value).
 */
export interface OptimizerGroup {
  set: TrainableSet;
  inPlace?: (name: string) => InPlaceTarget | null;
  /**
   * The step a tensor's bias correction counts at optimizer step `step` (1-based), where its moments
   * started later than the optimizer (a layer LISA trains from part way): PyTorch counts per parameter.
   * Default `step`.
   */
  stepOf?: (name: string, step: number) => number;
  /**
   * A tensor's learning rate as a multiple of the step's, as a PyTorch parameter group's own lr (LoRA+:
   * B's is a ratio times A's). Default 1.
   */
  lrScale?: (name: string) => number;
}

export class AdamW implements Optimizer {
  private readonly groups: OptimizerGroup[];
  private readonly moments: { m: Arena; v: Arena }[] = [];
  private readonly partials: GPUBuffer;
  /** out[0] = clip factor (-1: skipped), out[1] = global gradient norm (before clipping), out[2] = steps skipped. */
  readonly normOut: GPUBuffer;
  step = 0;

  /**
   * One trainable set, or several groups (e.g. a sparse set written in place beside a dense adapter):
   * one global gradient norm clips them all.
   */
  constructor(
    private readonly gpu: Gpu,
    groups: TrainableSet | OptimizerGroup[],
    readonly config: AdamWConfig = {},
  ) {
    this.groups = Array.isArray(groups) ? groups : [{ set: groups }];
    const made: { destroy(): void }[] = [];
    try {
      for (const { set } of this.groups) {
        // Moments for the tensors trained, which may be fewer than the gradients (GaLore projects some).
        const layout = planArena(set.names.map((name) => ({ name, length: set.grads.view(name).size / 4 })), bindingLimit(gpu).bytes);
        const m = new Arena(gpu, layout, 'adam m');
        made.push(m);
        const v = new Arena(gpu, layout, 'adam v');
        made.push(v);
        this.moments.push({ m, v });
      }
      this.partials = gpu.createBuffer(gradNormScratchSize(this.gradTensors().map((t) => t.n)) * 4, undefined, 'grad norm partials');
      made.push({ destroy: () => gpu.destroyBuffer(this.partials) });
      this.normOut = gpu.createBuffer(12, undefined, 'grad norm');
    } catch (e) {
      for (const m of made) m.destroy(); // a failure part way releases what was made
      throw e;
    }
    const rec = gpu.recorder();
    for (const { m, v } of this.moments) for (const b of [...m.buffers, ...v.buffers]) rec.clear(b);
    void rec.submit();
  }

  private gradTensors(): { buffer: GPUBuffer; n: number }[] {
    return this.groups.flatMap((g) => g.set.grads.spans().map((s) => ({ buffer: s.buffer, n: s.length })));
  }

  /** Record one optimizer step at learning rate `lr`; gradients are scaled by gradScale first. */
  record(rec: CommandRecorder, lr: number, gradScale = 1): void {
    this.step++;
    const c = this.config;
    gradNorm(rec, { tensors: this.gradTensors(), partials: this.partials, out: this.normOut, maxNorm: c.maxGradNorm ?? 1, gradScale, skipNonFinite: c.skipNonFinite });
    const betas = { beta1: c.beta1 ?? ADAMW_DEFAULTS.beta1, beta2: c.beta2 ?? ADAMW_DEFAULTS.beta2, eps: c.eps ?? ADAMW_DEFAULTS.eps };
    const dense: AdamWTensor[] = [];
    this.groups.forEach(({ set, inPlace, stepOf, lrScale }, g) => {
      const { m, v } = this.moments[g];
      for (const name of set.names) {
        const params = set.param(name);
        const tensor: AdamWTensor = {
          params, grads: set.grads.view(name), m: m.view(name), v: v.view(name),
          n: params.size / 4, step: stepOf ? stepOf(name, this.step) : this.step, lr: lr * (lrScale?.(name) ?? 1),
          weightDecay: (c.decay ?? decays)(name) ? c.weightDecay ?? ADAMW_DEFAULTS.weightDecay : 0,
        };
        const target = inPlace?.(name);
        if (target) sparseAdamwStep(rec, { ...tensor, ...betas, clip: this.normOut, gradScale, indices: target.indices, weight: target.weight, weightSize: target.weightSize, weightFormat: target.weightFormat });
        else dense.push(tensor);
      }
    });
    // Every dense tensor in one dispatch per set of buffers (torch's multi-tensor AdamW).
    if (dense.length) adamwMultiStep(rec, { tensors: dense, clip: this.normOut, gradScale, ...betas });
  }

  gradView(name: string): TensorView {
    const group = this.groups.find((g) => g.set.names.includes(name));
    if (!group) throw new RangeError(`'${name}' is not a trainable tensor of this optimizer`);
    return group.set.grads.view(name);
  }

  /** The first and second moments of one group's tensor. */
  momentViews(name: string, group = 0): { m: TensorView; v: TensorView } {
    return { m: this.moments[group].m.view(name), v: this.moments[group].v.view(name) };
  }

  stateViews(): Map<string, TensorView> {
    const out = new Map<string, TensorView>();
    this.groups.forEach(({ set }, g) => {
      for (const n of set.names) {
        out.set(`${n}.adam_m`, this.moments[g].m.view(n));
        out.set(`${n}.adam_v`, this.moments[g].v.view(n));
      }
    });
    return out;
  }

  /** The global gradient norm of the last recorded step (after it ran). */
  async lastGradNorm(): Promise<number> {
    return (await this.gpu.readF32(this.normOut))[1];
  }

  /** Steps skipped for a gradient norm that was not finite (skipNonFinite), since this optimizer was made. */
  async skippedSteps(): Promise<number> {
    return (await this.gpu.readF32(this.normOut))[2];
  }

  destroy(): void {
    for (const { m, v } of this.moments) {
      m.destroy();
      v.destroy();
    }
    this.gpu.destroyBuffer(this.partials);
    this.gpu.destroyBuffer(this.normOut);
  }
}
