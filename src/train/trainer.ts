/**
 * The training loop every method goes through: a FineTuner over packed dataset rows, with the
 * learning-rate schedule planned from the run's length, an automatic micro-batch size with gradient
 * accumulation up to the effective batch, evaluation on held-out rows, checkpoints that a resumed run
 * continues from with exactly the losses of an uninterrupted one, and typed progress events.
 *
 * Rows are one stream across epochs: epoch e visits every row once in a seeded shuffle of (seed, e),
 * and optimizer step k takes rows [k B, (k + 1) B) of the stream (B the effective batch). So where a run
 * stands is one number, the rows it consumed, and resuming needs nothing else of the data. Losses are
 * read back a step behind: the next step is submitted before the previous one's loss is awaited, so
 * the GPU never waits on the host for a readback.
 */
import { DeviceLostError, GPUOutOfMemoryError, BufferTooLargeError, ShapeError, WebGPUFinetuneError } from '../errors.js';
import { bytesSource } from '../io/bytes.js';
import { readHeader } from '../io/safetensors.js';
import type { TrainingData } from '../data/dataset.js';
import type { PackedRows, PackingStats } from '../data/packing.js';
import { methodDefinition, methodLearningRate, METHODS, type MethodName } from '../methods/registry.js';
import type { Prepared } from '../methods/method.js';
import type { AdamWConfig } from '../optim/adamw.js';
import type { ScheduleOptions } from '../optim/schedule.js';
import type { Gpu } from '../gpu/gpu.js';
import type { Checkpoint } from '../model/checkpoint.js';
import type { CausalLM } from '../model/causal-lm.js';
import { rng } from '../util/random.js';
import type { ProgressEvent } from './progress.js';
import { TRAINING_DEFAULTS } from './defaults.js';
import { chooseMicroBatch, type MicroBatchChoice } from './auto-batch.js';
import { CheckpointError, checkpointName, claimStore, latestCheckpoint, pruneCheckpoints, type CheckpointStore } from './checkpoints.js';
import { checkFineTuneOptionKeys, FineTuner, type FineTuneOptions, type PendingStep } from './finetuner.js';
import { checkOptionKeys, optionKeys } from '../util/options.js';
import { ADAMW_CONFIG_KEYS } from '../optim/adamw.js';
import { SCHEDULE_OPTION_KEYS, warmupSteps } from '../optim/schedule.js';

/**
 * A run's options; the defaults not given here are TRAINING_DEFAULTS (./defaults.ts) and the method's
 * (its learning rate and option fields). A method whose options need the training rows (a data-driven
 * sparse mask) is prepared on them first, for a new run.
 */
export interface TrainerOptions extends Omit<FineTuneOptions, 'optimizer' | 'gradientAccumulation' | 'gradientCheckpointing'> {
  /** Optimizer steps. Default: `epochs` passes over the training rows. */
  steps?: number;
  /** Passes over the training rows when `steps` is not given. Default 1. */
  epochs?: number;
  /** Rows per optimizer step (the effective batch). Default 8. */
  batchSize?: number;
  /** Rows per forward/backward pass: 'auto' (default) finds the largest that fits, or a divisor of batchSize. */
  microBatch?: number | 'auto';
  /** Activation bytes a micro-batch may take ('auto'). Default: the model's activationCacheBytes. */
  memoryBudgetBytes?: number;
  /** Recompute layers in the backward pass: 'auto' (default) only when not even one row fits without it. */
  gradientCheckpointing?: boolean | 'auto';
  /** AdamW and the schedule; totalSteps is the run's. Defaults: lr the method's, cosine after 3% warmup, no weight decay, clipping at 1. */
  optimizer?: AdamWConfig & Omit<ScheduleOptions, 'totalSteps' | 'lr'> & { lr?: number; warmupRatio?: number };
  /** Evaluate on the validation rows every N optimizer steps, and at the end. Default: at the end only. */
  evalEvery?: number;
  /** Token accuracy in evaluations too (reads back more per batch). Loss and perplexity are always there. */
  evalAccuracy?: boolean;
  /** Seed of the row order. Default 0. */
  seed?: number;
  /** Write checkpoints every `every` optimizer steps (default 50; and when cancelled, and at the end), keeping the newest `keep` (default 2). */
  checkpoints?: { store: CheckpointStore; every?: number; keep?: number };
  /** Continue from the store's latest checkpoint: true (one must exist) or 'if-any'. */
  resume?: boolean | 'if-any';
  /**
   * Start a new run in a store that holds checkpoints, deleting them once this run has saved its first
   * (until then they stay, so a run that fails early loses nothing). Without it such a store is refused
   * (RunExistsError).
   */
  overwrite?: boolean;
  onEvent?: (event: TrainerEvent) => void;
}

