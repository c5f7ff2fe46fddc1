/**
 * The seam every fine-tuning method plugs into, after PEFT's tuners/<method>/{config, layer, model}:
 * a method is a folder under src/methods with a MethodDefinition (options checked before any weight
 * loads, which base parameters need dense gradients, how to attach), and the Method it attaches: the
 * hooks it places in linear layers, the tensors it trains with their optimizer, merging, and the names
 * its tensors have in other tools. The registry (./registry.ts) lists the definitions; FineTuner, the
 * command line, the benchmarks and the demo read it and know no method by name.
 */
import type { BufferLike, TensorView } from '../gpu/buffers.js';
import type { Gpu } from '../gpu/gpu.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import type { LowRankTerm } from '../kernels/matmul.js';
import type { CausalLM } from '../model/causal-lm.js';
import type { ModelConfig } from '../model/config.js';
import type { Activations } from '../model/activations.js';
import type { PreparedBatch } from '../model/batch.js';
import type { Checkpoint } from '../model/checkpoint.js';
import type { TrainingData } from '../data/dataset.js';
import type { ProgressEvent } from '../train/progress.js';
import { AdamW, type AdamWConfig, type Optimizer, type TrainableSet } from '../optim/adamw.js';
import type { OptionField } from './fields.js';

export type { Optimizer, TrainableSet };

/** What a method trains, by name: FineTuner saves, restores, reads and writes these. */
export interface TrainableTensors {
  names: string[];
  param(name: string): TensorView;
}

/**
 * What one forward/backward pass tells the methods: whether it trains (dropout and similar apply) and
 * its index among training passes, from which per-pass randomness (dropout masks) derives. Passing it
 * explicitly keeps a pass's behaviour independent of call order, and makes it reproducible on resume.
 */
export interface PassContext {
  training: boolean;
  pass: number;
}

export const EVAL_PASS: PassContext = { training: false, pass: 0 };

type View = TensorView;

/**
 * Hooks a method places in the model's linear layers (engine names such as 'layers.0.q'). Each is
 * optional; the transformer calls what a method provides and does the base work itself.
 */
export interface LinearHooks {
  /** Whether the hooks act on linear `name` now (e.g. not while an adapter is merged). */
  has(name: string): boolean;
  /** Fuse returned terms into the base matmul's store (true), or apply them as separate passes. */
  readonly fused: boolean;
  /** Records the method's forward work and returns a low-rank term added to the output (LoRA), if any here. */
  outputTerm?(rec: CommandRecorder, acts: Activations, name: string, x: View, outDim: number, inDim: number, pass: PassContext): LowRankTerm | undefined;
  /**
   * Records what adds the hooks' own contribution into y after the base product and its bias (an adapter
   * cache's per-row adapters, gathered from a pool); forward only: a hook with it does not train.
   */
  outputAdd?(rec: CommandRecorder, acts: Activations, name: string, x: View, y: View, outDim: number, inDim: number, pass: PassContext): void;
  /** Records the method's own gradients and returns a term added to the input gradient dx (LoRA), if any here. */
  inputGradTerm?(rec: CommandRecorder, acts: Activations, name: string, x: View, dy: View, outDim: number, inDim: number, pass: PassContext): LowRankTerm | undefined;
  /**
   * outputTerm of several layers that read one input (q, k and v), in order, their products grouped: what
   * a fused method gives so the transformer can group the layers' products too. Every name is one `has`.
   */
  outputTerms?(rec: CommandRecorder, acts: Activations, mods: { name: string; outDim: number }[], x: View, inDim: number, pass: PassContext): (LowRankTerm | undefined)[];
  /** inputGradTerm of several layers that read one input, in order, their products grouped. */
  inputGradTerms?(rec: CommandRecorder, acts: Activations, mods: { name: string; dy: View; outDim: number }[], x: View, inDim: number, pass: PassContext): (LowRankTerm | undefined)[];
  /**
   * A per-column scale on the output, y = s ⊙ (x W^T + term) + b (DoRA: magnitude over the column norm
   * of W + ΔW). Called in the forward pass (in a training arena, `acts.grad`, the layer keeps its unscaled
   * output z in `saved`) and again in the backward pass, where the layer takes dz = dy ⊙ s for every
   * gradient below the scale (input, term, weight) and, given `scaleGrad`, accumulates ds += Σ dy ⊙ z.
   */
  outputScale?(rec: CommandRecorder, acts: Activations, name: string, outDim: number, pass: PassContext, phase: 'forward' | 'backward'): ColumnScale;
  /**
   * Computes the weight gradient the method's way (sparse: only at its mask) instead of the dense
   * dW += dy^T x; returns true when it did, and the transformer then skips the dense product.
   */
  weightGradient?(rec: CommandRecorder, acts: Activations, name: string, x: View, dy: View, outDim: number, inDim: number, pass: PassContext): boolean;
}

