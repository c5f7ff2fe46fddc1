/**
 * AdamW over a set of named trainable tensors: moments in arenas with the gradients' layout, the global
 * gradient norm and clipping factor computed on the GPU (no host round trip), then one fused AdamW
 * dispatch per tensor. Weight decay skips biases and norm weights, as the Hugging Face Trainer does.
 */
import type { TensorView } from '../gpu/buffers.js';
import type { Gpu } from '../gpu/gpu.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { ADAMW_DEFAULTS, adamwStep, gradNorm, gradNormScratchSize } from '../kernels/adamw.js';
import { Arena } from '../model/arena.js';

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
}

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
  /** Optimizer steps taken (schedules are 1-based: the next step is step + 1). */
  step: number;
  /** Record one update at learning rate `lr`. */
  record(rec: CommandRecorder, lr: number): void;
  /** Its state tensors by checkpoint name (e.g. '<tensor>.adam_m'), to save and restore. */
  stateViews(): Map<string, TensorView>;
  destroy(): void;
}

/** The default decay rule: biases and norm weights are not decayed. */
export function decays(name: string): boolean {
  return !/(\.bias$|norm[^.]*\.weight$)/.test(name);
}

export class AdamW implements Optimizer {
  readonly m: Arena;
  readonly v: Arena;
  private readonly partials: GPUBuffer;
  /** out[0] = clip factor, out[1] = global gradient norm (before clipping). */
  readonly normOut: GPUBuffer;
  step = 0;

  constructor(
    private readonly gpu: Gpu,
    private readonly set: TrainableSet,
    readonly config: AdamWConfig = {},
  ) {
    const made: { destroy(): void }[] = [];
    const buffer = (bytes: number, label: string) => {
      const b = gpu.createBuffer(bytes, undefined, label);
      made.push({ destroy: () => gpu.destroyBuffer(b) });
      return b;
    };
    try {
      this.m = new Arena(gpu, set.grads.layout, 'adam m');
      made.push(this.m);
      this.v = new Arena(gpu, set.grads.layout, 'adam v');
      made.push(this.v);
      this.partials = buffer(gradNormScratchSize(set.grads.spans().map((s) => s.length)) * 4, 'grad norm partials');
      this.normOut = buffer(8, 'grad norm');
    } catch (e) {
      for (const m of made) m.destroy(); // a failure part way releases what was made
      throw e;
    }
    const rec = gpu.recorder();
    for (const b of [...this.m.buffers, ...this.v.buffers]) rec.clear(b);
    void rec.submit();
  }

  /** Record one optimizer step at learning rate `lr`; gradients are scaled by gradScale first. */
  record(rec: CommandRecorder, lr: number, gradScale = 1): void {
    this.step++;
    const c = this.config;
    const maxNorm = c.maxGradNorm ?? 1;
    gradNorm(rec, { tensors: this.set.grads.spans().map((s) => ({ buffer: s.buffer, n: s.length })), partials: this.partials, out: this.normOut, maxNorm, gradScale });
    for (const name of this.set.names) {
      const params = this.set.param(name);
      adamwStep(rec, {
        params, grads: this.set.grads.view(name), m: this.m.view(name), v: this.v.view(name), clip: this.normOut,
        n: params.size / 4, step: this.step, lr, gradScale,
        beta1: c.beta1 ?? ADAMW_DEFAULTS.beta1, beta2: c.beta2 ?? ADAMW_DEFAULTS.beta2, eps: c.eps ?? ADAMW_DEFAULTS.eps,
        weightDecay: (c.decay ?? decays)(name) ? c.weightDecay ?? ADAMW_DEFAULTS.weightDecay : 0,
      });
    }
  }

  stateViews(): Map<string, TensorView> {
    const out = new Map<string, TensorView>();
    for (const n of this.set.names) {
      out.set(`${n}.adam_m`, this.m.view(n));
      out.set(`${n}.adam_v`, this.v.view(n));
    }
    return out;
  }

  /** The global gradient norm of the last recorded step (after it ran). */
  async lastGradNorm(): Promise<number> {
    return (await this.gpu.readF32(this.normOut))[1];
  }

  destroy(): void {
    this.m.destroy();
    this.v.destroy();
    this.gpu.destroyBuffer(this.partials);
    this.gpu.destroyBuffer(this.normOut);
  }
}