export const TRAINER_OPTION_KEYS = optionKeys<TrainerOptions>()([
  'method', 'baseDtype', 'quantize', 'precision', 'onProgress', ...(Object.keys(METHODS) as MethodName[]),
  'steps', 'epochs', 'batchSize', 'microBatch', 'memoryBudgetBytes', 'gradientCheckpointing', 'optimizer', 'evalEvery', 'evalAccuracy',
  'seed', 'checkpoints', 'resume', 'overwrite', 'onEvent',
]);
/** The optimizer options a Trainer takes: AdamW's and the schedule's but its length, which the run sets, and a warmup ratio. */
const TRAINER_OPTIMIZER_KEYS = [...ADAMW_CONFIG_KEYS, ...SCHEDULE_OPTION_KEYS.filter((k) => k !== 'totalSteps'), 'warmupRatio'];

export type TrainerEvent =
  | {
      type: 'plan';
      totalSteps: number;
      epochs: number;
      rows: number;
      seqLength: number;
      batchSize: number;
      microBatch: number;
      accumulation: number;
      gradientCheckpointing: boolean;
      microBatchReason: string;
      packing: PackingStats;
      resumedFrom: number | null;
    }
  | {
      type: 'step';
      step: number;
      totalSteps: number;
      epoch: number;
      loss: number;
      lr: number;
      /** Tokens of the step's rows (padding excluded), and of the run so far per second of training. */
      tokens: number;
      tokensPerSecond: number;
      elapsedSeconds: number;
      etaSeconds: number;
      gpuBytes: number;
    }
  | { type: 'eval'; step: number; loss: number; perplexity: number; accuracy?: number; tokens: number }
  | { type: 'checkpoint'; step: number; name: string; store: string; seconds: number }
  | ProgressEvent
  | { type: 'paused' | 'resumed'; step: number }
  | { type: 'done'; step: number; reason: 'completed' | 'cancelled'; seconds: number }
  | { type: 'error'; step: number; message: string; advice: string };

export interface TrainResult {
  reason: 'completed' | 'cancelled';
  step: number;
  /** Each optimizer step's loss this run, in order (from the resumed step on). */
  losses: number[];
  evals: { step: number; loss: number; perplexity: number; accuracy?: number }[];
  /**
   * Optimizer steps this run left out for a gradient norm that was not finite (AdamWConfig.skipNonFinite,
   * on under mixed precision): 0 when none was, or when the optimizer does not count them.
   */
  skippedSteps: number;
}

/** Training stopped on an error it cannot continue past; the last checkpoint, if any, is intact. */
export class TrainingStoppedError extends WebGPUFinetuneError {
  constructor(
    message: string,
    readonly step: number,
    options?: { cause?: unknown },
  ) {
    super('training-stopped', message, options);
  }
}

const STATE_FILE = 'state.safetensors';
const TRAINER_FILE = 'trainer.json';
const TRAINER_FORMAT = 'webgpu-finetune-trainer';

/** What a checkpoint records of the run besides the FineTuner's state. */
interface TrainerState {
  format: typeof TRAINER_FORMAT;
  version: 1;
  step: number;
  rowsSeen: number;
  seed: number;
  totalSteps: number;
  batchSize: number;
  microBatch: number;
  gradientCheckpointing: boolean;
  method: string;
  data: { rows: number; seqLength: number; digest: string };
  /** Every file of the checkpoint (this one last). */
  files: string[];
  /** What rebuilds the fine-tuner: the method with its options as plain JSON (masks are files of their own). */
  fineTune: Pick<FineTuneOptions, 'method' | 'quantize' | 'baseDtype' | 'precision'> & { options: unknown };
}