/** What a method's outputScale hook hands the layer; buffers are the method's, sized for `acts`. */
export interface ColumnScale {
  /** s, one per output column. */
  scale: BufferLike;
  /** [T, outDim]: where the layer keeps z = x W^T + term for the backward pass (training arenas only). */
  saved?: BufferLike;
  /** Backward: [T, outDim] room for dz = dy ⊙ s. */
  dz?: BufferLike;
  /** Backward: ds accumulates Σ over tokens of dy ⊙ z here; absent when s does not train. */
  scaleGrad?: BufferLike;
  /** Backward: each column's sum divided by this first (DoRA: s = m / n, n constant, trains m). */
  scaleGradDivisor?: BufferLike;
}

/** What a training step is given for one micro-batch. */
export interface StepContext {
  readonly method: Method;
  readonly model: CausalLM;
  readonly batch: PreparedBatch;
  readonly optimizer: Optimizer;
  /** The training pass this micro-batch is (per-pass randomness such as dropout derives from it). */
  readonly pass: PassContext;
  /** The first micro-batch of an optimizer step: what accumulates over the step starts from zero. */
  readonly first: boolean;
  /**
   * Set when this micro-batch completes an optimizer step: record the update at rate `lr`, with what was
   * accumulated scaled by `gradScale` (1 over the step's target tokens: accumulations hold sums).
   */
  readonly update: { lr: number; gradScale: number } | null;
}

/** One recorded micro-batch. */
export interface RecordedStep {
  /**
   * Called once, right after the recorder was submitted: queues the readback of the micro-batch's token
   * losses summed over its targets, and releases what the step held for it.
   */
  finish(): Promise<number>;
}

/**
 * How a method trains on a micro-batch, when not by backpropagation (src/train/backprop-step.ts, the
 * default): zeroth-order's perturbed forward passes, a schedule of trainable layers. The step owns what
 * it records; FineTuner keeps the counters, the schedule, accumulation and state.
 */
export interface TrainingStep {
  record(rec: CommandRecorder, ctx: StepContext): RecordedStep;
  /**
   * Records a pass that allocates what `record` allocates for this batch's shape, changing no state
   * (automatic batch size tries shapes with it); returns what releases it once the recorder ran.
   */
  probe(rec: CommandRecorder, model: CausalLM, batch: PreparedBatch): () => void;
}

export interface Method {
  readonly name: string;
  /** How it trains on a micro-batch; absent: backpropagation and the optimizer. */
  readonly step?: TrainingStep;
  /** Hooks in linear layers, or null when the method trains base parameters directly (full). */
  readonly linear: LinearHooks | null;
  /** What trains. */
  readonly trainable: TrainableTensors;
  /** The update rule of the trainable set (dense AdamW unless the method brings its own). */
  createOptimizer(config: AdamWConfig): Optimizer;
  /**
   * Where the trainable values sit, when training moves it (a sparse mask under drop-and-regrow): state
   * files carry it as index arrays by name, and loading one moves the method there first. `adopt` checks
   * the whole layout before it changes anything.
   */
  readonly layout?: {
    read(): Map<string, Uint32Array>;
    /** The layout attached with: what a state file without one was saved over. */
    initial(): Map<string, Uint32Array>;
    adopt(layout: ReadonlyMap<string, Uint32Array>): void;
    /** Waits for a move in flight, so that what is read next is in one layout's order. */
    settle(): Promise<void>;
  };
  /**
   * Work after attaching that reads the model back (PiSSA's decomposition of the base weights), awaited
   * by FineTuner.create before anything trains or is restored.
   */
  initialize?(): Promise<void>;
  /** Clear the gradients the method owns (the model clears the base gradients). */
  zeroGrads(rec: CommandRecorder): void;
  /**
   * Records what returns the method to its training state before a training pass (an adapter taken out
   * of the weights, sparse values put back in); nothing when already there.
   */
  readyToTrain?(rec: CommandRecorder): void;
  /**
   * Called after its trainable tensors were overwritten from outside (state restored, a tensor written):
   * bring what derives from them up to date (sparse: write the values into the weights when merged).
   */
  trainableWritten?(rec: CommandRecorder): void;
  /**
   * Called after base parameters (engine names) were overwritten from outside (FineTuner.writeTensor):
   * bring what the method measured of them up to date (DoRA: the weights' row norms).
   */
  baseWritten?(names: string[]): void;
  /**
   * Fold the method's change into the base weights, or take it out again (restoring the base); absent
   * when nothing merges. A method that trains inside the weights (sparse) starts merged.
   */
  setMerged?(rec: CommandRecorder, merged: boolean): void;
  /**
   * Records the change the method makes to base weight `weight` (engine name, e.g. 'layers.0.q.weight')
   * into `out` (the weight's shape); returns false, writing nothing, for weights it leaves alone. A change
   * that depends on the weight itself (DoRA's rescaling) reads `base`, the weight in f32, when given.
   */
  deltaWeight?(rec: CommandRecorder, weight: string, out: View, base?: View): boolean;
  /** The name other tools give one of its tensors (PEFT's, for adapters), or null. */
  interchangeName(name: string): string | null;
  /** The method's tensor with that interchange name, or null. */
  fromInterchangeName(name: string): string | null;
  destroy(): void;
}

