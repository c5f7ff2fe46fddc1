/**
 * LISA (Pan et al. 2024, layerwise importance sampling): full-parameter training of γ decoder layers at
 * a time, sampled anew every K optimizer steps, with the embeddings, final norm and LM head training at
 * every step; the other layers stay frozen. Gradients and AdamW moments exist only for γ layers: slots
 * that the sampled layers are bound to (CausalLM.baseGradients), so memory is near LoRA's while every
 * weight can change over a run. The sampling is a pure function of (seed, period): a checkpoint needs
 * nothing beyond the optimizer's step and moments.
 */
import type { TensorView } from '../../gpu/buffers.js';
import type { CommandRecorder } from '../../gpu/recorder.js';
import type { CausalLM } from '../../model/causal-lm.js';
import { Arena, bindingLimit, planArena } from '../../model/arena.js';
import { AdamW, decays, type AdamWConfig, type Optimizer } from '../../optim/adamw.js';
import { backpropStep } from '../../train/backprop-step.js';
import type { Method, MethodDefinition, TrainableTensors, TrainingStep } from '../method.js';
import { checkLisaOptions, LISA_DEFAULT_INTERVAL, LISA_DEFAULT_LAYERS, LISA_FIELDS, lisaLayers, type LisaOptions } from './config.js';

const LAYER = /^layers\.(\d+)\.(.+)$/;

/** AdamW over LISA's slots, its step and state under the Optimizer interface. */
class LisaOptimizer implements Optimizer {
  constructor(
    readonly adam: AdamW,
    private readonly lisa: Lisa,
  ) {}

  get step(): number {
    return this.adam.step;
  }

  set step(s: number) {
    this.adam.step = s;
  }

  record(rec: CommandRecorder, lr: number, gradScale?: number): void {
    this.adam.record(rec, lr, gradScale);
  }

  skippedSteps(): Promise<number> {
    return this.adam.skippedSteps();
  }

  gradView(name: string): TensorView {
    const view = this.lisa.gradientOf(name);
    if (!view) throw new RangeError(`'${name}' is not among the tensors LISA trains at this step`);
    return view;
  }

  stateViews(): Map<string, TensorView> {
    return new Map([...this.adam.stateViews(), ...this.lisa.parkedViews()]);
  }

  destroy(): void {
    this.adam.destroy();
  }
}

export class Lisa implements Method {
  readonly name = 'lisa';
  readonly linear = null;
  /** Every base parameter: each may train over a run, and a checkpoint keeps them all. */
  readonly trainable: TrainableTensors;
  readonly step: TrainingStep;
  /** Gradient slots: 'slot<k>.<suffix>' for the k-th sampled layer, and the always-trained tensors by name. */
  readonly grads: Arena;
  /** 'keep': every layer's moments while it is frozen ('layers.<i>.<suffix>'). */
  private readonly parked: { m: Arena; v: Arena } | null;
  private readonly suffixes: string[];
  private readonly outsideNames: string[];
  private readonly layers: number;
  private readonly interval: number;
  private readonly seed: number;
  /** The layer bound to each slot, and the optimizer step that binding was made at. */
  private assigned: number[] = [];
  private activatedAt = -1;
  /** 'keep': updates each layer had in the periods before the current one (bias correction). */
  private updatesBefore = new Map<number, number>();
  private optimizer: LisaOptimizer | null = null;