const TRAINER_STATE_KEYS = optionKeys<TrainerState>()(['format', 'version', 'step', 'rowsSeen', 'seed', 'totalSteps', 'batchSize', 'microBatch', 'gradientCheckpointing', 'method', 'data', 'files', 'fineTune']);

/** A checkpoint's trainer file, checked: JSON, this format and version, and no key this version does not write. */
function parseTrainerState(bytes: Uint8Array, where: string): TrainerState {
  let state: TrainerState;
  try {
    state = JSON.parse(new TextDecoder().decode(bytes));
  } catch (e) {
    throw new CheckpointError(`${where} is not JSON`, { cause: e });
  }
  if (state?.format !== TRAINER_FORMAT || state.version !== 1) throw new CheckpointError(`${where} is not a trainer state of this version`);
  checkOptionKeys(where, state, TRAINER_STATE_KEYS);
  checkOptionKeys(`${where}: data`, state.data, ['rows', 'seqLength', 'digest']);
  checkOptionKeys(`${where}: fineTune`, state.fineTune, ['method', 'quantize', 'baseDtype', 'precision', 'options']);
  return state;
}

/** Options as JSON keeps them: class instances (a sparse mask) are left out; the method's checkpoint files hold them. */
function plainOptions(v: unknown): unknown {
  return JSON.parse(JSON.stringify(v ?? {}, (_, x) => (x && typeof x === 'object' && !Array.isArray(x) && Object.getPrototypeOf(x) !== Object.prototype ? undefined : x)));
}

/** A digest of the packed training rows: a checkpoint resumes only on the rows it was made on. */
function dataDigest(rows: PackedRows): string {
  let h = 0x811c9dc5;
  const mix = (x: number) => {
    h = Math.imul(h ^ x, 0x01000193) >>> 0;
  };
  for (let i = 0; i < rows.ids.length; i++) {
    mix(rows.ids[i]);
    mix(rows.lossMask[i] | (rows.segments[i] << 1));
  }
  return h.toString(16).padStart(8, '0');
}

export class Trainer {
  readonly totalSteps: number;
  readonly batchSize: number;
  private readonly seed: number;
  private step = 0;
  private rowsSeen = 0;
  private choice: MicroBatchChoice | null = null;
  private paused: { promise: Promise<void>; resolve: () => void } | null = null;
  private cancelled = false;
  private running = false;
  private orders = new Map<number, Uint32Array>();
  private readonly rowTokens: Uint32Array;
  /** Where progress events go (options.onEvent to begin with). */
  onEvent: ((event: TrainerEvent) => void) | undefined;

  private constructor(
    readonly ft: FineTuner,
    readonly data: TrainingData,
    readonly options: TrainerOptions,
    private resumeFiles: Record<string, Uint8Array> | null,
    /** An earlier run's checkpoints in the store, deleted when this run saves its first (overwrite). */
    private stale: string[],
    /** What the method's preparation on the training rows made (a sparse mask), for the user; null when none ran. */
    readonly prepared: { label: string; text: string } | null = null,
  ) {
    this.onEvent = options.onEvent;
    this.batchSize = options.batchSize ?? TRAINING_DEFAULTS.batchSize;
    this.seed = options.seed ?? TRAINING_DEFAULTS.seed;
    const rows = data.train.rows;
    this.totalSteps = runSteps(options, rows);
    this.rowTokens = new Uint32Array(rows);
    const S = data.train.S;
    for (let r = 0; r < rows; r++) {
      // Padding is the row's last segment, after its examples; rows without padding end on an example.
      const members = data.train.members[r].length;
      let n = 0;
      for (let i = 0; i < S; i++) if (data.train.segments[r * S + i] < members) n++;
      this.rowTokens[r] = n;
    }
  }

