/**
 * A causal LM on the GPU: parameters in an arena (engine layout, see layout.ts), gradients and optimizer
 * moments in arenas of the same layout for the trainable parameters, activation arenas per batch shape,
 * and the transformer's forward and backward passes. Tensors can be read and written by Hugging Face
 * name, converted through the layout mappings.
 */
import { view, type TensorView } from '../gpu/buffers.js';
import type { Gpu } from '../gpu/gpu.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { Arena, bindingLimit, planArena } from './arena.js';
import { prepareBatch, type BatchInput, type PreparedBatch } from './batch.js';
import { requestDevice } from '../gpu/device.js';
import { resolveSource, type HubOptions, type ModelSource, type SourceLike } from '../io/sources.js';
import { forEachTensor, openCheckpoint, type Checkpoint, type LoadProgress } from './checkpoint.js';
import type { ModelConfig, StoredQuantization } from './config.js';
import { checkBindingLimits } from './binding-limits.js';
import { hfMappings, hfToParts, paramSpecs, partsToHf, size, type HfMapping } from './layout.js';
import { shapesDigest, WeightsHasher, type ModelFingerprint } from './fingerprint.js';
import { Transformer, type ParamAccess, type TablePiece } from './transformer.js';
import { Activations, halfLinearInputs, type ActivationKind } from './activations.js';
import { EVAL_PASS, type PassContext } from '../methods/method.js';
import { BufferTooLargeError, FeatureUnavailableError, ShapeError } from '../errors.js';
import { checkOptionKeys, optionKeys } from '../util/options.js';
import { decodeHalves, encodeHalves, halfWeightFormats, LINEAR_WEIGHT, type HalfFormat, type LinearWeight, type WeightFormat } from './linear-weights.js';
import { packHalves } from '../kernels/cast.js';
import { checkQuantizeOption, checkQuantizeOptionKeys, quantizedModules, QuantizedWeights, type QuantizedModule, type QuantizeOption } from './quantized-weights.js';

export interface CausalLMOptions {
  /** Internal parameter names that train (kept f32, with gradients); default none (inference). */
  trainable?: (name: string) => boolean;
  /**
   * Whether trainable parameters get gradients. Default true; false for training from forward passes
   * alone (zeroth-order), which needs them f32 and writable but keeps no gradient memory.
   */
  gradients?: boolean;
  onProgress?: (p: LoadProgress) => void;
  /**
   * Bytes of activations kept for batch shapes seen before; the least recently used shapes are released
   * beyond it (the shape in use always stays). Default: the device's maxBufferSize, at least 256 MiB:
   * WebGPU reports no memory size, and the largest allocation it allows scales with the device.
   */
  activationCacheBytes?: number;
  /**
   * How frozen linear weights are stored: 'f32', or 16-bit 'bf16' / 'f16' read packed by the matmul (half
   * the memory; values rounded to the format). Default: each weight's checkpoint dtype (a BF16
   * checkpoint stays bf16). Trainable weights are always f32.
   */
  baseDtype?: WeightFormat;
  /**
   * Store the frozen linear weights 4-bit, quantized on the GPU as they load: 'nf4' (QLoRA's NormalFloat,
   * absmax per 64 values) or 'int4' (group-wise asymmetric, groups of 64 unless given). Embeddings, norms
   * and the LM head keep `baseDtype`; trainable weights stay f32.
   */
  quantize?: QuantizeOption;
  /**
   * 'mixed': the decoder's linear products (q, k, v, o and the MLP's) read f16 operands and accumulate in
   * f32, in the spirit of PyTorch's autocast. Frozen weights are stored f16 (unless `baseDtype` says
   * otherwise); each trainable linear weight keeps its f32 master, which the optimizer updates, and an f16
   * working copy the products read, refreshed from the master before each forward pass; the norms and the
   * MLP's activation write their outputs f16 (see Activations). Gradients stay f32. Needs the device
   * feature 'shader-f16' (FeatureUnavailableError otherwise); a 4-bit base is refused. Default 'f32'.
   */
  precision?: Precision;
}

export type Precision = 'f32' | 'mixed';
export const PRECISIONS: readonly Precision[] = ['f32', 'mixed'];

