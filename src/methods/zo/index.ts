/**
 * Zeroth-order fine-tuning as a registered method: forward passes only (MeZO), training what another
 * method trains: LoRA's adapters (over a frozen base, 16- or 4-bit), the full model, a sparse mask in
 * place (Sparse-MeZO), or a 4-bit NF4 base's block scales (QZO). One folder, not one per variant,
 * because the variants differ only in what they perturb, and that is exactly what the existing methods
 * already describe: the adapter, mask and their files come from the method trained (options in
 * ./config.ts, the step and ZO-SGD in ./step.ts).
 */
import { ShapeError } from '../../errors.js';
import { quantizedModelFiles } from '../../train/export.js';
import type { CommandRecorder } from '../../gpu/recorder.js';
import { asView, type TensorView } from '../../gpu/buffers.js';
import type { CausalLM } from '../../model/causal-lm.js';
import type { AdamWConfig, Optimizer } from '../../optim/adamw.js';
import type { Method, MethodDefinition, TrainableTensors, TrainingStep } from '../method.js';
import { lora } from '../lora/index.js';
import { initMutatesBase } from '../lora/init.js';
import { sparse } from '../sparse/index.js';
import { checkZoOptions, defaultEpsilon, defaultZoLearningRate, ZO_DEFAULT_DIRECTIONS, ZO_DEFAULT_TARGET, ZO_FIELDS, type ZoOptions, type ZoTarget } from './config.js';
import { ZoSgd, zoStep } from './step.js';

/**
 * Tensors of the model itself as a method that hooks, merges and renames nothing: what ZO trains for the
 * targets 'full' (every base parameter) and 'quantized' (see quantizedScales).
 */
class ModelTensors implements Method {
  readonly linear = null;

  constructor(
    readonly name: string,
    readonly trainable: TrainableTensors,
  ) {}

  createOptimizer(): Optimizer {
    throw new Error('unused: zeroth-order training brings its own update');
  }

  zeroGrads(): void {}

  interchangeName(): string | null {
    return null;
  }

  fromInterchangeName(): string | null {
    return null;
  }

  destroy(): void {}
}

/**
 * A 4-bit NF4 base's block scales (each weight's absmax, f32 [out, in / 64]) as what trains: QZO's
 * adaptation of the quantized model itself, its codes unchanged. A 4-bit checkpoint saved from the model
 * (quantizedModelFiles) carries the trained scales.
 */
function quantizedScales(model: CausalLM): ModelTensors {
  const q = model.quantized;
  const why = !q ? 'a 4-bit base: load with quantize \'nf4\' (or a 4-bit NF4 checkpoint)'
    : q.format !== 'nf4' ? `an NF4 base, and this one is ${q.format} (its scales are f16 pairs)`
    : q.doubleQuant ? 'an NF4 base with f32 scales, and this one is double-quantized (8-bit scales)'
    : q.bitsandbytes ? 'an NF4 base in this engine\'s layout, and this one is a bitsandbytes checkpoint\'s (blocks across rows, its own code tables), which this target cannot save' : null;
  if (why) throw new ShapeError(`the zeroth-order target 'quantized' trains the block scales of ${why}`);
  const views = new Map(q!.names.map((w) => {
    const weight = q!.get(w);
    if (weight.format !== 'nf4') throw new Error('unreachable: an NF4 base holds NF4 weights');
    return [`${w}.absmax` as string, { ...asView(weight.absmax), size: weight.layout.N * weight.layout.blocksPerRow * 4 }] as const;
  }));
  return new ModelTensors('quantized', { names: [...views.keys()], param: (n) => views.get(n)! });
}

/** The method ZO trains, with its hooks, merging and names; its step and update are ZO's. */
export class ZeroOrder implements Method {
  readonly name = 'zo';
  readonly step: TrainingStep;
  private optimizer: ZoSgd | null = null;

  constructor(
    readonly target: ZoTarget,
    /** What trains: a LoRA adapter, a sparse method, the full model's parameters or a 4-bit base's scales. */
    readonly inner: Method,
    private readonly options: ZoOptions,
    readonly model: CausalLM,
  ) {
    this.step = zoStep(() => {
      if (!this.optimizer) throw new Error('zeroth-order step before its optimizer was made');
      return this.optimizer;
    }, inner.trainableWritten ? (rec) => inner.trainableWritten!(rec) : undefined);
  }

  get linear() {
    return this.inner.linear;
  }