  /**
   * A trainer over a loaded checkpoint: the method attaches (from the store's latest checkpoint when
   * resuming), and the options are checked before any weight loads.
   */
  static async create(gpu: Gpu, ckpt: Checkpoint, data: TrainingData, options: TrainerOptions): Promise<Trainer> {
    checkTrainerOptions(options, data);
    let resumeFiles: Record<string, Uint8Array> | null = null;
    let methodOptions = options[options.method];
    const definition = methodDefinition(options.method);
    const store = options.checkpoints?.store;
    if (options.resume && !store) throw new ShapeError('resume needs checkpoints: { store }');
    const name = store ? await claimStore(store, options) : null;
    const stale = store && options.overwrite ? await store.list() : [];
    let prepared: Prepared<unknown>['report'] | null = null;
    if (store && name) {
      resumeFiles = await readCheckpoint(store, name);
      if (definition.restoreOptions) methodOptions = (await definition.restoreOptions(methodOptions, resumeFiles, ckpt.config)) as typeof methodOptions;
    } else if (definition.prepare?.needed(methodOptions)) {
      definition.check(ckpt.config, methodOptions); // bad options fail before the preparation's work
      const done = await definition.prepare.run(methodOptions, { gpu, ckpt, data, onProgress: options.onEvent });
      methodOptions = done.options as typeof methodOptions;
      prepared = done.report;
    }
    const { method, quantize, baseDtype, precision, onProgress } = options;
    const ft = await FineTuner.create(gpu, ckpt, {
      method, [method]: methodOptions, quantize, baseDtype, precision, onProgress, optimizer: optimizerOptions(options, data), gradientCheckpointing: options.gradientCheckpointing === true,
    });
    return new Trainer(ft, data, options, resumeFiles, stale, prepared);
  }

  /** Where the run stands: optimizer steps done, rows consumed. */
  get position(): { step: number; rowsSeen: number; epoch: number } {
    return { step: this.step, rowsSeen: this.rowsSeen, epoch: this.rowsSeen / this.data.train.rows };
  }

  get microBatch(): MicroBatchChoice | null {
    return this.choice;
  }

  /** Stop before the next optimizer step until resume(). */
  pause(): void {
    if (this.paused) return;
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    this.paused = { promise, resolve };
  }

  resume(): void {
    const p = this.paused;
    this.paused = null;
    p?.resolve();
  }

  /** End the run after the step in flight; with checkpoints, one is written first, so resuming loses nothing. */
  cancel(): void {
    this.cancelled = true;
    this.resume();
  }

  private emit(event: TrainerEvent): void {
    this.onEvent?.(event);
  }

  /** The row of the stream at `position`. */
  private rowAt(position: number): number {
    const R = this.data.train.rows;
    const epoch = Math.floor(position / R);
    let order = this.orders.get(epoch);
    if (!order) {
      order = Uint32Array.from({ length: R }, (_, i) => i);
      const rand = rng((this.seed * 0x9e3779b1 + epoch) >>> 0);
      for (let i = R - 1; i > 0; i--) {
        const j = Math.floor(rand() * (i + 1));
        [order[i], order[j]] = [order[j], order[i]];
      }
      this.orders.delete(epoch - 2); // a batch spans two epochs at most
      this.orders.set(epoch, order);
    }
    return order[position % R];
  }

  /** Run to the planned step count (or until cancelled); resolves with this run's losses and evaluations. */
  async train(): Promise<TrainResult> {
    if (this.running) throw new Error('train() is already running');
    this.running = true;
    try {
      return await this.run();
    } finally {
      this.running = false;
    }
  }