/** Checks a precision option and that the device can run it. */
export function checkPrecision(gpu: Gpu, precision: unknown): Precision {
  if (precision === undefined) return 'f32';
  if (!PRECISIONS.includes(precision as Precision)) throw new ShapeError(`precision must be one of ${PRECISIONS.join(', ')}, got ${JSON.stringify(precision)}`);
  if (precision === 'mixed' && !gpu.features.shaderF16) throw new FeatureUnavailableError('shader-f16', "precision 'mixed'");
  return precision as Precision;
}

/**
 * Shapes kept at most, whatever their size: training on packed rows reuses one shape, generation a few
 * (power-of-two prefills and one decode shape per batch size), so more than this is churn, not reuse.
 */
const MAX_CACHED_SHAPES = 8;

export function defaultActivationCacheBytes(gpu: Gpu): number {
  return Math.max(256 << 20, gpu.limits.maxBufferSize);
}

export interface EvalResult {
  loss: number;
  /** Fraction of target tokens whose highest logit is the target (ties count as correct); NaN when not asked. */
  accuracy: number;
  tokens: number;
  /** With `perRow`: each batch row's mean loss over its own targets (NaN for a row without any) and their count. */
  rows?: { loss: number; tokens: number }[];
}

/** Where fromPretrained factories load from and run on. */
export interface PretrainedOptions {
  /** Default: a new device from requestDevice() (the model's `gpu`; destroy it when done). */
  gpu?: Gpu;
  /** Hub endpoint and revision for hub ids and URLs. */
  hub?: HubOptions;
}

export const PRETRAINED_OPTION_KEYS = optionKeys<PretrainedOptions>()(['gpu', 'hub']);
export const CAUSAL_LM_OPTION_KEYS = optionKeys<CausalLMOptions>()(['trainable', 'gradients', 'onProgress', 'activationCacheBytes', 'baseDtype', 'quantize', 'precision']);

/** Resolves the source, opens its checkpoint, and gets a device when none was given. */
export async function openPretrained(source: SourceLike, options: PretrainedOptions): Promise<{ gpu: Gpu; ckpt: Checkpoint }> {
  const ckpt = await openCheckpoint(await resolveSource(source, options.hub));
  return { gpu: options.gpu ?? (await requestDevice()), ckpt };
}

/**
 * The embedding's and LM head's pieces: the whole tensor when one binding holds it, else row pieces of
 * at most `limit` bytes (a multiple of 64 rows, so the cross-entropy's vocabulary chunks stay aligned).
 */
export function tablePieces(config: ModelConfig, limit: number, halfWeights: ReadonlyMap<string, unknown>): Map<string, TablePiece[]> {
  const out = new Map<string, TablePiece[]>();
  for (const name of config.tieWordEmbeddings ? ['embed'] : ['embed', 'lm_head']) {
    const rowBytes = config.hiddenSize * (halfWeights.has(name) ? 2 : 4);
    const V = config.vocabSize;
    if (V * rowBytes <= limit) {
      out.set(name, [{ name, rows: V, rowStart: 0 }]);
      continue;
    }
    const fit = Math.floor(limit / rowBytes);
    const per = fit >= 64 ? fit - (fit % 64) : fit;
    if (per < 1) throw new BufferTooLargeError(`one row of '${name}'`, rowBytes, limit, 'storage binding limit');
    const pieces: TablePiece[] = [];
    for (let r = 0; r < V; r += per) pieces.push({ name: `${name}#${pieces.length}`, rows: Math.min(per, V - r), rowStart: r });
    out.set(name, pieces);
  }
  return out;
}

