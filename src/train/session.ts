/**
 * A fine-tuning session: everything a page or a script does around one training run, from plain
 * cloneable choices (a model, dataset files, a method with its options, where checkpoints go): open the
 * model and its tokenizer, read the dataset, prepare the method on the training rows when it needs it
 * (a sparse mask's selection), train with the Trainer's events, pause and resume, generate with the base and the tuned
 * model side by side, checkpoint, and export the method's interchange files and the merged model.
 *
 * The same interface runs in the page's thread (FineTuneSession) or in a Web Worker
 * (WorkerFineTuneSession in src/worker), so moving training off the main thread is one line.
 */
import { checkOptionKeys, optionKeys } from '../util/options.js';
import { WebGPUFinetuneError } from '../errors.js';
import { requestDevice } from '../gpu/device.js';
import type { Gpu } from '../gpu/gpu.js';
import { resolveSource, type HubOptions, type SourceLike } from '../io/sources.js';
import { openCheckpoint, type Checkpoint } from '../model/checkpoint.js';
import { CausalLM } from '../model/causal-lm.js';
import { loadTokenizer, type Tokenizer } from '../data/tokenizer.js';
import { loadDataset, type DatasetOptions, type DatasetReport, type TrainingData } from '../data/dataset.js';
import type { DatasetFile } from '../data/records.js';
import { methodDefinition, methodNames } from '../methods/registry.js';
import { Generator, SAMPLING_OPTION_KEYS, type SamplingOptions } from '../serve/generate.js';
import { indexedDbCheckpointStore } from '../browser/indexeddb-checkpoints.js';
import { cachedSource, hasModelCache, type DownloadProgress } from '../browser/model-cache.js';
import { claimStore, memoryCheckpointStore, type CheckpointStore } from './checkpoints.js';
import { mergedModelFiles } from './export.js';
import { loadProgress } from './progress.js';
import { Trainer, TRAINER_OPTION_KEYS, type TrainerEvent, type TrainerOptions, type TrainResult } from './trainer.js';

/** Where a session's checkpoints go: a run in IndexedDB (browsers), memory, or (in the page's thread) any store. */
export type CheckpointTarget = { indexedDb: string; database?: string } | { memory: true } | { store: CheckpointStore };

export interface SessionSpec {
  /** A hub id, a URL, a local folder (Node), File objects, or (in the page's thread) a ModelSource. */
  model: SourceLike;
  hub?: Omit<HubOptions, 'fetch' | 'signal'>;
  /** Keep downloaded model files in the browser's Cache Storage and load them from there next time (default false). */
  cache?: boolean;
  /** Training files (bytes, or File objects read where the session runs); `dataset.validation` may name held-out files or a fraction. */
  data: SessionFile | SessionFile[];
  dataset: DatasetOptions;
  /**
   * The method with its options and the run's hyperparameters, as the Trainer takes them (a sparse
   * method's data-driven mask is selected on the first training rows, before training).
   */
  train: Omit<TrainerOptions, 'onEvent' | 'checkpoints' | 'resume' | 'overwrite'>;
  checkpoints?: CheckpointTarget & { every?: number; keep?: number };
  /** Continue from the checkpoints' latest: true (one must exist) or 'if-any'. */
  resume?: boolean | 'if-any';
  /** Start over where checkpoints exist, deleting them once the new run saves its first (see TrainerOptions.overwrite). */
  overwrite?: boolean;
}

/** A dataset file as bytes, or a File (a dropped file: it crosses to a worker without a copy and is read there). */
export type SessionFile = DatasetFile | File;

/** Dataset files as bytes, File objects read. */
export async function datasetFiles(data: SessionFile | SessionFile[]): Promise<DatasetFile[]> {
  const list = Array.isArray(data) ? data : [data];
  return Promise.all(list.map(async (f) => (typeof Blob !== 'undefined' && f instanceof Blob ? { name: f.name, bytes: new Uint8Array(await f.arrayBuffer()) } : (f as DatasetFile))));
}

/** What the page shows about a session once it is open. */
export interface SessionInfo {
  /** `warnings`: the config's (ModelConfig.warnings): fields the engine does not know, departures from transformers. */
  model: { description: string; architecture: string; layers: number; hiddenSize: number; vocabSize: number; hasChatTemplate: boolean; warnings: string[] };
  dataset: DatasetReport & { trainRows: number; validationRows: number; seqLength: number };
  method: { name: string; summary: string; trainableParameters: number; quantize: string | null };
  totalSteps: number;
  batchSize: number;
  checkpoints: string | null;
  /** The step the session resumes from (its latest checkpoint), or null for a new run. */
  resumesFrom: string | null;
  /** What the method prepared on the training rows before training ({ label: 'mask', text: 'sylva selection, ...' }), or null. */
  prepared: { label: string; text: string } | null;
}

