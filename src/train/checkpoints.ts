/**
 * Where training checkpoints live: a store of named checkpoints, each a few files written whole or not
 * at all, and a pointer to the latest, switched only after the checkpoint it names is complete. So a
 * crash or a kill at any moment leaves the previous latest checkpoint readable. Stores: a folder (Node,
 * `folderCheckpointStore` in src/node) and memory (tests, short runs); a browser store (IndexedDB) implements the
 * same interface.
 */
import { WebGPUFinetuneError } from '../errors.js';

export interface CheckpointStore {
  readonly description: string;
  /** Writes checkpoint `name` (replacing one of that name) so that it appears whole or not at all. */
  write(name: string, files: Record<string, Uint8Array>): Promise<void>;
  /** A file of a complete checkpoint, or null. */
  read(name: string, file: string): Promise<Uint8Array | null>;
  /** Names of the complete checkpoints, in no particular order. */
  list(): Promise<string[]>;
  remove(name: string): Promise<void>;
  /** Point `latest` at a complete checkpoint, atomically. */
  setLatest(name: string): Promise<void>;
  /** What `latest` points at, or null. */
  getLatest(): Promise<string | null>;
}

/** A checkpoint that is missing, unreadable, or was made by another run. */
export class CheckpointError extends WebGPUFinetuneError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('invalid-checkpoint', message, options);
  }
}

/** A store that holds an earlier run's checkpoints, where a new run was asked for. */
export class RunExistsError extends CheckpointError {
  readonly latest: string;
  constructor(store: string, latest: string) {
    super(`${store} holds a run (latest ${latest}): continue it with resume, or start over with overwrite (its checkpoints are deleted once the new run saves its first)`);
    this.latest = latest;
  }
}

/** A checkpoint's name for an optimizer step: sorts by step. */
export function checkpointName(step: number): string {
  return `checkpoint-${String(step).padStart(8, '0')}`;
}

export function checkpointStep(name: string): number | null {
  const m = /^checkpoint-(\d{8,})$/.exec(name);
  return m ? Number(m[1]) : null;
}

/** The latest complete checkpoint: the pointer's, or (pointer missing or stale) the highest step's. */
export async function latestCheckpoint(store: CheckpointStore): Promise<string | null> {
  const names = (await store.list()).filter((n) => checkpointStep(n) !== null);
  const pointed = await store.getLatest();
  if (pointed && names.includes(pointed)) return pointed;
  names.sort((a, b) => checkpointStep(b)! - checkpointStep(a)!);
  return names[0] ?? null;
}

/**
 * What a run does with its store: the checkpoint it resumes from (resume: true needs one, 'if-any'
 * takes one when there is one), or null for a new run. A new run in a store that holds checkpoints is
 * refused unless `overwrite` is set, so no run deletes another's work unasked.
 */
export async function claimStore(store: CheckpointStore, o: { resume?: boolean | 'if-any'; overwrite?: boolean }): Promise<string | null> {
  if (o.resume && o.overwrite) throw new CheckpointError('resume continues the checkpoints that overwrite deletes: give one of them');
  const latest = await latestCheckpoint(store);
  if (o.resume) {
    if (!latest && o.resume !== 'if-any') throw new CheckpointError(`${store.description} has no checkpoint to resume from`);
    return latest;
  }
  if (latest && !o.overwrite) throw new RunExistsError(store.description, latest);
  return null;
}

/** Removes all but the newest `keep` checkpoints, never the one `latest` points at. */
export async function pruneCheckpoints(store: CheckpointStore, keep: number): Promise<void> {
  const latest = await store.getLatest();
  const names = (await store.list()).filter((n) => checkpointStep(n) !== null).sort((a, b) => checkpointStep(b)! - checkpointStep(a)!);
  for (const name of names.slice(Math.max(keep, 1))) if (name !== latest) await store.remove(name);
}

/** Checkpoints in memory: for tests and for runs that only need to resume within the page or process. */
export function memoryCheckpointStore(description = 'memory'): CheckpointStore {
  const checkpoints = new Map<string, Map<string, Uint8Array>>();
  let latest: string | null = null;
  return {
    description,
    async write(name, files) {
      checkpoints.set(name, new Map(Object.entries(files).map(([f, d]) => [f, d.slice()])));
    },
    async read(name, file) {
      return checkpoints.get(name)?.get(file)?.slice() ?? null;
    },
    async list() {
      return [...checkpoints.keys()];
    },
    async remove(name) {
      checkpoints.delete(name);
    },
    async setLatest(name) {
      if (!checkpoints.has(name)) throw new CheckpointError(`${description}: no checkpoint '${name}' to point at`);
      latest = name;
    },
    async getLatest() {
      return latest;
    },
  };
}
