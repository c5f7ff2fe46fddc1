/**
 * A fine-tuning session in a dedicated Web Worker, with the interface of the in-thread FineTuneSession:
 *
 *   const session = await FineTuneSession.open(spec, { onEvent });          // in the page's thread
 *   const session = await WorkerFineTuneSession.open(spec, { onEvent });    // in a worker
 *
 * The worker owns the GPU device, the model and the Trainer; the page only renders. Events cross as
 * plain objects, File objects cross by reference (the worker reads them), dataset bytes and exported
 * files are transferred rather than copied, and errors keep their name and code.
 */
import * as Comlink from 'comlink';
import type { TrainResult } from '../train/trainer.js';
import type { DatasetPreview } from '../data/dataset.js';
import type { FineTuneSessionApi, GenerateRequest, SessionEvent, SessionFile, SessionInfo, SessionSpec } from '../train/session.js';
import { installErrorHandler } from './errors.js';
import type { WorkerApi } from './worker.js';

installErrorHandler();

/** The worker script as a module worker, resolved beside this module (see the README for bundlers). */
export function createSessionWorker(): Worker {
  return new Worker(new URL('./worker.js', import.meta.url), { type: 'module', name: 'webgpu-finetune' });
}

/** Buffers of the spec's dataset bytes that can move to the worker whole (views of a larger buffer are copied). */
function transferables(spec: SessionSpec): ArrayBuffer[] {
  const files = [...(Array.isArray(spec.data) ? spec.data : [spec.data]), ...(Array.isArray(spec.dataset.validation) ? spec.dataset.validation : [])];
  const out: ArrayBuffer[] = [];
  for (const f of files) {
    const bytes = (f as { bytes?: Uint8Array }).bytes;
    if (bytes instanceof Uint8Array && bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && !out.includes(bytes.buffer as ArrayBuffer)) out.push(bytes.buffer as ArrayBuffer);
  }
  return out;
}

/**
 * A worker that runs sessions one at a time, kept across them (the page opens a new session per run
 * without starting a new worker), and previews datasets off the page's thread.
 */
export class SessionWorker {
  private readonly remote: Comlink.Remote<WorkerApi>;
  constructor(readonly worker: Worker = createSessionWorker()) {
    this.remote = Comlink.wrap<WorkerApi>(worker);
  }

  previewDataset(file: SessionFile): Promise<DatasetPreview> {
    return this.remote.previewDataset(file);
  }

  /** A session in this worker (it replaces the worker's previous one, which should be destroyed first). */
  open(spec: SessionSpec, o: { onEvent?: (event: SessionEvent) => void } = {}): Promise<WorkerFineTuneSession> {
    return WorkerFineTuneSession.open(spec, { ...o, worker: this.worker });
  }

  terminate(): void {
    this.worker.terminate();
  }
}

export class WorkerFineTuneSession implements FineTuneSessionApi {
  onEvent: ((event: SessionEvent) => void) | undefined;
  private closed = false;

  private constructor(
    readonly worker: Worker,
    private readonly remote: Comlink.Remote<WorkerApi>,
    readonly info: SessionInfo,
    private readonly ownsWorker: boolean,
  ) {}

  /**
   * Open a session in `o.worker` (default: a new worker from createSessionWorker). Dataset bytes given as
   * whole buffers are transferred: the page's arrays are emptied. Pass File objects to keep them.
   */
  static async open(spec: SessionSpec, o: { worker?: Worker; onEvent?: (event: SessionEvent) => void } = {}): Promise<WorkerFineTuneSession> {
    const worker = o.worker ?? createSessionWorker();
    const remote = Comlink.wrap<WorkerApi>(worker);
    let session: WorkerFineTuneSession | null = null;
    const relay = Comlink.proxy((event: SessionEvent) => (session ? session.onEvent : o.onEvent)?.(event));
    try {
      const info = await remote.open(Comlink.transfer(spec, transferables(spec)), relay);
      session = new WorkerFineTuneSession(worker, remote, info, !o.worker);
      session.onEvent = o.onEvent;
      return session;
    } catch (e) {
      if (!o.worker) worker.terminate();
      throw e;
    }
  }

  train(): Promise<TrainResult> {
    return this.remote.train();
  }

  pause(): void {
    void this.remote.pause();
  }

  resume(): void {
    void this.remote.resume();
  }

  cancel(): void {
    void this.remote.cancel();
  }

  evaluate() {
    return this.remote.evaluate();
  }

  generate(prompt: string, request?: GenerateRequest, onText?: (text: string) => void): Promise<string> {
    return this.remote.generate(prompt, request, onText && Comlink.proxy(onText));
  }

  save(): Promise<number> {
    return this.remote.save();
  }

  exportAdapter(o?: { baseModel?: string }): Promise<Record<string, Uint8Array>> {
    return this.remote.exportAdapter(o);
  }

  exportMerged(): Promise<Record<string, Uint8Array>> {
    return this.remote.exportMerged();
  }

  /** Milliseconds of one round trip to the worker and back (the boundary's cost, nothing else). */
  async ping(): Promise<number> {
    const t = performance.now();
    await this.remote.ping();
    return performance.now() - t;
  }

  /** Frees the session's GPU memory; the worker ends too when this session started it. */
  destroy(): void {
    if (this.closed) return;
    this.closed = true;
    // No releaseProxy: releasing any proxy of a worker makes its exposed API stop listening for everyone.
    void this.remote.destroy().finally(() => {
      if (this.ownsWorker) this.worker.terminate();
    });
  }
}
