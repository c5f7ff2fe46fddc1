/**
 * GaLore's AdamW (galore_torch's, which transformers' galore_adamw runs): for a projected weight with
 * gradient G [m, n], every T steps P is recomputed from G (the top-r right singular vectors as rows of
 * P [r, n] when m >= n, else the top-r left ones as columns of P [m, r]: the 'std' projection); each step
 * Adam runs on R = G P^T (or P^T G) and the weight moves by -α N P (or -α P N), N Adam's normalized
 * update, then decays. Other tensors take plain AdamW; one global gradient norm clips both.
 */
import type { TensorView } from '../../gpu/buffers.js';
import type { Gpu } from '../../gpu/gpu.js';
import type { CommandRecorder } from '../../gpu/recorder.js';
import { ADAMW_DEFAULTS } from '../../kernels/adamw.js';
import { galoreAdam, galoreCommit, galoreDecay, galoreSubspace } from '../../kernels/galore.js';
import { matmul } from '../../kernels/matmul.js';
import { Arena, bindingLimit, planArena } from '../../model/arena.js';
import type { CausalLM } from '../../model/causal-lm.js';
import { AdamW, decays, type AdamWConfig, type Optimizer } from '../../optim/adamw.js';
import { hash32 } from '../../util/random.js';
import type { LinearShape } from '../targets.js';
import { GALORE_DEFAULTS, type GaloreOptions } from './config.js';

interface Projected {
  name: string;
  /** Rows and columns of the weight and its gradient ([out, in]). */
  m: number;
  n: number;
  r: number;
  /** m >= n: P [r, n] on the right; else P [m, r] on the left. */
  right: boolean;
  /** Elements of the projected gradient: m r (right) or r n (left). */
  size: number;
}

export class GaloreAdamW implements Optimizer {
  readonly plain: AdamW;
  private readonly projected: Projected[];
  /** P per weight, and Adam's moments of its projected gradient. */
  private readonly state: { p: Arena; m: Arena; v: Arena };
  /** The projected gradient, and Adam's normalized update (largest weight's size). */
  private readonly scratch: { r: GPUBuffer; n: GPUBuffer };
  private readonly o: Required<Omit<GaloreOptions, 'targetModules'>>;

  constructor(
    private readonly gpu: Gpu,
    private readonly model: CausalLM,
    weights: Map<string, LinearShape>,
    options: GaloreOptions,
    readonly config: AdamWConfig = {},
  ) {
    if (!model.grads) throw new Error('GaLore needs a model made with trainable parameters');
    const grads = model.grads;
    this.o = { rank: options.rank ?? GALORE_DEFAULTS.rank, updateGap: options.updateGap ?? GALORE_DEFAULTS.updateGap, scale: options.scale ?? GALORE_DEFAULTS.scale, iterations: options.iterations ?? GALORE_DEFAULTS.iterations, seed: options.seed ?? 0 };
    const trained = new Set(model.trainableNames);
    this.projected = [...weights].filter(([name]) => trained.has(name)).map(([name, s]) => {
      const r = Math.min(this.o.rank, s.out, s.in);
      const right = s.out >= s.in;
      return { name, m: s.out, n: s.in, r, right, size: right ? s.out * r : r * s.in };
    });
    const projectedNames = new Set(this.projected.map((w) => w.name));
    const limit = bindingLimit(gpu).bytes;
    const made: { destroy(): void }[] = [];
    try {
      this.plain = new AdamW(gpu, { names: model.trainableNames.filter((n) => !projectedNames.has(n)), param: (n) => model.params.view(n), grads }, config);
      made.push(this.plain);
      const arena = (lengths: { name: string; length: number }[], label: string) => {
        const a = new Arena(gpu, planArena(lengths, limit), label);
        made.push(a);
        return a;
      };
      const p = arena(this.projected.map((w) => ({ name: w.name, length: w.r * (w.right ? w.n : w.m) })), 'galore projections');
      const moments = this.projected.map((w) => ({ name: w.name, length: w.size }));
      this.state = { p, m: arena(moments, 'galore m'), v: arena(moments, 'galore v') };
      const largest = Math.max(1, ...this.projected.map((w) => w.size));
      const r = gpu.createBuffer(largest * 4, undefined, 'galore projected gradient');
      made.push({ destroy: () => gpu.destroyBuffer(r) });
      this.scratch = { r, n: gpu.createBuffer(largest * 4, undefined, 'galore update') };
    } catch (e) {
      for (const m of made) m.destroy();
      throw e;
    }
    const rec = gpu.recorder();
    for (const b of [...this.state.m.buffers, ...this.state.v.buffers]) rec.clear(b);
    void rec.submit();
  }