export type SessionEvent = TrainerEvent | { type: 'status'; message: string } | ({ type: 'download' } & DownloadProgress);

export interface GenerateRequest extends SamplingOptions {
  /** 'tuned' (default): with the method attached; 'base': the frozen base model as loaded. */
  model?: 'base' | 'tuned';
  maxNewTokens?: number;
  /** Render the prompt as a user turn with the model's chat template. */
  chat?: boolean;
}

/** The interface both sessions have: in the page's thread, and its twin in a worker. */
export interface FineTuneSessionApi {
  readonly info: SessionInfo;
  onEvent: ((event: SessionEvent) => void) | undefined;
  train(): Promise<TrainResult>;
  pause(): void;
  resume(): void;
  cancel(): void;
  evaluate(): Promise<{ step: number; loss: number; perplexity: number; accuracy?: number; tokens: number }>;
  /** Generated text; `onText` gets the text as it grows (streamed tokens). */
  generate(prompt: string, request?: GenerateRequest, onText?: (text: string) => void): Promise<string>;
  /** Write a checkpoint now; returns its step. */
  save(): Promise<number>;
  /** The method's interchange files (PEFT adapter, sparse delta). */
  exportAdapter(o?: { baseModel?: string }): Promise<Record<string, Uint8Array>>;
  /** A complete Hugging Face model folder with the method merged in. */
  exportMerged(): Promise<Record<string, Uint8Array>>;
  destroy(): void;
}

export class SessionError extends WebGPUFinetuneError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('session', message, options);
  }
}

/** The store a checkpoint target names. */
export function checkpointStoreFor(target: CheckpointTarget): CheckpointStore {
  if ('store' in target) return target.store;
  if ('memory' in target) return memoryCheckpointStore();
  return indexedDbCheckpointStore(target.indexedDb, { database: target.database });
}

export class FineTuneSession implements FineTuneSessionApi {
  onEvent: ((event: SessionEvent) => void) | undefined;
  private base: { model: CausalLM; generator: Generator } | null = null;
  private tunedGenerator: Generator | null = null;

  private constructor(
    readonly gpu: Gpu,
    private readonly ownsGpu: boolean,
    readonly ckpt: Checkpoint,
    readonly tokenizer: Tokenizer,
    readonly data: TrainingData,
    readonly trainer: Trainer,
    readonly store: CheckpointStore | null,
    readonly info: SessionInfo,
  ) {
    trainer.onEvent = (e) => this.onEvent?.(e);
  }

  /** Open a session: nothing trains until train(). `o.gpu` shares a device; otherwise one is requested. */
  static async open(spec: SessionSpec, o: { gpu?: Gpu; onEvent?: (event: SessionEvent) => void } = {}): Promise<FineTuneSession> {
    checkOptionKeys('session spec', spec, optionKeys<SessionSpec>()(['model', 'hub', 'cache', 'data', 'dataset', 'train', 'checkpoints', 'resume', 'overwrite']));
    checkOptionKeys('session spec: train', spec.train, TRAINER_OPTION_KEYS.filter((k) => !['onEvent', 'checkpoints', 'resume', 'overwrite'].includes(k)));
    checkOptionKeys('session spec: checkpoints', spec.checkpoints, ['indexedDb', 'database', 'memory', 'store', 'every', 'keep']);
    const status = (message: string) => o.onEvent?.({ type: 'status', message });
    const method = spec.train.method;
    if (!methodNames().includes(method)) throw new SessionError(`unknown method '${String(method)}': one of ${methodNames().join(', ')}`);
    // An earlier run in the store is refused (or its checkpoint found) before anything loads.
    const store = spec.checkpoints ? checkpointStoreFor(spec.checkpoints) : null;
    const resumesFrom = store ? await claimStore(store, spec) : null;
    const resolved = await resolveSource(spec.model, spec.hub);
    const source = spec.cache && hasModelCache() ? cachedSource(resolved, { onProgress: (p) => o.onEvent?.({ type: 'download', ...p }) }) : resolved;
    status(`opening ${source.description}`);
    const ckpt = await openCheckpoint(source);
    const tokenizer = await loadTokenizer(source);
    status('reading the dataset');
    const data = await loadDataset(await datasetFiles(spec.data), tokenizer, spec.dataset);
    const gpu = o.gpu ?? (await requestDevice({ powerPreference: 'high-performance' }));
    try {
      const options: TrainerOptions = { ...spec.train, checkpoints: store ? { store, every: spec.checkpoints!.every, keep: spec.checkpoints!.keep } : undefined, resume: spec.resume, overwrite: spec.overwrite };
      const definition = methodDefinition(method);
      const preparing = !resumesFrom && definition.prepare?.needed(options[method]);
      status(resumesFrom ? `resuming from ${resumesFrom} in ${store!.description}` : preparing ? `preparing ${method} on the training rows, then loading the weights` : 'loading the weights');
      const trainer = await Trainer.create(gpu, ckpt, data, {
        ...options,
        onEvent: (e) => o.onEvent?.(e),
        onProgress: (p) => {
          options.onProgress?.(p);
          o.onEvent?.(loadProgress(p));
        },
      });
      const report = data.report;
      const info: SessionInfo = {
        model: {
          description: source.description, architecture: ckpt.config.architecture, layers: ckpt.config.numLayers, hiddenSize: ckpt.config.hiddenSize,
          vocabSize: ckpt.config.vocabSize, hasChatTemplate: tokenizer.chatTemplate !== null, warnings: ckpt.config.warnings,
        },
        dataset: { ...report, trainRows: data.train.rows, validationRows: data.validation?.rows ?? 0, seqLength: data.train.S },
        method: {
          name: method, summary: methodDefinition(method).summary, trainableParameters: trainer.ft.trainableParameters,
          quantize: spec.train.quantize === undefined ? null : typeof spec.train.quantize === 'string' ? spec.train.quantize : spec.train.quantize.format,
        },
        totalSteps: trainer.totalSteps, batchSize: trainer.batchSize, checkpoints: store?.description ?? null, resumesFrom, prepared: trainer.prepared,
      };
      const session = new FineTuneSession(gpu, !o.gpu, ckpt, tokenizer, data, trainer, store, info);
      session.onEvent = o.onEvent;
      return session;
    } catch (e) {
      if (!o.gpu) gpu.destroy();
      throw e;
    }
  }