  private async run(): Promise<TrainResult> {
    const o = this.options;
    const train = this.data.train;
    const result: TrainResult = { reason: 'completed', step: this.step, losses: [], evals: [], skippedSteps: 0 };
    const skippedBefore = (await this.ft.optimizer.skippedSteps?.()) ?? 0;
    let resumedFrom: number | null = null;
    if (this.resumeFiles) {
      resumedFrom = await this.restore(this.resumeFiles);
      this.resumeFiles = null;
    }
    this.choice ??= await chooseMicroBatch(this.ft, train, { batchSize: this.batchSize, microBatch: o.microBatch ?? 'auto', budgetBytes: o.memoryBudgetBytes, gradientCheckpointing: o.gradientCheckpointing });
    const { microBatch, accumulation, gradientCheckpointing } = this.choice;
    this.ft.gradientAccumulation = accumulation;
    this.ft.model.gradientCheckpointing = gradientCheckpointing;
    this.emit({
      type: 'plan', totalSteps: this.totalSteps, epochs: (this.totalSteps * this.batchSize) / train.rows, rows: train.rows, seqLength: train.S,
      batchSize: this.batchSize, microBatch, accumulation, gradientCheckpointing, microBatchReason: this.choice.reason, packing: train.stats, resumedFrom,
    });
    const store = o.checkpoints?.store;
    const every = o.checkpoints?.every ?? TRAINING_DEFAULTS.checkpointEvery;
    const t0 = performance.now();
    const startStep = this.step;
    let tokensSeen = 0;
    let lastSaved = resumedFrom;
    // Steps submitted but whose losses are still being read back.
    const inFlight: { step: number; epoch: number; lr: number; tokens: number; parts: PendingStep[] }[] = [];
    const settle = async () => {
      const s = inFlight.shift()!;
      // The step's loss is the mean over all its target tokens, as its gradient is (FineTuner.submitStep).
      const losses = await Promise.all(s.parts.map((p) => p.loss));
      const targets = s.parts.reduce((n, p) => n + p.tokens, 0);
      const loss = losses.reduce((sum, l, i) => sum + l * s.parts[i].tokens, 0) / Math.max(targets, 1);
      tokensSeen += s.tokens;
      result.losses.push(loss);
      const elapsed = (performance.now() - t0) / 1000;
      const done = s.step - startStep;
      this.emit({
        type: 'step', step: s.step, totalSteps: this.totalSteps, epoch: s.epoch, loss, lr: s.lr, tokens: s.tokens,
        tokensPerSecond: tokensSeen / Math.max(elapsed, 1e-9), elapsedSeconds: elapsed,
        etaSeconds: (elapsed / Math.max(done, 1)) * (this.totalSteps - s.step), gpuBytes: this.ft.gpu.memoryStats().currentBytes,
      });
    };
    const drain = async () => {
      while (inFlight.length) await settle();
    };
    try {
      while (this.step < this.totalSteps) {
        if (this.paused && !this.cancelled) {
          await drain();
          this.emit({ type: 'paused', step: this.step });
          await this.paused.promise;
          if (!this.cancelled) this.emit({ type: 'resumed', step: this.step });
        }
        if (this.cancelled) {
          result.reason = 'cancelled';
          break;
        }
        const parts: PendingStep[] = [];
        let tokens = 0;
        for (let m = 0; m < accumulation; m++) {
          const rows = Array.from({ length: microBatch }, (_, i) => this.rowAt(this.rowsSeen + m * microBatch + i));
          for (const r of rows) tokens += this.rowTokens[r];
          parts.push(this.ft.submitStep(train.batch(rows)));
        }
        this.rowsSeen += this.batchSize;
        this.step++;
        inFlight.push({ step: this.step, epoch: this.rowsSeen / train.rows, lr: parts[parts.length - 1].lr, tokens, parts });
        // Await the step before this one: the GPU has this one queued meanwhile.
        if (inFlight.length > 1) await settle();
        const evalNow = o.evalEvery && this.step % o.evalEvery === 0 && this.step < this.totalSteps;
        const saveNow = store && every && this.step % every === 0 && this.step < this.totalSteps;
        if (evalNow || saveNow) await drain();
        if (evalNow) result.evals.push(await this.evaluateValidation());
        if (saveNow) lastSaved = await this.save(store);
      }
      await drain();
      if (result.reason === 'completed' && this.data.validation) result.evals.push(await this.evaluateValidation());
      // A run stopped before its first step has nothing to keep (and, overwriting, leaves the old run whole).
      if (store && lastSaved !== this.step && this.step > 0) await this.save(store);
    } catch (e) {
      // Readbacks still in flight fail with the device too; nothing waits for them any more.
      for (const s of inFlight) for (const p of s.parts) p.loss.catch(() => undefined);
      throw this.stopped(e, lastSaved);
    }
    result.step = this.step;
    result.skippedSteps = ((await this.ft.optimizer.skippedSteps?.()) ?? 0) - skippedBefore;
    this.emit({ type: 'done', step: this.step, reason: result.reason, seconds: (performance.now() - t0) / 1000 });
    return result;
  }