export class CausalLM {
  readonly transformer: Transformer;
  /** f32 parameters: every trainable one, and frozen ones not kept 16-bit. */
  readonly params: Arena;
  /** Frozen linear weights kept 16-bit, packed two per u32 (null when none). */
  readonly packed: Arena | null;
  /** Frozen linear weights kept 4-bit (null unless loaded with `quantize`). */
  readonly quantized: QuantizedWeights | null;
  /**
   * Mixed precision's f16 working copies of the trainable linear weights, packed two per u32 (null in
   * f32). The products read these; the f32 masters in `params` are what trains.
   */
  readonly working: Arena | null;
  /** Whether the working copies may lag their masters (see prepareWeights). */
  private workingStale = true;
  /** Gradients of the trainable parameters (null when nothing trains). */
  readonly grads: Arena | null;
  readonly trainableNames: string[];
  /**
   * The embedding and LM head as stored: one tensor, or ('embed#0', 'embed#1', ...) row pieces that each
   * fit a storage binding when the device's cannot hold the whole (the optimizer and checkpoints see
   * the pieces as tensors of their own; Hugging Face files see one tensor).
   */
  readonly tables: Map<string, TablePiece[]>;
  private readonly mappings: Map<string, HfMapping>;
  /** Element count of every parameter, by engine name. */
  private readonly sizes: Map<string, number>;
  /** Activation arenas by shape, least recently used first (Map order is insertion order). */
  private readonly activations = new Map<string, Activations>();
  readonly activationCacheBytes: number;
  /**
   * Gradient checkpointing: training passes keep only each layer's input and recompute the layer in the
   * backward pass (a third more compute, a fraction of the activation memory). Off by default; the
   * Trainer turns it on only when memory demands it.
   */
  gradientCheckpointing = false;
  /**
   * Where a method keeps the gradients of the base parameters itself, replacing the model's arena (LISA:
   * a few layers' worth of slots, reassigned as its layers change); null: the model's own `grads`.
   * Read each time a backward pass is recorded.
   */
  baseGradients: ((name: string) => TensorView | null) | null = null;
  private weightsDigest = '';
  /** Where the weights were loaded from (exports copy its tokenizer files), or null. */
  source: ModelSource | null = null;