  train(): Promise<TrainResult> {
    this.tunedGenerator?.destroy(); // training rewrites what a generator's caches were made from
    this.tunedGenerator = null;
    return this.trainer.train();
  }

  pause(): void {
    this.trainer.pause();
  }

  resume(): void {
    this.trainer.resume();
  }

  cancel(): void {
    this.trainer.cancel();
  }

  evaluate() {
    return this.trainer.evaluateValidation();
  }

  async generate(prompt: string, request: GenerateRequest = {}, onText?: (text: string) => void): Promise<string> {
    checkOptionKeys('generate request', request, optionKeys<GenerateRequest>()(['model', 'maxNewTokens', 'chat', ...(SAMPLING_OPTION_KEYS as readonly (keyof SamplingOptions)[])]));
    // A rendered template holds its special tokens already.
    const ids = request.chat ? this.tokenizer.encode(this.tokenizer.applyChatTemplate([{ role: 'user', content: prompt }], { addGenerationPrompt: true }), false) : this.tokenizer.encode(prompt);
    let generator: Generator;
    if (request.model === 'base') {
      if (!this.base) {
        const model = await CausalLM.fromCheckpoint(this.gpu, this.ckpt);
        this.base = { model, generator: new Generator(model) };
      }
      generator = this.base.generator;
    } else {
      generator = this.tunedGenerator ??= new Generator(this.trainer.ft.model);
    }
    const tokens: number[] = [];
    const eos = this.tokenizer.eosTokenId;
    const maxNewTokens = Math.min(request.maxNewTokens ?? 32, Math.max(1, this.ckpt.config.maxPositions - ids.length));
    const { model: _model, chat: _chat, maxNewTokens: _asked, ...sampling } = request;
    await generator.generate(ids, {
      ...sampling,
      maxNewTokens,
      onToken: (t) => {
        tokens.push(t);
        onText?.(this.tokenizer.decode(tokens.filter((x) => x !== eos), { skipSpecialTokens: true }));
      },
    });
    return this.tokenizer.decode(tokens.filter((x) => x !== eos), { skipSpecialTokens: true });
  }

  async save(): Promise<number> {
    if (!this.store) throw new SessionError('this session has no checkpoint store: open it with checkpoints: { indexedDb: "run name" } (or { memory: true })');
    return this.trainer.save(this.store);
  }

  async exportAdapter(o: { baseModel?: string } = {}): Promise<Record<string, Uint8Array>> {
    const ft = this.trainer.ft;
    const definition = methodDefinition(ft.options.method);
    const files = (await definition.exportFiles?.(ft.method, this.ckpt.config, { baseModel: o.baseModel ?? this.info.model.description })) ?? null;
    if (!files) throw new SessionError(`method '${ft.options.method}' has no adapter format${definition.exportFiles ? ' with these options' : ''}: export the merged model`);
    return files;
  }

  async exportMerged(): Promise<Record<string, Uint8Array>> {
    return mergedModelFiles(this.trainer.ft);
  }

  destroy(): void {
    this.tunedGenerator?.destroy();
    this.base?.generator.destroy();
    this.base?.model.destroy();
    this.trainer.destroy();
    if (this.ownsGpu) this.gpu.destroy();
  }
}