  /** Loss (token-weighted), perplexity and optionally token accuracy over the validation rows. */
  async evaluateValidation(): Promise<{ step: number; loss: number; perplexity: number; accuracy?: number; tokens: number }> {
    const v = this.data.validation;
    if (!v) throw new ShapeError('this dataset has no validation rows');
    const accuracy = this.options.evalAccuracy ?? false;
    const rowsPerPass = this.choice?.microBatch ?? 1;
    const total = Math.ceil(v.rows / rowsPerPass);
    const e = await evaluateRows(this.ft.model, v, { rowsPerPass, accuracy, onBatch: (done) => this.emit({ type: 'progress', task: 'evaluate', done, total, detail: 'batches' }) });
    const out = { step: this.step, loss: e.loss, perplexity: e.perplexity, tokens: e.tokens, ...(accuracy ? { accuracy: e.accuracy } : {}) };
    this.emit({ type: 'eval', ...out });
    return out;
  }

  /** Write a checkpoint of the run now: state, optimizer, data position, the method's files. */
  async save(store: CheckpointStore): Promise<number> {
    const t = performance.now();
    const name = checkpointName(this.step);
    const config = this.ft.model.config;
    const definition = methodDefinition(this.options.method);
    const state: TrainerState = {
      format: TRAINER_FORMAT, version: 1, step: this.step, rowsSeen: this.rowsSeen, seed: this.seed, totalSteps: this.totalSteps,
      batchSize: this.batchSize, microBatch: this.choice?.microBatch ?? 0, gradientCheckpointing: this.choice?.gradientCheckpointing ?? false, method: this.options.method,
      data: { rows: this.data.train.rows, seqLength: this.data.train.S, digest: dataDigest(this.data.train) }, files: [],
      fineTune: { method: this.options.method, options: plainOptions(this.options[this.options.method]), quantize: this.options.quantize, baseDtype: this.options.baseDtype, precision: this.options.precision },
    };
    const files: Record<string, Uint8Array> = {
      [STATE_FILE]: await this.ft.saveState(),
      ...(definition.checkpointFiles?.(this.ft.method, config) ?? {}),
    };
    state.files = [...Object.keys(files), TRAINER_FILE];
    files[TRAINER_FILE] = new TextEncoder().encode(JSON.stringify(state, null, 2));
    await store.write(name, files);
    await store.setLatest(name);
    if (store === this.options.checkpoints?.store) {
      for (const old of this.stale.splice(0)) if (old !== name) await store.remove(old);
    }
    await pruneCheckpoints(store, this.options.checkpoints?.keep ?? TRAINING_DEFAULTS.checkpointsKept);
    this.emit({ type: 'checkpoint', step: this.step, name, store: store.description, seconds: (performance.now() - t) / 1000 });
    return this.step;
  }

  /** Restore a checkpoint's state into this trainer; returns its step. */
  private async restore(files: Record<string, Uint8Array>): Promise<number> {
    const state = parseTrainerState(files[TRAINER_FILE], TRAINER_FILE);
    const mismatch = (what: string, saved: unknown, now: unknown) =>
      new CheckpointError(`the checkpoint was made with ${what} ${saved}, this run has ${now}: resume with the same ${what}, or start a new run in another checkpoint folder`);
    if (state.method !== this.options.method) throw mismatch('method', state.method, this.options.method);
    if (state.batchSize !== this.batchSize) throw mismatch('batch size', state.batchSize, this.batchSize);
    if (state.seed !== this.seed) throw mismatch('seed', state.seed, this.seed);
    if (state.totalSteps !== this.totalSteps) throw mismatch('step count', state.totalSteps, this.totalSteps);
    const digest = dataDigest(this.data.train);
    if (state.data.digest !== digest || state.data.rows !== this.data.train.rows || state.data.seqLength !== this.data.train.S) {
      throw new CheckpointError(`the checkpoint was made on other training rows (${state.data.rows} rows of ${state.data.seqLength}, digest ${state.data.digest}; now ${this.data.train.rows} of ${this.data.train.S}, ${digest}): resume with the same dataset and options`);
    }
    await this.ft.loadState(files[STATE_FILE]);
    if (this.ft.optimizer.step !== state.step) throw new CheckpointError(`the checkpoint's state is at step ${this.ft.optimizer.step} but its trainer file says ${state.step}`);
    this.step = state.step;
    this.rowsSeen = state.rowsSeen;
    // The same micro-batch as before, so every later step computes exactly what it would have.
    if (this.options.microBatch === undefined || this.options.microBatch === 'auto') {
      const checkpointing = this.options.gradientCheckpointing === undefined || this.options.gradientCheckpointing === 'auto' ? state.gradientCheckpointing === true : this.options.gradientCheckpointing;
      this.choice = { microBatch: state.microBatch, accumulation: this.batchSize / state.microBatch, gradientCheckpointing: checkpointing, reason: `micro-batch ${state.microBatch}, as the run resumed had`, trials: [] };
    }
    return state.step;
  }

