/**
 * The worker side of WorkerFineTuneSession: one FineTuneSession at a time, exposed through comlink.
 * Start it as a module worker: `new Worker(new URL('webgpu-finetune/worker', import.meta.url), { type: 'module' })`
 * (or the bundler's worker import); WorkerFineTuneSession.open does this for you where it can.
 */
import * as Comlink from 'comlink';
import { previewDataset } from '../data/dataset.js';
import { datasetFiles, FineTuneSession, type GenerateRequest, type SessionEvent, type SessionFile, type SessionSpec } from '../train/session.js';
import { installErrorHandler } from './errors.js';

installErrorHandler();

let session: FineTuneSession | null = null;

function current(): FineTuneSession {
  if (!session) throw new Error('no session is open in this worker: call open() first');
  return session;
}

/** Files handed back to the page: their buffers move instead of being copied. */
function transferred(files: Record<string, Uint8Array>): Record<string, Uint8Array> {
  return Comlink.transfer(files, Object.values(files).map((f) => f.buffer as ArrayBuffer).filter((b, i, all) => all.indexOf(b) === i));
}

/**
 * Calls to the page through its proxied callbacks (events, streamed text) still on their way. Each proxy
 * has a channel of its own, so a result sent after them could reach the page first: results wait for them.
 */
const inFlight = new Set<Promise<void>>();

function deliver(call: unknown): void {
  const delivered: Promise<void> = Promise.resolve(call)
    .then(() => undefined, () => undefined)
    .finally(() => inFlight.delete(delivered));
  inFlight.add(delivered);
}

/** `result`, once every callback it made has reached the page. */
async function settled<T>(result: Promise<T>): Promise<T> {
  const value = await result;
  await Promise.all([...inFlight]);
  return value;
}

export const workerApi = {
  /** Read a dataset file's records (no model needed): its format, row count and unreadable rows. */
  async previewDataset(file: SessionFile) {
    const [f] = await datasetFiles(file);
    return previewDataset(f);
  },
  async open(spec: SessionSpec, onEvent: (event: SessionEvent) => void) {
    session?.destroy();
    session = null;
    session = await FineTuneSession.open(spec, { onEvent: (e) => deliver(onEvent(e)) });
    return session.info;
  },
  train: () => settled(current().train()),
  pause: () => current().pause(),
  resume: () => current().resume(),
  cancel: () => current().cancel(),
  evaluate: () => settled(current().evaluate()),
  generate: (prompt: string, request: GenerateRequest | undefined, onText?: (text: string) => void) =>
    settled(current().generate(prompt, request, onText && ((t) => deliver(onText(t))))),
  save: () => current().save(),
  exportAdapter: async (o?: { baseModel?: string }) => transferred(await current().exportAdapter(o)),
  exportMerged: async () => transferred(await current().exportMerged()),
  /** A round trip doing nothing: what the boundary itself costs. */
  ping: () => performance.now(),
  destroy() {
    session?.destroy();
    session = null;
  },
};

export type WorkerApi = typeof workerApi;

Comlink.expose(workerApi);
