/**
 * Fine-tuning a causal LM: a model, a method (full or LoRA), AdamW with warmup and decay, global
 * gradient clipping and gradient accumulation. step(batch) runs one micro-batch and, every
 * `gradientAccumulation` micro-batches, the optimizer; it returns the micro-batch's mean loss.
 */
import { ShapeError } from '../errors.js';
import type { TensorView } from '../gpu/buffers.js';
import type { Gpu } from '../gpu/gpu.js';
import { bytesSource } from '../io/bytes.js';
import { InvalidModelFileError, readHeader, readTensorF32, writeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import { AdamW, type AdamWConfig } from '../optim/adamw.js';
import { learningRate, type ScheduleOptions } from '../optim/schedule.js';
import { Lora, type LoraOptions } from '../peft/lora.js';
import type { BatchInput, PreparedBatch } from '../model/batch.js';
import { CausalLM, openPretrained, type PretrainedOptions } from '../model/causal-lm.js';
import type { SourceLike } from '../io/sources.js';
import type { Checkpoint, LoadProgress } from '../model/checkpoint.js';

export interface FineTuneOptions {
  method: 'full' | 'lora';
  lora?: LoraOptions;
  optimizer?: AdamWConfig & ScheduleOptions;
  /** Micro-batches per optimizer step. Default 1. */
  gradientAccumulation?: number;
  onProgress?: (p: LoadProgress) => void;
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

export interface EvalResult {
  loss: number;
  /** Fraction of target tokens whose highest logit is the target (ties count as correct). */
  accuracy: number;
  tokens: number;
}

export class FineTuner {
  readonly lora: Lora | null;
  readonly optimizer: AdamW;
  private micro = 0;

  private constructor(
    readonly gpu: Gpu,
    readonly model: CausalLM,
    readonly options: FineTuneOptions,
  ) {
    this.lora = options.method === 'lora' ? new Lora(gpu, model.config, options.lora ?? { rank: 8 }) : null;
    try {
      this.optimizer = new AdamW(gpu, { ...this.trainable(), grads: this.lora?.grads ?? model.grads! }, options.optimizer);
    } catch (e) {
      this.lora?.destroy();
      throw e;
    }
    if (this.lora) model.transformer.adapter = this.lora;
  }

  /**
   * Load a model from a hub id or URL, a local folder or File objects and attach the method:
   * `await FineTuner.fromPretrained('Qwen/Qwen2-0.5B', { method: 'lora', lora: { rank: 16 } })`.
   */
  static async fromPretrained(source: SourceLike, options: FineTuneOptions & PretrainedOptions): Promise<FineTuner> {
    const { gpu, ckpt } = await openPretrained(source, options);
    try {
      return await FineTuner.create(gpu, ckpt, options);
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
    if (options.method !== 'full' && options.method !== 'lora') {
      throw new ShapeError(`unknown fine-tuning method '${String(options.method)}' (full, lora)`);
    }
    if (options.method === 'lora') Lora.check(ckpt.config, options.lora ?? { rank: 8 });
    const accumulation = options.gradientAccumulation ?? 1;
    if (!Number.isInteger(accumulation) || accumulation < 1) throw new ShapeError(`gradientAccumulation must be a positive integer, got ${accumulation}`);
    const model = await CausalLM.fromCheckpoint(gpu, ckpt, {
      trainable: options.method === 'full' ? () => true : () => false,
      onProgress: options.onProgress,
    });
    try {
      return new FineTuner(gpu, model, options);
    } catch (e) {
      model.destroy();
      throw e;
    }
  }

  private get accumulation(): number {
    return Math.max(1, this.options.gradientAccumulation ?? 1);
  }

  async step(input: BatchInput | PreparedBatch): Promise<StepResult> {
    const batch = this.model.prepare(input);
    const count = Math.max(batch.targetCount, 1);
    const rec = this.gpu.recorder();
    if (this.micro === 0) {
      this.model.zeroGrads(rec);
      this.lora?.zeroGrads(rec);
    }
    if (this.lora) {
      this.lora.training = true; // dropout on for this forward/backward pair only
      this.lora.beginStep();
    }
    let acts;
    try {
      acts = this.model.record(rec, batch, 1 / (count * this.accumulation));
    } finally {
      if (this.lora) this.lora.training = false;
    }
    let lr = 0;
    let updated = false;
    let losses: Float32Array;
    try {
      this.micro++;
      updated = this.micro === this.accumulation;
      if (updated) {
        this.micro = 0;
        lr = learningRate(this.optimizer.step + 1, this.options.optimizer ?? { lr: 1e-4 });
        this.optimizer.record(rec, lr);
      }
      await rec.submit();
      losses = await this.gpu.readF32(acts.v('losses'));
    } finally {
      acts.unpin();
    }
    return { loss: losses.reduce((a, b) => a + b, 0) / count, updated, lr, optimizerStep: this.optimizer.step };
  }

  async evaluate(input: BatchInput | PreparedBatch): Promise<EvalResult> {
    const batch = this.model.prepare(input);
    const rec = this.gpu.recorder();
    const acts = this.model.record(rec, batch);
    let losses: Float32Array;
    let stats: Float32Array;
    try {
      await rec.submit();
      [losses, stats] = await Promise.all([this.gpu.readF32(acts.v('losses')), this.gpu.readF32(acts.v('cestats'))]);
    } finally {
      acts.unpin();
    }
    let loss = 0;
    let correct = 0;
    for (let t = 0; t < batch.targets.length; t++) {
      if (batch.targets[t] < 0) continue;
      loss += losses[t];
      // The target's logit equals the running maximum exactly when it is the argmax.
      if (stats[3 * t + 2] >= stats[3 * t]) correct++;
    }
    const n = Math.max(batch.targetCount, 1);
    return { loss: loss / n, accuracy: correct / n, tokens: batch.targetCount };
  }

  /**
   * A tensor by Hugging Face name: a base weight (model.layers.0.self_attn.q_proj.weight, in HF layout)
   * or, with LoRA, an adapter tensor by its PEFT name (base_model.model....lora_A.weight).
   */
  async readTensor(name: string): Promise<Float32Array> {
    const lora = this.lora?.fromPeftName(name);
    if (lora) return this.gpu.readF32(this.lora!.params.view(lora));
    return this.model.readHf(name);
  }

  /** Overwrite a tensor by Hugging Face (or PEFT) name; sizes are checked. */
  writeTensor(name: string, data: Float32Array): void {
    const lora = this.lora?.fromPeftName(name);
    if (!lora) return this.model.writeHf(name, data);
    const view = this.lora!.params.view(lora);
    if (data.length * 4 !== view.size) throw new RangeError(`'${name}' needs ${view.size / 4} values, got ${data.length}`);
    this.gpu.write(view, data);
  }

  /** The trainable tensors (engine names) and where they live. */
  private trainable(): { names: string[]; param: (n: string) => TensorView } {
    const lora = this.lora;
    if (lora) return { names: lora.names, param: (n) => lora.params.view(n) };
    return { names: this.model.trainableNames, param: (n) => this.model.params.view(n) };
  }

  /**
   * The trainable state as safetensors bytes: each trainable tensor, its AdamW moments ('.adam_m',
   * '.adam_v') and, in the metadata, the method, optimizer step and pending micro-batches.
   */
  async saveState(): Promise<Uint8Array> {
    if (this.micro !== 0) throw new Error('saveState() in the middle of gradient accumulation; save after an optimizer step');
    const { names, param } = this.trainable();
    const tensors: Record<string, TensorToWrite> = {};
    for (const n of names) {
      const length = param(n).size / 4;
      tensors[n] = { dtype: 'F32', shape: [length], data: await this.gpu.readF32(param(n)) };
      tensors[`${n}.adam_m`] = { dtype: 'F32', shape: [length], data: await this.gpu.readF32(this.optimizer.m.view(n)) };
      tensors[`${n}.adam_v`] = { dtype: 'F32', shape: [length], data: await this.gpu.readF32(this.optimizer.v.view(n)) };
    }
    // Everything that shapes the next step is saved, so a resumed run continues exactly.
    const metadata: Record<string, string> = { format: 'webgpu-finetune', method: this.options.method, step: String(this.optimizer.step) };
    if (this.lora) metadata.dropout_round = String(this.lora.round);
    return writeSafetensors(tensors, metadata);
  }

  /** Restore state written by saveState() into a FineTuner created with the same model and options. */
  async loadState(bytes: Uint8Array): Promise<void> {
    const source = bytesSource('trainable state', bytes);
    const header = await readHeader(source);
    if (header.metadata.method !== this.options.method) {
      throw new InvalidModelFileError('trainable state', `was saved for method '${header.metadata.method}', this fine-tuner uses '${this.options.method}'`);
    }
    const counter = (key: string): number => {
      const text = header.metadata[key] ?? '0';
      if (!/^\d{1,15}$/.test(text)) throw new InvalidModelFileError('trainable state', `metadata '${key}' is not a step count`, 'metadata');
      return Number(text);
    };
    const step = counter('step');
    const round = counter('dropout_round');
    const { names, param } = this.trainable();
    // Check everything before writing anything, so a mismatched file changes nothing.
    for (const n of names) {
      for (const key of [n, `${n}.adam_m`, `${n}.adam_v`]) {
        const info = header.byName.get(key);
        if (!info || info.shape[0] * 4 !== param(n).size) throw new InvalidModelFileError('trainable state', `tensor '${key}' is missing or has the wrong size`);
      }
    }
    for (const n of names) {
      this.gpu.write(param(n), await readTensorF32(source, header.byName.get(n)!));
      this.gpu.write(this.optimizer.m.view(n), await readTensorF32(source, header.byName.get(`${n}.adam_m`)!));
      this.gpu.write(this.optimizer.v.view(n), await readTensorF32(source, header.byName.get(`${n}.adam_v`)!));
    }
    this.optimizer.step = step;
    if (this.lora) this.lora.round = round;
    this.micro = 0;
  }

  destroy(): void {
    this.optimizer.destroy();
    this.lora?.destroy();
    this.model.destroy();
  }
}
