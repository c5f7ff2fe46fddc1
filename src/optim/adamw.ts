/**
 * AdamW over a set of named trainable tensors: moments in arenas with the gradients' layout, the global
 * gradient norm and clipping factor computed on the GPU (no host round trip), then one fused AdamW
 * dispatch per tensor. Weight decay skips biases and norm weights, as the Hugging Face Trainer does.
 */
import type { TensorView } from '../gpu/buffers.js';
import type { Gpu } from '../gpu/gpu.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { adamwStep, gradNorm, gradNormScratchSize } from '../kernels/adamw.js';
import { Arena } from '../model/arena.js';

export interface AdamWConfig {
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Clip the global gradient norm to this value; 0 or Infinity disables clipping. Default 1. */
  maxGradNorm?: number;
}

export interface TrainableSet {
  names: string[];
  param(name: string): TensorView;
  /** The gradient arena; moments get arenas of the same layout. */
  grads: Arena;
}

/** Biases and 1-D norm weights are not decayed. */
export function decays(name: string): boolean {
  return !/(\.bias$|norm[^.]*\.weight$)/.test(name);
}

export class AdamW {
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
        beta1: c.beta1 ?? 0.9, beta2: c.beta2 ?? 0.999, eps: c.eps ?? 1e-8,
        weightDecay: decays(name) ? c.weightDecay ?? 0 : 0,
      });
    }
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