  constructor(
    private readonly model: CausalLM,
    readonly options: LisaOptions,
  ) {
    this.layers = options.layers ?? LISA_DEFAULT_LAYERS;
    this.interval = options.interval ?? LISA_DEFAULT_INTERVAL;
    this.seed = options.seed ?? 0;
    const names = model.trainableNames;
    this.trainable = { names, param: (n) => model.params.view(n) };
    const size = (n: string) => model.params.view(n).size / 4;
    // A slot holds any layer: each suffix at its largest size over the layers.
    const slotLength = new Map<string, number>();
    for (const n of names) {
      const m = LAYER.exec(n);
      if (m) slotLength.set(m[2], Math.max(slotLength.get(m[2]) ?? 0, size(n)));
    }
    this.suffixes = [...slotLength.keys()];
    this.outsideNames = options.outside === false ? [] : names.filter((n) => !LAYER.test(n));
    const limit = bindingLimit(model.gpu).bytes;
    const slots = Array.from({ length: this.layers }, (_, k) => this.suffixes.map((s) => ({ name: `slot${k}.${s}`, length: slotLength.get(s)! }))).flat();
    this.grads = new Arena(model.gpu, planArena([...slots, ...this.outsideNames.map((n) => ({ name: n, length: size(n) }))], limit), 'lisa grads');
    try {
      if (options.moments === 'keep') {
        const layout = planArena(names.filter((n) => LAYER.test(n)).map((n) => ({ name: n, length: size(n) })), limit);
        const m = new Arena(model.gpu, layout, 'lisa parked m');
        try {
          this.parked = { m, v: new Arena(model.gpu, layout, 'lisa parked v') };
        } catch (e) {
          m.destroy();
          throw e;
        }
        const rec = model.gpu.recorder();
        for (const b of [...this.parked.m.buffers, ...this.parked.v.buffers]) rec.clear(b);
        void rec.submit();
      } else {
        this.parked = null;
      }
    } catch (e) {
      this.grads.destroy();
      throw e;
    }
    this.step = {
      record: (rec, ctx) => {
        if (!ctx.first) return backpropStep.record(rec, ctx);
        const activated = this.activatedAt;
        this.activate(rec, ctx.optimizer.step);
        try {
          return backpropStep.record(rec, ctx);
        } catch (e) {
          // The moments' turnover was recorded into a recorder that never runs: record it again next time.
          this.activatedAt = activated;
          throw e;
        }
      },
      probe: (rec, m, batch) => {
        // Binds the slots (the backward pass needs them) and leaves the moments to the step itself.
        this.assigned = this.layersAt(this.optimizer?.step ?? 0);
        return backpropStep.probe(rec, m, batch);
      },
    };
  }

  /** The layers trained at optimizer step `step` (0-based), ascending. */
  layersAt(step: number): number[] {
    return lisaLayers(this.seed, Math.floor(step / this.interval), this.model.config.numLayers, this.layers);
  }

  /** The engine tensor a slot or always-trained name stands for now. */
  private actual(name: string): string {
    const m = /^slot(\d+)\.(.+)$/.exec(name);
    return m ? `layers.${this.assigned[Number(m[1])]}.${m[2]}` : name;
  }

  /** Where the gradient of base parameter `name` accumulates now, or null while it is frozen. */
  gradientOf(name: string): TensorView | null {
    const m = LAYER.exec(name);
    if (!m) return this.grads.has(name) ? this.grads.view(name) : null;
    const k = this.assigned.indexOf(Number(m[1]));
    // A layer smaller than its slot uses the slot's start.
    return k < 0 ? null : { ...this.grads.view(`slot${k}.${m[2]}`), size: this.model.params.view(name).size };
  }