  private constructor(
    readonly gpu: Gpu,
    readonly config: ModelConfig,
    trainable: (name: string) => boolean,
    activationCacheBytes?: number,
    /** Frozen linear weights kept 16-bit, by engine name. */
    private readonly halfWeights: Map<string, HalfFormat> = new Map(),
    quantize?: QuantizeOption | StoredQuantization,
    gradients = true,
    /** A 4-bit checkpoint's quantized modules (bitsandbytes may leave some linears 16-bit); null otherwise. */
    storedModules: QuantizedModule[] | null = null,
    readonly precision: Precision = 'f32',
  ) {
    const logicalSpecs = paramSpecs(config);
    // 4-bit takes every frozen linear weight; 16-bit storage keeps the rest it asked for.
    const quantizedShapes = new Map<string, [number, number]>();
    const storedParts = storedModules ? new Map(storedModules.flatMap((m) => m.parts.map((p) => [p.part, p] as const))) : null;
    if (quantize !== undefined) {
      // Checked where it entered (fromCheckpoint).
      for (const s of logicalSpecs) {
        if (LINEAR_WEIGHT.test(s.name) && !trainable(s.name) && (!storedParts || storedParts.has(s.name))) quantizedShapes.set(s.name, [s.shape[0], s.shape[1]]);
      }
      for (const name of quantizedShapes.keys()) halfWeights.delete(name);
    }
    const limit = bindingLimit(gpu).bytes;
    // The embedding and LM head are stored in row pieces when one binding cannot hold them.
    this.tables = tablePieces(config, limit, halfWeights);
    const split = new Set([...this.tables].filter(([, pieces]) => pieces.length > 1).map(([name]) => name));
    // Every other tensor must fit one binding: refused by name before anything is allocated.
    checkBindingLimits(gpu, config, { half: new Set(halfWeights.keys()), quantized: quantizedShapes, quantize: quantize === undefined ? null : checkQuantizeOption(quantize), parts: storedParts, split });
    const specs = logicalSpecs.flatMap((s) => (split.has(s.name) ? this.tables.get(s.name)!.map((p) => ({ name: p.name, shape: [p.rows, s.shape[1]] })) : [s]));
    for (const name of split) {
      const format = halfWeights.get(name);
      if (!format) continue;
      halfWeights.delete(name);
      for (const p of this.tables.get(name)!) halfWeights.set(p.name, format);
    }
    this.sizes = new Map(specs.map((s) => [s.name, size(s.shape)]));
    this.activationCacheBytes = activationCacheBytes ?? defaultActivationCacheBytes(gpu);
    // A piece trains as its table does (`trainable` names the whole, 'embed').
    this.trainableNames = specs.map((s) => s.name).filter((name) => trainable(name.replace(/#\d+$/, '')));
    const paramLayout = planArena(specs.filter((s) => !halfWeights.has(s.name) && !quantizedShapes.has(s.name)).map((s) => ({ name: s.name, length: size(s.shape) })), limit);
    const packedLayout = halfWeights.size ? planArena(specs.filter((s) => halfWeights.has(s.name)).map((s) => ({ name: s.name, length: Math.ceil(size(s.shape) / 2) })), limit) : null;
    const workingLayout = precision === 'mixed'
      ? planArena(this.trainableNames.filter((name) => LINEAR_WEIGHT.test(name)).map((name) => ({ name, length: Math.ceil(this.sizes.get(name)! / 2) })), limit)
      : null;
    const gradLayout = this.trainableNames.length && gradients
      ? planArena(this.trainableNames.map((name) => ({ name, length: this.sizes.get(name)! })), limit)
      : null;
    // A split table is one Hugging Face tensor in row parts, as a fused weight is.
    this.mappings = new Map(hfMappings(config).map((m) => {
      const pieces = m.parts.length === 1 && split.has(m.parts[0]) ? this.tables.get(m.parts[0])! : null;
      return [m.hfName, pieces ? { ...m, parts: pieces.map((p) => p.name), partRows: pieces.map((p) => p.rows) } : m];
    }));
    const access: ParamAccess = {
      param: (name) => this.f32Param(name),
      weight: (name) => this.linearWeight(name),
      grad: (name) => (this.baseGradients ? this.baseGradients(name) : this.grads?.has(name) ? this.grads.view(name) : null),
      has: (name) => this.params.has(name) || halfWeights.has(name) || quantizedShapes.has(name),
      pieces: (name) => this.tables.get(name) ?? [{ name, rows: config.vocabSize, rowStart: 0 }],
      prepareWeights: (rec, beforeTraining) => this.prepareWeights(rec, beforeTraining),
    };
    // Each allocation is undone if a later one fails, so a failed load leaves the device as it was.
    const made: { destroy(): void }[] = [];
    try {
      this.params = new Arena(gpu, paramLayout, 'params');
      made.push(this.params);
      this.packed = packedLayout ? new Arena(gpu, packedLayout, 'packed 16-bit weights') : null;
      if (this.packed) made.push(this.packed);
      this.quantized = quantize !== undefined ? new QuantizedWeights(gpu, quantizedShapes, quantize, storedParts ?? undefined) : null;
      if (this.quantized) made.push(this.quantized);
      this.working = workingLayout?.slots.size ? new Arena(gpu, workingLayout, 'f16 working copies') : null;
      if (this.working) made.push(this.working);
      this.grads = gradLayout ? new Arena(gpu, gradLayout, 'grads') : null;
      if (this.grads) made.push(this.grads);
      this.transformer = new Transformer(gpu, config, access);
    } catch (e) {
      for (const m of made) m.destroy();
      throw e;
    }
  }

  /**
   * Load a model for inference (or training, with `trainable`) from a hub id or URL, a local folder or
   * File objects: `await CausalLM.fromPretrained('Qwen/Qwen2-0.5B')`.
   */
  static async fromPretrained(source: SourceLike, options: CausalLMOptions & PretrainedOptions = {}): Promise<CausalLM> {
    checkOptionKeys('CausalLM options', options, [...CAUSAL_LM_OPTION_KEYS, ...PRETRAINED_OPTION_KEYS]);
    const { gpu: _gpu, hub: _hub, ...modelOptions } = options;
    const { gpu, ckpt } = await openPretrained(source, options);
    try {
      return await CausalLM.fromCheckpoint(gpu, ckpt, modelOptions);
    } catch (e) {
      if (!options.gpu) gpu.destroy(); // a device made for this call goes with it
      throw e;
    }
  }

  /** Stream a checkpoint's weights into a new model, tensor by tensor. */
  static async fromCheckpoint(gpu: Gpu, ckpt: Checkpoint, options: CausalLMOptions = {}): Promise<CausalLM> {
    checkOptionKeys('CausalLM options', options, CAUSAL_LM_OPTION_KEYS);
    // The one check of a user's quantize option: its keys, then its values.
    checkQuantizeOptionKeys(options.quantize);
    const asked = options.quantize === undefined ? null : checkQuantizeOption(options.quantize);
    const trainable = options.trainable ?? (() => false);
    const stored = ckpt.config.quantization;
    if (stored) {
      // A 4-bit checkpoint loads as it is: its linear weights stay 4-bit and frozen.
      const held = checkQuantizeOption(stored);
      if (asked && (asked.format !== held.format || (held.format === 'int4' && asked.groupSize !== held.groupSize) || asked.doubleQuant !== held.doubleQuant || held.bitsandbytes === 'fp4')) {
        const detail = held.format === 'int4' ? ` (groups of ${held.groupSize})` : held.doubleQuant ? ' (double-quantized)' : '';
        throw new ShapeError(`this checkpoint is already ${held.bitsandbytes === 'fp4' ? 'fp4 (bitsandbytes)' : held.format}${detail}; quantize cannot change it`);
      }
      const trained = paramSpecs(ckpt.config).find((s) => LINEAR_WEIGHT.test(s.name) && trainable(s.name));
      if (trained) throw new ShapeError(`this checkpoint's linear weights are ${stored.format} and stay frozen; '${trained.name}' cannot train (use LoRA)`);
    }
    const quantize = stored ?? options.quantize;
    const modules = stored ? quantizedModules(ckpt.config, stored) : [];
    const precision = checkPrecision(gpu, options.precision);
    // The 4-bit products dequantize into f32 and read f32 inputs: nothing of theirs would be f16.
    if (precision === 'mixed' && quantize !== undefined) throw new ShapeError("precision 'mixed' makes the linear products read f16 operands, and a 4-bit base is read by its own f32 products: train a 4-bit base in 'f32' precision");
    // Mixed precision stores the frozen weights f16 unless told otherwise.
    const baseDtype = options.baseDtype ?? (precision === 'mixed' ? 'f16' : undefined);
    const model = new CausalLM(gpu, ckpt.config, trainable, options.activationCacheBytes, halfWeightFormats(ckpt, trainable, baseDtype), quantize, options.gradients ?? true, stored ? modules : null, precision);
    // Shaders compile while the weights stream, so the first step does not wait for them.
    const warming = gpu.pipelines.warmModules();
    warming.catch(() => undefined); // a broken shader is reported by the step that uses it
    try {
      const hasher = new WeightsHasher();
      // A 4-bit checkpoint's packed arrays go to the GPU as stored (no quantization pass; a GPTQ file's
      // words rearranged), each weight once all its arrays are read.
      const present = (m: QuantizedModule) => m.tensors.filter((t) => ckpt.tensors.has(t.name));
      const packed = new Map(modules.flatMap((m) => present(m).map((t) => [t.name, { module: m, array: t.array }] as const)));
      const replaced = new Set(modules.map((m) => m.hfName));
      const pending = new Map<QuantizedModule, Record<string, Uint32Array | Uint8Array | Float32Array>>();
      await forEachTensor(ckpt, [...model.hfNames.filter((n) => !replaced.has(n)), ...packed.keys()], (name, data) => {
        hasher.add(name, data);
        const p = packed.get(name);
        if (!p) return model.writeHfParts(model.mapping(name), data as Float32Array);
        const arrays = pending.get(p.module) ?? {};
        pending.set(p.module, arrays);
        arrays[p.array] = data;
        if (present(p.module).every((t) => arrays[t.array])) {
          for (const part of p.module.toParts(arrays)) model.quantized!.writePacked(part.part, part.arrays);
          pending.delete(p.module);
        }
      }, options.onProgress);
      model.weightsDigest = hasher.digest();
      model.source = ckpt.source;
      model.quantized?.releaseStaging();
      await warming.catch(() => undefined);
    } catch (e) {
      model.destroy();
      throw e;
    }
    return model;
  }

  /** Identifies the base as loaded (config, shapes and weights), for files made for one model. */
  get fingerprint(): ModelFingerprint {
    return { shapes: shapesDigest(this.config), weights: this.weightsDigest };
  }

  get hfNames(): string[] {
    return [...this.mappings.keys()];
  }

  /** The engine parameters a Hugging Face tensor maps to (GPT-2's c_attn: three). */
  enginePartsOf(hfName: string): string[] {
    return [...this.mapping(hfName).parts];
  }

  private mapping(hfName: string): HfMapping {
    const m = this.mappings.get(hfName);
    if (!m) throw new Error(`'${hfName}' is not a tensor of this ${this.config.architecture}`);
    return m;
  }

  private writeHfParts(m: HfMapping, data: Float32Array): void {
    if (data.length !== size(m.hfShape)) throw new RangeError(`'${m.hfName}' needs ${size(m.hfShape)} values, got ${data.length}`);
    hfToParts(m, data).forEach((part, i) => this.writeParam(m.parts[i], part));
  }

  /** Overwrite a parameter by engine name, rounding to its storage format. */
  private writeParam(name: string, data: Float32Array): void {
    if (this.quantized?.has(name)) return this.quantized.write(name, data);
    const format = this.halfWeights.get(name);
    if (format) this.gpu.write(this.packed!.view(name), encodeHalves(data, format, name));
    else this.gpu.write(this.params.view(name), data);
    this.workingStale = true;
  }

  /**
   * Refresh the f16 working copies from their f32 masters (mixed precision): before every pass that may
   * train (anything recorded after it can update the masters), otherwise only when they may lag, so
   * generation's token-by-token passes cast once.
   */
  private prepareWeights(rec: CommandRecorder, beforeTraining: boolean): void {
    if (!this.working || (!beforeTraining && !this.workingStale)) return;
    for (const name of this.working.layout.slots.keys()) packHalves(rec, { x: this.params.view(name), y: this.working.view(name), n: this.sizes.get(name)!, format: 'f16' });
    this.workingStale = beforeTraining;
  }

  /** Masters changed outside this model's own writes (restored state): the next pass refreshes the copies. */
  weightsChanged(): void {
    this.workingStale = true;
  }

  /** Whether activation arenas keep the linear layers' norm and activation inputs f16 (mixed precision). */
  get halfActivations(): boolean {
    return halfLinearInputs(this.config, this.precision);
  }

  /** A parameter by engine name, as f32 values (16-bit weights widened on the host). */
  async readParam(name: string): Promise<Float32Array> {
    if (this.quantized?.has(name)) return this.quantized.read(name);
    const format = this.halfWeights.get(name);
    if (!format) return this.gpu.readF32(this.params.view(name));
    return decodeHalves(await this.gpu.read(this.packed!.view(name)), this.sizes.get(name)!, format);
  }

  /** A linear weight as the products read it: f32, packed 16-bit, or 4-bit. */
  linearWeight(name: string): LinearWeight {
    if (this.quantized?.has(name)) return { format: this.quantized.format, q4: this.quantized.get(name) };
    const format = this.halfWeights.get(name);
    if (format) return { view: this.packed!.view(name), format };
    return this.working?.has(name) ? { view: this.working.view(name), format: 'f16' } : { view: this.params.view(name), format: 'f32' };
  }

  /** An f32 parameter's view; a 16-bit weight has none, and a caller that would write f32 into it is refused. */
  f32Param(name: string): TensorView {
    if (this.quantized?.has(name)) throw new ShapeError(`'${name}' is stored ${this.quantized.format}; this operation needs an f32 weight (load the model without quantize)`);
    const format = this.halfWeights.get(name);
    if (format) throw new ShapeError(`'${name}' is stored as ${format}; this operation needs an f32 weight (load the model with baseDtype 'f32')`);
    return this.params.view(name);
  }

  /** Bytes of the linear-layer weights as stored (what a 16-bit base halves and a 4-bit one cuts further). */
  get linearWeightBytes(): number {
    let bytes = this.quantized?.bytes ?? 0;
    for (const [name, n] of this.sizes) if (LINEAR_WEIGHT.test(name) && !this.quantized?.has(name)) bytes += n * (this.halfWeights.has(name) ? 2 : 4);
    return bytes;
  }

  /** Bytes of every weight as stored on the GPU: f32, packed 16-bit, 4-bit and f16 working copies (gradients not included). */
  get weightBytes(): number {
    const arenas = [this.params, this.packed, this.working].reduce((n, a) => n + (a?.buffers.reduce((m, b) => m + b.size, 0) ?? 0), 0);
    return arenas + (this.quantized?.bytes ?? 0);
  }

  /** Overwrite a parameter by its Hugging Face name and layout. */
  writeHf(hfName: string, data: Float32Array): void {
    this.writeHfParts(this.mapping(hfName), data);
    this.quantized?.releaseStaging(); // a 4-bit weight was quantized through it; loading keeps it for the next tensor
  }

  /** A parameter in its Hugging Face name and layout. */
  async readHf(hfName: string, from: 'params' | 'grads' = 'params'): Promise<Float32Array> {
    const m = this.mapping(hfName);
    const arena = from === 'params' ? this.params : this.grads;
    if (!arena) throw new Error('this model has no gradients (nothing is trainable)');
    const parts = await Promise.all(m.parts.map((p) => (from === 'params' ? this.readParam(p) : this.gpu.readF32(arena.view(p)))));
    return partsToHf(m, parts);
  }

  /**
   * The activation arena of a (batch, sequence) shape, made on first use and kept for reuse: a training
   * arena (with backward scratch), or for evaluation and generation an inference arena unless the shape
   * already has a training one. Arenas of other shapes are released, least recently used first, to keep
   * the total within activationCacheBytes and at most MAX_CACHED_SHAPES shapes.
   */
  activationsFor(B: number, S: number, kind: ActivationKind = 'train'): Activations {
    // A training arena serves inference too: no second arena for evaluating a shape that trains.
    const keys: Record<ActivationKind, string> = { train: `${B}x${S}`, checkpointed: `${B}x${S} checkpointed`, inference: `${B}x${S} inference` };
    const trained = [keys.train, keys.checkpointed].find((k) => this.activations.has(k));
    const key = kind === 'inference' && trained ? trained : keys[kind];
    let acts = this.activations.get(key);
    if (acts) {
      this.activations.delete(key); // move to the most recently used end
    } else {
      const plan = Activations.plan(this.config, B, S, kind, this.halfActivations, this.gpu.tuning.attentionVariant);
      for (const b of Activations.buffersOf(plan)) this.gpu.checkBufferSize(b.bytes, `act ${b.name}`); // refuse before evicting anything
      if (kind !== 'inference') {
        // A training arena supersedes an inference one of the same shape (and one of the other training
        // kind): release it first, so the two never coexist and it is not counted against the budget.
        for (const k of [keys.inference, kind === 'train' ? keys.checkpointed : keys.train]) {
          this.activations.get(k)?.retire();
          this.activations.delete(k);
        }
      }
      const bytes = Activations.bytesOf(plan);
      let total = this.activationBytes;
      let count = this.activations.size;
      for (const [k, a] of this.activations) {
        if (total + bytes <= this.activationCacheBytes && count < MAX_CACHED_SHAPES) break;
        count--;
        a.retire(); // destroyed once no caller still reads it
        this.activations.delete(k);
        total -= a.bytes;
      }
      acts = new Activations(this.gpu, this.config, B, S, kind, this.halfActivations);
    }
    this.activations.set(key, acts);
    return acts;
  }

  /** Bytes held by cached activation arenas. */
  get activationBytes(): number {
    let total = 0;
    for (const a of this.activations.values()) total += a.bytes;
    return total;
  }

  /** Release every cached activation arena (each once no caller still reads it): after a failed try of a large shape. */
  releaseActivations(): void {
    for (const a of this.activations.values()) a.retire();
    this.activations.clear();
  }

  /** Shapes whose activations are cached, least recently used first ('BxS'). */
  get cachedShapes(): string[] {
    return [...this.activations.keys()];
  }

  /** Validate and plan a batch for this model; an already prepared batch is returned as is. */
  prepare(batch: BatchInput | PreparedBatch): PreparedBatch {
    return 'embedPlan' in batch ? batch : prepareBatch(batch, this.config.vocabSize, this.config.maxPositions);
  }

  zeroGrads(rec: CommandRecorder): void {
    if (this.grads) for (const b of this.grads.buffers) rec.clear(b);
  }

  /**
   * Record forward (and, with gradScale, backward) for a prepared batch, as the pass `pass` (a training
   * pass turns on the method's dropout). Gradients accumulate into the
   * grads arena; zero them first for a fresh step. Returns the activations holding the per-token losses,
   * pinned so that no call for another shape evicts them meanwhile: unpin() them once read.
   */
  record(rec: CommandRecorder, batch: PreparedBatch, gradScale?: number, pass: PassContext = EVAL_PASS): Activations {
    const acts = this.activationsFor(batch.B, batch.S, gradScale === undefined ? 'inference' : this.gradientCheckpointing ? 'checkpointed' : 'train');
    acts.pin();
    try {
      acts.load(this.gpu, batch);
      this.transformer.forward(rec, acts, pass);
      if (gradScale !== undefined) {
        if (!this.grads && !this.transformer.hooks && !this.baseGradients) throw new Error('no trainable parameters: nothing to differentiate');
        this.transformer.backward(rec, acts, gradScale, pass);
      }
    } catch (e) {
      acts.unpin();
      throw e;
    }
    return acts;
  }

  /** Mean loss over the batch's target tokens (and gradients of it, with `withGrad`). */
  async loss(input: BatchInput | PreparedBatch, withGrad = false): Promise<number> {
    const batch = this.prepare(input);
    const count = Math.max(batch.targetCount, 1);
    const rec = this.gpu.recorder();
    if (withGrad) this.zeroGrads(rec);
    const acts = this.record(rec, batch, withGrad ? 1 / count : undefined);
    let losses: Float32Array;
    try {
      await rec.submit();
      losses = await this.gpu.readF32(acts.losses);
    } finally {
      acts.unpin();
    }
    let sum = 0;
    for (const l of losses) sum += l;
    return sum / count;
  }

  /** Mean loss over the batch's target tokens and, unless `accuracy` is false, the token accuracy (one more readback). */
  async evaluate(input: BatchInput | PreparedBatch, o: { accuracy?: boolean; perRow?: boolean } = {}): Promise<EvalResult> {
    const batch = this.prepare(input);
    const rec = this.gpu.recorder();
    const acts = this.record(rec, batch);
    const withAccuracy = o.accuracy ?? true;
    let losses: Float32Array;
    let stats: Float32Array | null;
    try {
      await rec.submit();
      [losses, stats] = await Promise.all([this.gpu.readF32(acts.losses), withAccuracy ? this.gpu.readF32(acts.cestats) : null]);
    } finally {
      acts.unpin();
    }
    let loss = 0;
    let correct = 0;
    const rows = o.perRow ? Array.from({ length: batch.B }, () => ({ loss: 0, tokens: 0 })) : null;
    for (let t = 0; t < batch.targets.length; t++) {
      if (batch.targets[t] < 0) continue;
      loss += losses[t];
      // The target's logit equals the running maximum exactly when it is the argmax.
      if (stats && stats[3 * t + 2] >= stats[3 * t]) correct++;
      if (rows) {
        const row = rows[Math.floor(t / batch.S)];
        row.loss += losses[t];
        row.tokens++;
      }
    }
    const n = Math.max(batch.targetCount, 1);
    const result: EvalResult = { loss: loss / n, accuracy: stats ? correct / n : NaN, tokens: batch.targetCount };
    if (rows) result.rows = rows.map((r) => ({ loss: r.tokens ? r.loss / r.tokens : NaN, tokens: r.tokens }));
    return result;
  }

  /**
   * The logits of every position, [B * S, vocab] row-major: what transformers' `model(ids).logits`
   * returns, for scoring and for comparing with other implementations. Rows are computed in chunks that
   * fit a binding, so a long batch over a large vocabulary never needs one [T, vocab] buffer.
   */
  async logits(input: BatchInput | PreparedBatch): Promise<Float32Array> {
    const batch = this.prepare(input);
    const { hiddenSize: H, vocabSize: V } = this.config;
    const T = batch.B * batch.S;
    const chunkRows = Math.max(1, Math.min(T, Math.floor(this.gpu.limits.maxStorageBufferBindingSize / (V * 4))));
    this.gpu.checkBufferSize(chunkRows * V * 4, 'logits');
    const hidden = this.gpu.createBuffer(chunkRows * H * 4, undefined, 'logits hidden');
    const out = new Float32Array(T * V);
    let logits: GPUBuffer | null = null;
    const acts = this.activationsFor(batch.B, batch.S, 'inference');
    acts.pin();
    try {
      logits = this.gpu.createBuffer(chunkRows * V * 4, undefined, 'logits');
      acts.load(this.gpu, batch);
      const first = this.gpu.recorder();
      this.transformer.forwardHidden(first, acts);
      for (let r0 = 0; r0 < T; r0 += chunkRows) {
        const rec = r0 === 0 ? first : this.gpu.recorder();
        const rows = Math.min(chunkRows, T - r0);
        rec.copy(view(acts.lnf, r0 * H * 4, rows * H * 4), view(hidden, 0, rows * H * 4), rows * H * 4);
        this.transformer.logits(rec, view(hidden, 0, rows * H * 4), view(logits, 0, rows * V * 4), rows);
        await rec.submit();
        out.set((await this.gpu.readF32(logits)).subarray(0, rows * V), r0 * V);
      }
    } finally {
      acts.unpin();
      this.gpu.destroyBuffer(hidden);
      if (logits) this.gpu.destroyBuffer(logits);
    }
    return out;
  }

  /** Gradient of a parameter by internal name (engine layout). */
  gradView(name: string): TensorView | null {
    return this.grads?.has(name) ? this.grads.view(name) : null;
  }

  destroy(): void {
    for (const a of this.activations.values()) a.destroy();
    this.activations.clear();
    this.params.destroy();
    this.packed?.destroy();
    this.quantized?.destroy();
    this.working?.destroy();
    this.grads?.destroy();
    this.transformer.destroy();
  }
}