  /** A failure as the error the caller sees: what happened, what to change, and the checkpoint that is intact. */
  private stopped(e: unknown, lastSaved: number | null): Error {
    if (!(e instanceof WebGPUFinetuneError) || e instanceof CheckpointError || e instanceof TrainingStoppedError) return e as Error;
    let advice: string;
    if (e instanceof GPUOutOfMemoryError || e instanceof BufferTooLargeError) advice = 'use a smaller micro-batch or sequence length, a 4-bit base (quantize), or a smaller model';
    else if (e instanceof DeviceLostError) advice = 'the GPU device was lost (a driver reset, or another tab or process took it); start again and resume';
    else return e;
    const store = this.options.checkpoints?.store;
    const kept = store && lastSaved !== null ? `; the checkpoint of step ${lastSaved} in ${store.description} is intact: resume from it` : store ? '; no checkpoint was written yet' : '';
    this.emit({ type: 'error', step: this.step, message: e.message, advice });
    return new TrainingStoppedError(`training stopped at step ${this.step}: ${e.message} (${advice})${kept}`, this.step, { cause: e });
  }

  destroy(): void {
    this.ft.destroy();
  }
}

/** Loss over all target tokens of packed rows (token-weighted across passes), its perplexity, and token accuracy (NaN unless asked). */
export async function evaluateRows(model: CausalLM, rows: PackedRows, o: { rowsPerPass: number; accuracy?: boolean; onBatch?: (done: number) => void }): Promise<{ loss: number; perplexity: number; accuracy: number; tokens: number }> {
  let loss = 0;
  let correct = 0;
  let tokens = 0;
  let done = 0;
  for (const batch of rows.batches(o.rowsPerPass)) {
    const e = await model.evaluate(batch, { accuracy: o.accuracy ?? false });
    loss += e.loss * e.tokens;
    correct += e.accuracy * e.tokens;
    tokens += e.tokens;
    o.onBatch?.(++done);
  }
  const mean = loss / Math.max(tokens, 1);
  return { loss: mean, perplexity: Math.exp(mean), accuracy: o.accuracy ? correct / Math.max(tokens, 1) : NaN, tokens };
}

/** The optimizer options of a run: its length sets the schedule's total; defaults documented in TrainerOptions. */
function optimizerOptions(o: TrainerOptions, data: TrainingData): AdamWConfig & ScheduleOptions {
  const totalSteps = runSteps(o, data.train.rows);
  const { warmupRatio, ...rest } = o.optimizer ?? {};
  const warmup = rest.warmupSteps ?? warmupSteps(warmupRatio ?? TRAINING_DEFAULTS.warmupRatio, totalSteps);
  return {
    schedule: TRAINING_DEFAULTS.schedule, weightDecay: TRAINING_DEFAULTS.weightDecay, maxGradNorm: TRAINING_DEFAULTS.maxGradNorm,
    ...rest, lr: rest.lr ?? methodLearningRate(methodDefinition(o.method), o[o.method]), warmupSteps: warmup, totalSteps,
  };
}

/** Optimizer steps of a run: `steps`, or `epochs` passes over the rows in batches. */
function runSteps(o: TrainerOptions, rows: number): number {
  return o.steps ?? Math.max(1, Math.ceil(((o.epochs ?? TRAINING_DEFAULTS.epochs) * rows) / (o.batchSize ?? TRAINING_DEFAULTS.batchSize)));
}