  /**
   * Binds the slots to the layers of `step`'s period. At a period's first step the moments turn over:
   * 'reset' clears them, 'keep' parks the leaving layers' and brings back the arriving ones'. A step
   * bound already (a probe before it) changes nothing.
   */
  private activate(rec: CommandRecorder, step: number): void {
    if (step === this.activatedAt) return;
    this.activatedAt = step;
    const next = this.layersAt(step);
    const adam = this.optimizer?.adam;
    if (adam && step % this.interval === 0) {
      const slots = next.map((_, k) => this.suffixes.map((s) => ({ s, ...adam.momentViews(`slot${k}.${s}`) })));
      const parked = this.parked;
      if (!parked) {
        for (const slot of slots.flat()) {
          rec.clear(slot.m);
          rec.clear(slot.v);
        }
      } else {
        // Every leaving layer's moments out before any arriving layer's in: a layer sampled again may
        // move to another slot.
        const move = (from: TensorView, to: TensorView) => rec.copy(from, to, Math.min(from.size, to.size));
        const previous = step > 0 ? this.layersAt(step - 1) : null;
        if (previous) slots.forEach((slot, k) => slot.forEach(({ s, m, v }) => {
          move(m, parked.m.view(`layers.${previous[k]}.${s}`));
          move(v, parked.v.view(`layers.${previous[k]}.${s}`));
        }));
        slots.forEach((slot, k) => slot.forEach(({ s, m, v }) => {
          move(parked.m.view(`layers.${next[k]}.${s}`), m);
          move(parked.v.view(`layers.${next[k]}.${s}`), v);
        }));
      }
    }
    this.assigned = next;
    if (this.parked) {
      // Updates each layer had in earlier periods: PyTorch's per-parameter step for its bias correction.
      const period = Math.floor(step / this.interval);
      this.updatesBefore = new Map(next.map((l) => [l, 0]));
      for (let p = 0; p < period; p++) for (const l of lisaLayers(this.seed, p, this.model.config.numLayers, this.layers)) if (this.updatesBefore.has(l)) this.updatesBefore.set(l, this.updatesBefore.get(l)! + this.interval);
    }
  }

  /** The bias-correction step of a slot's tensor at optimizer step `step` (1-based): its own updates. */
  private stepOf(name: string, step: number): number {
    const m = /^slot(\d+)\./.exec(name);
    if (!m) return step;
    const inPeriod = step - Math.floor((step - 1) / this.interval) * this.interval;
    return inPeriod + (this.parked ? this.updatesBefore.get(this.assigned[Number(m[1])]) ?? 0 : 0);
  }

  parkedViews(): Map<string, TensorView> {
    const out = new Map<string, TensorView>();
    if (!this.parked) return out;
    for (const n of this.trainable.names.filter((x) => LAYER.test(x))) {
      out.set(`${n}.parked_m`, this.parked.m.view(n));
      out.set(`${n}.parked_v`, this.parked.v.view(n));
    }
    return out;
  }

  createOptimizer(config: AdamWConfig): Optimizer {
    const names = [...Array.from({ length: this.layers }, (_, k) => this.suffixes.map((s) => `slot${k}.${s}`)).flat(), ...this.outsideNames];
    const decay = config.decay ?? decays;
    const adam = new AdamW(this.model.gpu, [{
      set: { names, param: (n) => this.model.params.view(this.actual(n)), grads: this.grads },
      stepOf: (n, step) => this.stepOf(n, step),
    }], { ...config, decay: (n) => decay(this.actual(n)) });
    this.optimizer = new LisaOptimizer(adam, this);
    this.model.baseGradients = (name) => this.gradientOf(name);
    return this.optimizer;
  }

  zeroGrads(rec: CommandRecorder): void {
    for (const b of this.grads.buffers) rec.clear(b);
  }

  /** State was restored: the next step binds its layers anew, turning the moments over if it starts a period. */
  trainableWritten(): void {
    this.activatedAt = -1;
  }

  interchangeName(): string | null {
    return null; // its tensors are base weights, named by the model's Hugging Face mappings
  }

  fromInterchangeName(): string | null {
    return null;
  }

  destroy(): void {
    if (this.model.baseGradients) this.model.baseGradients = null;
    this.grads.destroy();
    this.parked?.m.destroy();
    this.parked?.v.destroy();
  }
}

export const lisa: MethodDefinition<LisaOptions> = {
  name: 'lisa',
  summary: 'layerwise importance sampling: every weight, but only a few sampled layers (and the embeddings and head) train at a time',
  fields: LISA_FIELDS,
  // Full fine-tuning's rate: it updates the model's own weights with AdamW.
  learningRate: 2e-5,
  check: (config, options) => checkLisaOptions(config, options),
  baseTrainable: () => () => true,
  ownsBaseGradients: true,
  attach: (model, options) => new Lisa(model, options ?? {}),
};

export { lisaLayers, LISA_FIELDS, type LisaOptions };