  get step(): number {
    return this.plain.step;
  }

  set step(s: number) {
    this.plain.step = s;
  }

  /** Bytes of optimizer state: plain AdamW's moments, the projections and the projected moments. */
  get stateBytes(): number {
    let total = 0;
    for (const view of this.stateViews().values()) total += view.size;
    return total;
  }

  record(rec: CommandRecorder, lr: number, gradScale = 1): void {
    const before = this.plain.step;
    // The global norm over every gradient (projected weights' included) and the plain tensors' update.
    this.plain.record(rec, lr, gradScale);
    const step = before + 1;
    const c = this.config;
    const refresh = before % this.o.updateGap === 0;
    const wd = c.weightDecay ?? ADAMW_DEFAULTS.weightDecay;
    this.projected.forEach((w, t) => {
      const g = this.model.grads!.view(w.name);
      const weight = this.model.params.view(w.name);
      const p = this.state.p.view(w.name);
      if (refresh) {
        const key = hash32((hash32((hash32(this.o.seed) ^ t) >>> 0) ^ Math.floor(before / this.o.updateGap)) >>> 0);
        // Into the update's scratch (free until galore_adam), then into place unless the step is skipped.
        const pSize = w.r * (w.right ? w.n : w.m);
        galoreSubspace(rec, { g, rows: w.m, cols: w.n, rank: w.r, p: this.scratch.n, right: w.right, scratch: this.scratch.r, iterations: this.o.iterations, key });
        galoreCommit(rec, { from: this.scratch.n, to: p, n: pSize, clip: this.plain.normOut });
      }
      if (w.right) matmul(rec, { a: g, b: p, c: this.scratch.r, M: w.m, N: w.r, K: w.n, transB: true });
      else matmul(rec, { a: p, b: g, c: this.scratch.r, M: w.r, N: w.n, K: w.m, transA: true });
      galoreAdam(rec, {
        grads: this.scratch.r, m: this.state.m.view(w.name), v: this.state.v.view(w.name), clip: this.plain.normOut, out: this.scratch.n, n: w.size, step, lr,
        beta1: c.beta1 ?? ADAMW_DEFAULTS.beta1, beta2: c.beta2 ?? ADAMW_DEFAULTS.beta2, eps: c.eps ?? ADAMW_DEFAULTS.eps, gradScale,
      });
      if (w.right) matmul(rec, { a: this.scratch.n, b: p, c: weight, M: w.m, N: w.n, K: w.r, alpha: -this.o.scale, accumulate: true });
      else matmul(rec, { a: p, b: this.scratch.n, c: weight, M: w.m, N: w.n, K: w.r, alpha: -this.o.scale, accumulate: true });
      // Decoupled decay after the update, as galore_torch applies it.
      if (wd > 0 && (c.decay ?? decays)(w.name)) galoreDecay(rec, { weight, n: w.m * w.n, factor: 1 - lr * wd, clip: this.plain.normOut });
    });
  }

  gradView(name: string): TensorView {
    return this.model.grads!.view(name);
  }

  skippedSteps(): Promise<number> {
    return this.plain.skippedSteps();
  }

  stateViews(): Map<string, TensorView> {
    const out = this.plain.stateViews();
    for (const w of this.projected) {
      out.set(`${w.name}.galore_p`, this.state.p.view(w.name));
      out.set(`${w.name}.galore_m`, this.state.m.view(w.name));
      out.set(`${w.name}.galore_v`, this.state.v.view(w.name));
    }
    return out;
  }

  destroy(): void {
    this.plain.destroy();
    this.state.p.destroy();
    this.state.m.destroy();
    this.state.v.destroy();
    this.gpu.destroyBuffer(this.scratch.r);
    this.gpu.destroyBuffer(this.scratch.n);
  }
}
