/**
 * Training checkpoints in the browser's IndexedDB (through idb-keyval), so a run survives a reload.
 * Several runs share one database, each under its own name. A checkpoint is its files and a manifest
 * naming them, written in one IndexedDB transaction under a fresh generation key: it appears whole or
 * not at all, and rewriting a checkpoint of the same name never touches the files the old manifest names
 * until the new one is in. `latest` is a separate key, switched after the checkpoint it names is complete.
 */
import { createStore, del, delMany, get, getMany, keys, set, setMany, type UseStore } from 'idb-keyval';
import { CheckpointError, latestCheckpoint, type CheckpointStore } from '../train/checkpoints.js';

/** The database the stores use unless told otherwise. */
export const DEFAULT_CHECKPOINT_DB = 'webgpu-finetune-checkpoints';

/** The browser's storage cannot take a checkpoint: over the origin's quota, or the write was refused for space. */
export class StorageFullError extends CheckpointError {
  constructor(
    message: string,
    readonly neededBytes: number,
    readonly freeBytes: number | null,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

interface Manifest {
  name: string;
  generation: string;
  files: string[];
  bytes: number;
  written: number;
}

/** A run's entry in runs listings: what the page stored of it, and where it stands. */
export interface StoredRun {
  run: string;
  /** What the page saved with saveRunInfo (the model, dataset and options it started with). */
  info: unknown;
  latest: string | null;
  checkpoints: string[];
  bytes: number;
  /** When its newest checkpoint was written (ms since the epoch), or 0. */
  updated: number;
}

export interface IndexedDbCheckpointStore extends CheckpointStore {
  readonly run: string;
  /** Keep what the page needs to restart the run after a reload (plain, cloneable data). */
  saveRunInfo(info: unknown): Promise<void>;
  loadRunInfo(): Promise<unknown>;
  /** Remove the run: its checkpoints, its pointer and its info. */
  clear(): Promise<void>;
}

export interface IndexedDbOptions {
  /** Database name; default DEFAULT_CHECKPOINT_DB. */
  database?: string;
  /** The storage estimate the quota check uses; default navigator.storage.estimate(). */
  estimate?: () => Promise<{ usage?: number; quota?: number }>;
}

type Key = [string, ...string[]];
const stores = new Map<string, UseStore>();
const storeOf = (database: string) => {
  let s = stores.get(database);
  if (!s) stores.set(database, (s = createStore(database, 'checkpoints')));
  return s;
};

const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

/** Whether an IndexedDB failure was for want of space. */
function isQuotaError(e: unknown): boolean {
  const name = (e as { name?: string })?.name ?? '';
  return name === 'QuotaExceededError' || /quota|space/i.test((e as Error)?.message ?? '');
}

function checkName(name: string, what: string): string {
  if (typeof name !== 'string' || !/^[\w.-]{1,200}$/.test(name)) throw new CheckpointError(`'${String(name)}' is not a plain ${what} name (letters, digits, '.', '-' and '_')`);
  return name;
}

/** A view's own bytes: IndexedDB clones a typed array's whole buffer, not just the view. */
function ownBytes(d: Uint8Array): Uint8Array {
  return d.byteOffset === 0 && d.byteLength === d.buffer.byteLength ? d : d.slice();
}

/**
 * Checkpoints of run `run` in IndexedDB: `indexedDbCheckpointStore('my-run')` is a CheckpointStore the
 * Trainer writes and resumes from. Before each write the origin's storage estimate is checked; a write
 * that would not fit, or that the browser refuses for space, fails with a StorageFullError that says how
 * much was needed and how much is free, and leaves every earlier checkpoint as it was.
 */
export function indexedDbCheckpointStore(run = 'default', o: IndexedDbOptions = {}): IndexedDbCheckpointStore {
  checkName(run, 'run');
  const database = o.database ?? DEFAULT_CHECKPOINT_DB;
  const description = `IndexedDB ${database}/${run}`;
  const store = storeOf(database);
  const manifestKey = (name: string): Key => [run, 'manifest', name];
  const fileKey = (name: string, generation: string, file: string): Key => [run, 'file', name, generation, file];
  type Estimate = { usage?: number; quota?: number };
  const storage = (globalThis.navigator as Navigator | undefined)?.storage as StorageManager | undefined;
  const estimate: () => Promise<Estimate> = o.estimate ?? (() => (storage ? storage.estimate() : Promise.resolve({})));

  async function manifests(): Promise<Manifest[]> {
    const all = (await keys(store)) as IDBValidKey[];
    const wanted = all.filter((k): k is Key => Array.isArray(k) && k[0] === run && k[1] === 'manifest');
    return ((await getMany(wanted, store)) as (Manifest | undefined)[]).filter((m): m is Manifest => !!m);
  }

  /** File keys of this run that no manifest names: left by a deletion the page did not live to finish. */
  async function sweep(): Promise<void> {
    const live = new Set((await manifests()).map((m) => `${m.name}\u0000${m.generation}`));
    const all = (await keys(store)) as IDBValidKey[];
    const stale = all.filter((k): k is Key => Array.isArray(k) && k[0] === run && k[1] === 'file' && !live.has(`${k[2]}\u0000${k[3]}`));
    if (stale.length) await delMany(stale, store);
  }

  const self: IndexedDbCheckpointStore = {
    description,
    run,
    async write(name, files) {
      checkName(name, 'checkpoint');
      const entries = Object.entries(files);
      for (const [file] of entries) checkName(file, 'file');
      const bytes = entries.reduce((n, [, d]) => n + d.byteLength, 0);
      const { usage, quota } = await estimate().catch((): Estimate => ({}));
      const free = typeof quota === 'number' && typeof usage === 'number' ? quota - usage : null;
      const full = (cause?: unknown) =>
        new StorageFullError(
          `${description}: the browser's storage is full: this checkpoint needs ${mb(bytes)}${free === null ? '' : `, and ${mb(Math.max(free, 0))} of the ${mb(quota!)} quota are free`}; ` +
            'delete old runs, keep fewer checkpoints, or train a smaller adapter; the earlier checkpoints are intact',
          bytes,
          free,
          { cause },
        );
      if (free !== null && bytes > free) throw full();
      await sweep();
      const previous = (await get(manifestKey(name), store)) as Manifest | undefined;
      const generation = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
      const manifest: Manifest = { name, generation, files: entries.map(([f]) => f), bytes, written: Date.now() };
      try {
        // One transaction: the files and the manifest that makes them a checkpoint, or nothing.
        await setMany([...entries.map(([f, d]): [Key, Uint8Array] => [fileKey(name, generation, f), ownBytes(d)]), [manifestKey(name), manifest]], store);
      } catch (e) {
        throw isQuotaError(e) ? full(e) : new CheckpointError(`${description}: writing ${name} failed (${(e as Error)?.message ?? e}); the earlier checkpoints are intact`, { cause: e });
      }
      if (previous) await delMany(previous.files.map((f) => fileKey(name, previous.generation, f)), store);
    },
    async read(name, file) {
      const manifest = (await get(manifestKey(name), store)) as Manifest | undefined;
      if (!manifest || !manifest.files.includes(file)) return null;
      const data = (await get(fileKey(name, manifest.generation, file), store)) as Uint8Array | undefined;
      if (!data) throw new CheckpointError(`${description}: ${name}/${file} is listed but missing (the browser evicted it?)`);
      return data;
    },
    async list() {
      return (await manifests()).map((m) => m.name);
    },
    async remove(name) {
      const manifest = (await get(manifestKey(name), store)) as Manifest | undefined;
      if (!manifest) return;
      await del(manifestKey(name), store);
      await delMany(manifest.files.map((f) => fileKey(name, manifest.generation, f)), store);
    },
    async setLatest(name) {
      if (!(await get(manifestKey(name), store))) throw new CheckpointError(`${description}: no checkpoint '${name}' to point at`);
      await set([run, 'latest'], name, store);
    },
    async getLatest() {
      const name = await get([run, 'latest'], store);
      return typeof name === 'string' ? name : null;
    },
    async saveRunInfo(info) {
      await set([run, 'info'], info, store);
    },
    async loadRunInfo() {
      return (await get([run, 'info'], store)) ?? null;
    },
    async clear() {
      const all = (await keys(store)) as IDBValidKey[];
      await delMany(all.filter((k) => Array.isArray(k) && k[0] === run), store);
    },
  };
  return self;
}

/** The runs kept in a database, most recently written first. */
export async function indexedDbRuns(o: { database?: string } = {}): Promise<StoredRun[]> {
  const database = o.database ?? DEFAULT_CHECKPOINT_DB;
  const all = (await keys(storeOf(database))) as IDBValidKey[];
  const runs = [...new Set(all.filter((k): k is Key => Array.isArray(k) && typeof k[0] === 'string').map((k) => k[0]))];
  const out: StoredRun[] = [];
  for (const run of runs) {
    const store = indexedDbCheckpointStore(run, { database });
    const names = await store.list();
    const manifests = (await getMany(names.map((n) => [run, 'manifest', n]), storeOf(database))) as Manifest[];
    out.push({
      run,
      info: await store.loadRunInfo(),
      latest: await latestCheckpoint(store),
      checkpoints: names.sort(),
      bytes: manifests.reduce((n, m) => n + (m?.bytes ?? 0), 0),
      updated: Math.max(0, ...manifests.map((m) => m?.written ?? 0)),
    });
  }
  return out.sort((a, b) => b.updated - a.updated);
}