function checkTrainerOptions(o: TrainerOptions, data: TrainingData): void {
  checkFineTuneOptionKeys('Trainer options', o as FineTuneOptions, TRAINER_OPTION_KEYS, TRAINER_OPTIMIZER_KEYS);
  checkOptionKeys('checkpoints', o.checkpoints, ['store', 'every', 'keep']);
  const positiveInt = (name: string, v: number | undefined) => {
    if (v !== undefined && !(Number.isInteger(v) && v >= 1)) throw new ShapeError(`${name} must be a positive integer, got ${v}`);
  };
  positiveInt('steps', o.steps);
  positiveInt('batchSize', o.batchSize);
  positiveInt('evalEvery', o.evalEvery);
  positiveInt('checkpoints.every', o.checkpoints?.every);
  positiveInt('checkpoints.keep', o.checkpoints?.keep);
  if (o.epochs !== undefined && !(o.epochs > 0 && Number.isFinite(o.epochs))) throw new ShapeError(`epochs must be a positive number, got ${o.epochs}`);
  if (o.microBatch !== undefined && o.microBatch !== 'auto') {
    positiveInt('microBatch', o.microBatch);
    const batch = o.batchSize ?? TRAINING_DEFAULTS.batchSize;
    if (batch % o.microBatch !== 0) throw new ShapeError(`microBatch must divide the batch size ${batch} (accumulation makes up the rest), got ${o.microBatch}`);
  }
  const lr = o.optimizer?.lr;
  if (lr !== undefined && !(lr >= 0 && Number.isFinite(lr))) throw new ShapeError(`lr must be a non-negative number, got ${lr}`);
  if (o.evalEvery && !data.validation) throw new ShapeError('evalEvery needs validation rows (a validation fraction or file)');
}

/**
 * A fine-tuner as a run left it: the method its latest checkpoint (or checkpoint `name`) names, with
 * that checkpoint's state loaded. For exporting, evaluating or generating from a run.
 */
export async function loadFineTunedRun(gpu: Gpu, ckpt: Checkpoint, store: CheckpointStore, name?: string): Promise<{ ft: FineTuner; step: number; checkpoint: string }> {
  const checkpoint = name ?? (await latestCheckpoint(store));
  if (!checkpoint) throw new CheckpointError(`${store.description} has no checkpoint`);
  const files = await readCheckpoint(store, checkpoint);
  const state = parseTrainerState(files[TRAINER_FILE], `${checkpoint}/${TRAINER_FILE}`);
  if (!state.fineTune) throw new CheckpointError(`${checkpoint}/${TRAINER_FILE} does not say how the run was fine-tuned`);
  const { method, quantize, baseDtype, precision } = state.fineTune;
  const definition = methodDefinition(method);
  let options = state.fineTune.options as never;
  if (definition.restoreOptions) options = (await definition.restoreOptions(options, files, ckpt.config)) as never;
  const ft = await FineTuner.create(gpu, ckpt, { method, [method]: options, quantize, baseDtype, precision });
  try {
    await ft.loadState(files[STATE_FILE]);
  } catch (e) {
    ft.destroy();
    throw e;
  }
  return { ft, step: state.step, checkpoint };
}

async function readCheckpoint(store: CheckpointStore, name: string): Promise<Record<string, Uint8Array>> {
  const trainer = await store.read(name, TRAINER_FILE);
  if (!trainer) throw new CheckpointError(`${store.description}: checkpoint '${name}' has no ${TRAINER_FILE}`);
  let listed: unknown;
  try {
    listed = JSON.parse(new TextDecoder().decode(trainer)).files;
  } catch (e) {
    throw new CheckpointError(`${store.description}: ${name}/${TRAINER_FILE} is not JSON`, { cause: e });
  }
  if (!Array.isArray(listed) || !listed.every((f) => typeof f === 'string') || !listed.includes(STATE_FILE)) {
    throw new CheckpointError(`${store.description}: ${name}/${TRAINER_FILE} does not list the checkpoint's files`);
  }
  const files: Record<string, Uint8Array> = { [TRAINER_FILE]: trainer };
  for (const file of listed as string[]) {
    if (file === TRAINER_FILE) continue;
    const bytes = await store.read(name, file);
    if (!bytes) throw new CheckpointError(`${store.description}: checkpoint '${name}' lacks ${file}`);
    files[file] = bytes;
  }
  await readHeader(bytesSource(`${name}/${STATE_FILE}`, files[STATE_FILE])); // a damaged state file fails here, before anything loads
  return files;
}