  get trainable(): TrainableTensors {
    return this.inner.trainable;
  }

  createOptimizer(config: AdamWConfig): Optimizer {
    this.optimizer?.destroy();
    this.optimizer = new ZoSgd(this.model.gpu, this.inner.trainable, {
      epsilon: this.options.epsilon ?? defaultEpsilon(this.target),
      directions: this.options.directions ?? ZO_DEFAULT_DIRECTIONS,
      seed: this.options.seed ?? 0,
    }, config);
    return this.optimizer;
  }

  async initialize(): Promise<void> {
    await this.inner.initialize?.();
  }

  baseWritten(names: string[]): void {
    this.inner.baseWritten?.(names);
  }

  zeroGrads(_rec: CommandRecorder): void {} // no gradients

  readyToTrain(rec: CommandRecorder): void {
    this.inner.readyToTrain?.(rec);
  }

  trainableWritten(rec: CommandRecorder): void {
    this.inner.trainableWritten?.(rec);
  }

  get setMerged(): ((rec: CommandRecorder, merged: boolean) => void) | undefined {
    return this.inner.setMerged?.bind(this.inner);
  }

  get deltaWeight(): ((rec: CommandRecorder, weight: string, out: TensorView, base?: TensorView) => boolean) | undefined {
    return this.inner.deltaWeight?.bind(this.inner);
  }

  interchangeName(name: string): string | null {
    return this.inner.interchangeName(name);
  }

  fromInterchangeName(name: string): string | null {
    return this.inner.fromInterchangeName(name);
  }

  destroy(): void {
    this.optimizer?.destroy();
    this.inner.destroy();
  }
}

const targetOf = (o: ZoOptions | undefined): ZoTarget => o?.target ?? ZO_DEFAULT_TARGET;

/** The registered method ZO trains for a target ('full' and 'quantized' have none: their tensors are the model's). */
const innerDefinition = (o: ZoOptions | undefined) => (targetOf(o) === 'sparse' ? sparse : targetOf(o) === 'lora' ? lora : null);

export const zo: MethodDefinition<ZoOptions> = {
  name: 'zo',
  summary: 'zeroth-order (MeZO): two forward passes per step estimate the gradient along a random direction; inference memory, no backward',
  fields: ZO_FIELDS,
  learningRate: (o) => defaultZoLearningRate(targetOf(o)),
  forwardOnly: true,
  prepare: {
    needed: (o) => (targetOf(o) === 'sparse' ? sparse.prepare!.needed(o?.sparse) : null),
    run: async (o, context) => {
      const prepared = await sparse.prepare!.run(o?.sparse, context);
      return { ...prepared, options: { ...o, sparse: prepared.options } };
    },
  },
  check: (config, o) => void checkZoOptions(config, o),
  baseTrainable: (o) => (targetOf(o) === 'full' ? () => true : () => false),
  // Sparse trains inside the base; PiSSA and OLoRA rewrite it into their residual.
  writesBase: (o) => targetOf(o) === 'sparse' || (targetOf(o) === 'lora' && initMutatesBase(o?.lora?.init)),
  attach: (model, o) => {
    const target = targetOf(o);
    const inner = target === 'full' ? new ModelTensors('full', { names: model.trainableNames, param: (n) => model.params.view(n) })
      : target === 'quantized' ? quantizedScales(model)
      : innerDefinition(o)!.attach(model, target === 'lora' ? o?.lora : o?.sparse);
    return new ZeroOrder(target, inner, o ?? {}, model);
  },
  checkpointFiles: (method, config) => {
    const m = method as ZeroOrder;
    return innerDefinition({ target: m.target })?.checkpointFiles?.(m.inner, config) ?? {};
  },
  restoreOptions: async (o, files, config) => (targetOf(o) === 'sparse' ? { ...o, sparse: await sparse.restoreOptions!(o?.sparse, files, config) } : o ?? {}),
  // What the target trains, in its format; for the block scales, the 4-bit checkpoint that holds them.
  exportFiles: async (method, config, o) => {
    const m = method as ZeroOrder;
    if (m.target === 'quantized') return quantizedModelFiles(m.model);
    return (await innerDefinition({ target: m.target })?.exportFiles?.(m.inner, config, o)) ?? null;
  },
};

export { ZoSgd, zoStep, type ZoOptions, type ZoTarget };
export { defaultEpsilon, defaultZoLearningRate, ZO_FIELDS, ZO_TARGETS } from './config.js';