/** What a method's preparation on the training rows may use (see MethodDefinition.prepare). */
export interface PrepareContext {
  gpu: Gpu;
  ckpt: Checkpoint;
  data: TrainingData;
  onProgress?: (event: ProgressEvent) => void;
}

/** What a preparation made: the options to attach with, and one line for the user ('mask', '...'). */
export interface Prepared<Options> {
  options: Options;
  report: { label: string; text: string };
}

export interface MethodDefinition<Options = unknown> {
  readonly name: string;
  /** One line for help texts and the demo. */
  readonly summary: string;
  /**
   * The options a user sets, each with its default (the value the method applies when the option is
   * absent) and help: the command line's flags and the demo's form are made from these.
   */
  readonly fields: readonly OptionField[];
  /**
   * The peak learning rate a run of this method takes when none is given (Trainer, command line, demo),
   * or what gives it for the options (methodLearningRate in ./registry.ts reads either).
   */
  readonly learningRate: number | ((options: Options | undefined) => number);
  /**
   * Work on the training rows before the method attaches, for options that need it (a sparse mask chosen
   * from data): the Trainer runs it for a new run (a resumed one restores what it made from its
   * checkpoint). `needed` says why when it is: FineTuner, which has no rows, refuses such options.
   */
  readonly prepare?: {
    needed(options: Options | undefined): string | null;
    run(options: Options | undefined, context: PrepareContext): Promise<Prepared<Options>>;
  };
  /** Checks options against the model before any weight is read (throws ShapeError); allocates nothing. */
  check(config: ModelConfig, options: Options | undefined): void;
  /** Base parameters (engine names) the model must give dense gradients: all for full fine-tuning. */
  baseTrainable(options: Options | undefined): (param: string) => boolean;
  /** Whether training writes into the frozen base weights (sparse, in place): such a base cannot be 4-bit. */
  readonly writesBase?: boolean | ((options: Options | undefined) => boolean);
  /**
   * Trains from forward passes alone (zeroth-order): base parameters it trains are kept f32 and writable,
   * and no gradient memory is allocated for them.
   */
  readonly forwardOnly?: boolean;
  /**
   * Keeps the gradients of the base parameters it trains itself (CausalLM.baseGradients), so the model
   * allocates none (LISA: slots for the few layers it trains at a time).
   */
  readonly ownsBaseGradients?: boolean;
  /** Attach to a loaded model; a failure releases what it allocated. */
  attach(model: CausalLM, options: Options | undefined): Method;
  /**
   * Files a checkpoint keeps beside the trainable state so that a resumed run attaches exactly this
   * method (sparse: its mask, which a data-driven selection made once); none when the options suffice.
   */
  checkpointFiles?(method: Method, config: ModelConfig): Record<string, Uint8Array>;
  /**
   * The trained change in the method's interchange format, by file name (LoRA: PEFT's adapter files;
   * sparse: the delta file); absent, or null for the options the method attached with, when a merged
   * model is the only export (full fine-tuning).
   */
  exportFiles?(method: Method, config: ModelConfig, o: { baseModel?: string }): Promise<Record<string, Uint8Array> | null>;
  /** The options with what checkpointFiles kept put back. */
  restoreOptions?(options: Options | undefined, files: Record<string, Uint8Array>, config: ModelConfig): Promise<Options>;
}

/** Dense AdamW over a trainable set: the update rule of methods that bring none of their own. */
export function denseAdamW(gpu: Gpu, set: TrainableSet, config: AdamWConfig): Optimizer {
  return new AdamW(gpu, set, config);
}
