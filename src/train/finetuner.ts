/**
 * Fine-tuning a causal LM: a model, a method from the registry (src/methods), its optimizer with warmup
 * and decay, global gradient clipping and gradient accumulation. step(batch) runs one micro-batch and,
 * every `gradientAccumulation` micro-batches, the optimizer; it returns the micro-batch's mean loss.
 * Nothing here knows a method by name.
 */
import { ShapeError } from '../errors.js';
import type { TensorView } from '../gpu/buffers.js';
import { brief } from '../io/strict-json.js';
import type { Gpu } from '../gpu/gpu.js';
import { bytesSource } from '../io/bytes.js';
import { InvalidModelFileError, readHeader, readIndexTensor, readTensorF32, writeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import type { AdamWConfig, Optimizer } from '../optim/adamw.js';
import { learningRate, type ScheduleOptions } from '../optim/schedule.js';
import type { Method, TrainingStep } from '../methods/method.js';
import { backpropStep } from './backprop-step.js';
import { methodDefinition, methodLearningRate, methodNames, METHODS, quantizableMethods, quantizedBaseConflict, type MethodName, type MethodOptions } from '../methods/registry.js';
import { checkOptionKeys, optionKeys } from '../util/options.js';
import { ADAMW_CONFIG_KEYS } from '../optim/adamw.js';
import { SCHEDULE_OPTION_KEYS } from '../optim/schedule.js';
import type { BatchInput, PreparedBatch } from '../model/batch.js';
import { CausalLM, openPretrained, PRETRAINED_OPTION_KEYS, type EvalResult, type Precision, type PretrainedOptions } from '../model/causal-lm.js';
import type { SourceLike } from '../io/sources.js';
import type { Checkpoint, LoadProgress } from '../model/checkpoint.js';
import { LINEAR_WEIGHT, type WeightFormat } from '../model/linear-weights.js';
import { paramSpecs } from '../model/layout.js';
import type { QuantizeOption } from '../model/quantized-weights.js';

/** State-file tensors holding the method's layout (Method.layout), by this prefix and the layout's names. */
const LAYOUT = 'layout.';

/**
 * The method by name and its options under the same name: `{ method: 'lora', lora: { rank: 16 } }` (a
 * method added with registerMethod: its name, and its options under it).
 */
export interface FineTuneOptions extends MethodOptions {
  method: MethodName;
  /** AdamW and the learning-rate schedule; defaults in AdamWConfig and ScheduleOptions, lr the method's (MethodDefinition.learningRate). */
  optimizer?: AdamWConfig & Omit<ScheduleOptions, 'lr'> & { lr?: number };
  /** How frozen linear weights are stored (CausalLMOptions.baseDtype): default each weight's checkpoint dtype. */
  baseDtype?: WeightFormat;
  /** Store the frozen linear weights 4-bit, quantized as they load (CausalLMOptions.quantize): QLoRA. */
  quantize?: QuantizeOption;
  /** 'mixed': 16-bit operands in every linear product, f32 masters and gradients (CausalLMOptions.precision). Default 'f32'. */
  precision?: Precision;
  /** Micro-batches per optimizer step. Default 1. */
  gradientAccumulation?: number;
  /** Recompute each layer in the backward pass instead of keeping its activations (CausalLM.gradientCheckpointing). Default false. */
  gradientCheckpointing?: boolean;
  onProgress?: (p: LoadProgress) => void;
}

/** Every key of FineTuneOptions but the methods' own (each method's options go under its name). */
export const FINE_TUNE_OPTION_KEYS = optionKeys<FineTuneOptions>()([
  'method', 'optimizer', 'baseDtype', 'quantize', 'precision', 'gradientAccumulation', 'gradientCheckpointing', 'onProgress', ...(Object.keys(METHODS) as MethodName[]),
]);

/**
 * Checks the keys of FineTuneOptions-like options (`known`: its keys, or a superset such as the
 * Trainer's), of the optimizer options, and that method options are the chosen method's own.
 */
export function checkFineTuneOptionKeys(where: string, options: FineTuneOptions, known: readonly string[], optimizerKeys: readonly string[] = [...ADAMW_CONFIG_KEYS, ...SCHEDULE_OPTION_KEYS]): void {
  checkOptionKeys(where, options, [...new Set([...known, ...methodNames()])]);
  checkOptionKeys('optimizer options', options.optimizer, optimizerKeys);
  methodDefinition(options.method); // a typed error naming the known methods
  for (const other of methodNames()) {
    if (other !== options.method && options[other] !== undefined) throw new ShapeError(`options under '${other}' are for method '${other}', but the method is '${options.method}'`);
  }
}

export interface StepResult {
  /** Mean loss over the micro-batch's target tokens (before this step's update). */
  loss: number;
  /** Whether this micro-batch completed an optimizer step. */
  updated: boolean;
  /** Learning rate of that step (0 when no update). */
  lr: number;
  optimizerStep: number;
}

/** A submitted micro-batch whose loss is still being read back. */
export interface PendingStep extends Omit<StepResult, 'loss'> {
  /** Tokens of the micro-batch that carry a target. */
  tokens: number;
  loss: Promise<number>;
}

export type { EvalResult };

export class FineTuner {
  /** The attached method: what trains and how it reaches the model's layers. */
  readonly method: Method;
  readonly optimizer: Optimizer;
  private micro = 0;
  /** Target tokens of the micro-batches recorded so far in this optimizer step: the gradient's divisor. */
  private stepTargets = 0;
  /** The factor the last optimizer step applied to the summed gradients (1 over its target tokens). */
  private lastGradScale = 0;
  /** Training passes so far: the pass index a method's per-pass randomness (dropout) derives from. */
  private passes = 0;

  private constructor(
    readonly gpu: Gpu,
    readonly model: CausalLM,
    readonly options: FineTuneOptions,
  ) {
    this.accumulation = options.gradientAccumulation ?? 1;
    const definition = methodDefinition(options.method);
    this.method = definition.attach(model, options[options.method]);
    try {
      // Mixed precision's f16 operands can overflow: such steps are skipped unless told otherwise.
      this.optimizer = this.method.createOptimizer({ ...options.optimizer, skipNonFinite: options.optimizer?.skipNonFinite ?? model.precision === 'mixed' });
    } catch (e) {
      this.method.destroy();
      throw e;
    }
    model.transformer.hooks = this.method.linear;
    model.gradientCheckpointing = options.gradientCheckpointing ?? false;
  }

  /**
   * Load a model from a hub id or URL, a local folder or File objects and attach the method:
   * `await FineTuner.fromPretrained('Qwen/Qwen2-0.5B', { method: 'lora', lora: { rank: 16 } })`.
   */
  static async fromPretrained(source: SourceLike, options: FineTuneOptions & PretrainedOptions): Promise<FineTuner> {
    checkFineTuneOptionKeys('FineTuner options', options, [...FINE_TUNE_OPTION_KEYS, ...PRETRAINED_OPTION_KEYS]);
    const { gpu: _gpu, hub: _hub, ...fineTune } = options;
    const { gpu, ckpt } = await openPretrained(source, options);
    try {
      return await FineTuner.create(gpu, ckpt, fineTune);
    } catch (e) {
      if (!options.gpu) gpu.destroy(); // a device made for this call goes with it
      throw e;
    }
  }

  /**
   * Load the checkpoint's weights and attach the method. Options are checked before any weight is read,
   * and a failure releases everything allocated so far.
   */
  static async create(gpu: Gpu, ckpt: Checkpoint, options: FineTuneOptions): Promise<FineTuner> {
    checkFineTuneOptionKeys('FineTuner options', options, FINE_TUNE_OPTION_KEYS);
    const definition = methodDefinition(options.method);
    const methodOptions = options[options.method];
    definition.check(ckpt.config, methodOptions);
    const accumulation = options.gradientAccumulation ?? 1;
    if (!Number.isInteger(accumulation) || accumulation < 1) throw new ShapeError(`gradientAccumulation must be a positive integer, got ${accumulation}`);
    const trainable = definition.baseTrainable(methodOptions);
    // A 4-bit checkpoint is quantized already.
    const quantize = options.quantize ?? ckpt.config.quantization;
    if (quantize !== undefined) {
      // The value is checked where it enters the model (CausalLM.fromCheckpoint); whether the method fits a 4-bit base, here.
      const linearWeights = paramSpecs(ckpt.config).map((s) => s.name).filter((n) => LINEAR_WEIGHT.test(n));
      const conflict = quantizedBaseConflict(definition, methodOptions, linearWeights);
      const asked = options.quantize !== undefined;
      if (conflict) throw new ShapeError(`${asked ? 'quantize makes the base 4-bit' : 'this checkpoint is 4-bit'}, and ${conflict}: ${asked ? 'drop quantize, or ' : ''}train with ${quantizableMethods().join(' or ')}`);
    }
    const needsRows = definition.prepare?.needed(methodOptions);
    if (needsRows) throw new ShapeError(needsRows);
    const model = await CausalLM.fromCheckpoint(gpu, ckpt, { trainable, gradients: !definition.forwardOnly && !definition.ownsBaseGradients, onProgress: options.onProgress, baseDtype: options.baseDtype, quantize: options.quantize, precision: options.precision });
    let ft: FineTuner;
    try {
      ft = new FineTuner(gpu, model, options);
    } catch (e) {
      model.destroy();
      throw e;
    }
    try {
      await ft.method.initialize?.();
    } catch (e) {
      ft.destroy();
      throw e;
    }
    return ft;
  }

  private accumulation: number;

  /** Micro-batches per optimizer step; changed only between optimizer steps. */
  /** Values the method trains (its f32 parameters' element count). */
  get trainableParameters(): number {
    const { names, param } = this.method.trainable;
    return names.reduce((s, n) => s + param(n).size / 4, 0);
  }

  get gradientAccumulation(): number {
    return this.accumulation;
  }

  set gradientAccumulation(n: number) {
    if (!Number.isInteger(n) || n < 1) throw new ShapeError(`gradientAccumulation must be a positive integer, got ${n}`);
    if (this.micro !== 0) throw new Error('gradientAccumulation changed in the middle of an accumulation');
    this.accumulation = n;
  }

  async step(input: BatchInput | PreparedBatch): Promise<StepResult> {
    const pending = this.submitStep(input);
    return { ...pending, loss: await pending.loss };
  }

  /**
   * Record and submit one micro-batch (and, when it completes an accumulation, the optimizer step)
   * without waiting for it: the loss arrives later, read back after the GPU finishes, so a caller
   * can submit the next micro-batch first and the GPU never waits on the host.
   */
  submitStep(input: BatchInput | PreparedBatch): PendingStep {
    const batch = this.model.prepare(input);
    const count = Math.max(batch.targetCount, 1);
    const rec = this.gpu.recorder();
    this.method.readyToTrain?.(rec);
    const first = this.micro === 0;
    if (first) this.stepTargets = 0;
    this.stepTargets += batch.targetCount;
    const micro = this.micro + 1;
    const updated = micro === this.accumulation;
    const lr = updated ? learningRate(this.optimizer.step, { ...this.options.optimizer, lr: this.options.optimizer?.lr ?? this.defaultLearningRate }) : 0;
    const gradScale = 1 / Math.max(this.stepTargets, 1);
    const step = this.trainingStep.record(rec, {
      method: this.method, model: this.model, batch, optimizer: this.optimizer, pass: { training: true, pass: this.passes + 1 }, first, update: updated ? { lr, gradScale } : null,
    });
    let lossSum: Promise<number>;
    try {
      void rec.submit();
    } finally {
      lossSum = step.finish();
    }
    if (updated) this.lastGradScale = gradScale;
    this.passes++;
    this.micro = updated ? 0 : micro;
    return { updated, lr, optimizerStep: this.optimizer.step, tokens: batch.targetCount, loss: lossSum.then((l) => l / count) };
  }

  /** How the method trains on a micro-batch: its own step, or backpropagation and the optimizer. */
  private get trainingStep(): TrainingStep {
    return this.method.step ?? backpropStep;
  }

  /** The peak learning rate of this method and options when none is given. */
  private get defaultLearningRate(): number {
    return methodLearningRate(methodDefinition(this.options.method), this.options[this.options.method]);
  }

  /**
   * The gradient of trainable tensor `name` (one of method.trainable.names) as the last optimizer step
   * applied it: the mean over that step's target tokens, before clipping.
   */
  async gradient(name: string): Promise<Float32Array> {
    if (this.micro !== 0) throw new Error('gradient() in the middle of gradient accumulation; read it after an optimizer step');
    const g = await this.gpu.readF32(this.optimizer.gradView(name));
    for (let i = 0; i < g.length; i++) g[i] *= this.lastGradScale;
    return g;
  }

  /**
   * Run a training pass of this batch's shape as the method's step records it (forward and backward
   * for backpropagation), without an update, and wait for it: what a batch of that shape allocates,
   * tried for real. Gradients it leaves are cleared by the next step,
   * and no counter moves, so training continues as if it never ran.
   */
  async probe(input: BatchInput | PreparedBatch): Promise<void> {
    if (this.micro !== 0) throw new Error('probe() in the middle of gradient accumulation');
    const batch = this.model.prepare(input);
    const rec = this.gpu.recorder();
    this.method.readyToTrain?.(rec);
    const release = this.trainingStep.probe(rec, this.model, batch);
    try {
      await rec.submit();
      await this.gpu.sync();
    } finally {
      release();
    }
  }

  /** Mean loss over the batch's target tokens and, unless `accuracy` is false, the token accuracy (one more readback). */
  evaluate(input: BatchInput | PreparedBatch, o: { accuracy?: boolean } = {}): Promise<EvalResult> {
    return this.model.evaluate(input, o);
  }

  /**
   * A tensor by name: a base weight by its Hugging Face name (model.layers.0.self_attn.q_proj.weight, in
   * HF layout), or a method's tensor by its interchange name (LoRA: the PEFT name,
   * base_model.model....lora_A.weight).
   */
  async readTensor(name: string): Promise<Float32Array> {
    const own = this.method.fromInterchangeName(name);
    if (own) return this.gpu.readF32(this.method.trainable.param(own));
    return this.model.readHf(name);
  }

  /** Overwrite a tensor by Hugging Face or interchange name; sizes are checked. */
  writeTensor(name: string, data: Float32Array): void {
    const own = this.method.fromInterchangeName(name);
    if (!own) {
      this.model.writeHf(name, data);
      this.method.baseWritten?.(this.model.enginePartsOf(name));
      return;
    }
    const view = this.method.trainable.param(own);
    if (data.length * 4 !== view.size) throw new RangeError(`'${name}' needs ${view.size / 4} values, got ${data.length}`);
    this.gpu.write(view, data);
    this.afterTrainableWritten();
  }

  private afterTrainableWritten(): void {
    this.model.weightsChanged();
    if (!this.method.trainableWritten) return;
    const rec = this.gpu.recorder();
    this.method.trainableWritten(rec);
    void rec.submit();
  }

  /**
   * The trainable state as safetensors bytes: each trainable tensor, the optimizer's state tensors
   * (AdamW: '<tensor>.adam_m', '<tensor>.adam_v') and, in the metadata, the method, the optimizer step and
   * the training pass count (dropout masks derive from it): everything that shapes the next step, so a
   * resumed run continues exactly.
   */
  async saveState(): Promise<Uint8Array> {
    if (this.micro !== 0) throw new Error('saveState() in the middle of gradient accumulation; save after an optimizer step');
    await this.method.layout?.settle();
    const tensors: Record<string, TensorToWrite> = {};
    for (const [name, view] of this.stateViews()) tensors[name] = { dtype: 'F32', shape: [view.size / 4], data: await this.gpu.readF32(view) };
    for (const [name, indices] of this.method.layout?.read() ?? []) tensors[`${LAYOUT}${name}`] = { dtype: 'U32', shape: [indices.length], data: indices };
    return writeSafetensors(tensors, {
      format: 'webgpu-finetune', method: this.options.method, step: String(this.optimizer.step), passes: String(this.passes),
    });
  }

  /** Restore state written by saveState() into a FineTuner created with the same model and options. */
  async loadState(bytes: Uint8Array): Promise<void> {
    const source = bytesSource('trainable state', bytes);
    const header = await readHeader(source);
    if (header.metadata.format !== 'webgpu-finetune') {
      throw new InvalidModelFileError('trainable state', `is not a webgpu-finetune state file (format '${brief(String(header.metadata.format))}')`, 'metadata');
    }
    if (header.metadata.method !== this.options.method) {
      throw new InvalidModelFileError('trainable state', `was saved for method '${brief(String(header.metadata.method))}', this fine-tuner uses '${this.options.method}'`);
    }
    const counter = (key: string): number => {
      const text = header.metadata[key] ?? '0';
      if (!/^\d{1,15}$/.test(text)) throw new InvalidModelFileError('trainable state', `metadata '${key}' is not a step count`, 'metadata');
      return Number(text);
    };
    const step = counter('step');
    // Files from before the pass count was saved under this name kept it as LoRA's 'dropout_round'.
    const passes = counter(header.metadata.passes === undefined ? 'dropout_round' : 'passes');
    const views = this.stateViews();
    // Check everything before writing anything, so a mismatched file changes nothing.
    for (const [name, view] of views) {
      const info = header.byName.get(name);
      if (!info || info.shape.length !== 1 || info.shape[0] * 4 !== view.size) throw new InvalidModelFileError('trainable state', `tensor '${name}' is missing or has the wrong size`);
    }
    // Where the values sit, when training moves it: the method moves there before they are written.
    const layout = new Map<string, Uint32Array>();
    for (const [name, info] of header.byName) if (name.startsWith(LAYOUT)) layout.set(name.slice(LAYOUT.length), await readIndexTensor(source, info));
    if (layout.size && !this.method.layout) throw new InvalidModelFileError('trainable state', 'holds a layout of trainable values this method does not have');
    await this.method.layout?.settle();
    const values = new Map<string, Float32Array>();
    for (const name of views.keys()) values.set(name, await readTensorF32(source, header.byName.get(name)!));
    if (this.method.layout) {
      try {
        this.method.layout.adopt(layout.size ? layout : this.method.layout.initial());
      } catch (e) {
        throw new InvalidModelFileError('trainable state', e instanceof Error ? e.message : String(e));
      }
    }
    for (const [name, view] of views) this.gpu.write(view, values.get(name)!);
    this.afterTrainableWritten();
    this.optimizer.step = step;
    this.passes = passes;
    this.micro = 0;
  }

  /** Every tensor the state holds: the trainable tensors and the optimizer's. */
  private stateViews(): Map<string, TensorView> {
    const { names, param } = this.method.trainable;
    return new Map([...names.map((n) => [n, param(n)] as const), ...this.optimizer.stateViews()]);
  }

  destroy(): void {
    this.optimizer.destroy();
    this.method.destroy();
    this.model.transformer.hooks = null;
    this.model.destroy();
  }
}
