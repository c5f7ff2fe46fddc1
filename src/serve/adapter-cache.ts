/**
 * Thousands of adapters resident over one loaded base (f32, 16-bit or 4-bit), in the manner of
 * Lamini's adapter cache, Punica and S-LoRA.
 *
 * - LoRA adapters live in pools (./adapter-pool.ts): one per class rank (a power of two) and set of
 *   modules, each a few large GPU buffers of fixed-size slots. A forward reads any slots at once
 *   (src/kernels/multi-lora.ts), so a batch whose rows use different adapters, of different ranks,
 *   costs one pass over the base plus a gathered low-rank term per row.
 * - Sparse adapters (./sparse-weights.ts) live as their own small buffers; one at a time is written
 *   into the base's weights, and switching away writes the base's values back, bit for bit. A batch
 *   holds at most one sparse adapter, on every row. A sparse+LoRA adapter is both.
 * - Tiers: every adapter's arrays stay on the host (or, past a host budget, only in a store such as
 *   IndexedDB until loaded); the GPU tier holds what its budget allows and evicts the least recently
 *   used adapter that nothing holds (selected or pinned). A later use uploads it again.
 *
 * Switching (`select`, `selectRows`) chooses the adapters of the next forwards: for resident adapters it
 * is host bookkeeping only: no upload, no allocation, no new pipeline. The cache sits in the model's
 * linear layers as their hooks; generation and evaluation go through the model as usual
 * (`new Generator(model, { adapters: cache })`).
 */
import { checkOptionKeys, optionKeys } from '../util/options.js';
import { AdapterCacheError, ModelMismatchError, ShapeError } from '../errors.js';
import type { TensorView } from '../gpu/buffers.js';
import type { Gpu } from '../gpu/gpu.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { multiLora, NO_SLOT } from '../kernels/multi-lora.js';
import type { LinearHooks, Method, PassContext } from '../methods/method.js';
import { linearModules, type LinearShape } from '../methods/targets.js';
import type { Activations } from '../model/activations.js';
import type { BatchInput, PreparedBatch } from '../model/batch.js';
import type { CausalLM, EvalResult } from '../model/causal-lm.js';
import { shapesDigest } from '../model/fingerprint.js';
import type { ModelConfig } from '../model/config.js';
import { adapterFromMethod, adapterHostBytes, loraAdapterFromPeft, loraOf, sparseAdapterFromFile, sparseOf, type Adapter, type LoraAdapter, type SparseAdapter } from './adapters.js';
import { AdapterPool, rankClass, slotFloats, slotsPerBuffer } from './adapter-pool.js';
import { destroyResidentSparse, sparseAdapterBytes, SparseWeights, type ResidentSparse } from './sparse-weights.js';
import type { AdapterStore } from './adapter-store.js';

export interface AdapterCacheOptions {
  /** GPU bytes the cache's pools and sparse adapters may take. Default 512 MiB. */
  gpuBudgetBytes?: number;
  /** Slots per pool buffer, at most what fits the device's binding size limit. Default 1024. */
  slotsPerBuffer?: number;
  /**
   * The tier behind host memory: every adapter added is written there, and past `hostBudgetBytes` the
   * least recently used adapters' arrays leave host memory (`load` brings them back).
   */
  store?: AdapterStore;
  /** Host bytes of adapter arrays kept in memory when there is a store. Default: no limit. */
  hostBudgetBytes?: number;
}

export interface AdapterInfo {
  id: string;
  kind: Adapter['kind'];
  /** The largest module rank (LoRA), and the pool rank it is padded to. */
  rank?: number;
  poolRank?: number;
  /** Trainable values (sparse). */
  nnz?: number;
  modules: string[];
  /** Whether it is on the GPU now (a later use of a host-only adapter uploads it). */
  resident: boolean;
  /** Whether its arrays are in host memory (false: only in the store, until `load`). */
  onHost: boolean;
  /** GPU bytes while resident (its slot, or its sparse buffers), and host bytes. */
  gpuBytes: number;
  hostBytes: number;
}

/** How many adapters of one rank over one set of modules a GPU budget holds. */
export interface AdapterCapacity {
  poolRank: number;
  bytesPerAdapter: number;
  /** Slots per pool buffer under the device's binding size limit. */
  adaptersPerBuffer: number;
  adapters: number;
}

interface Entry {
  id: string;
  kind: Adapter['kind'];
  /** Its arrays, or null while they are only in the store. */
  adapter: Adapter | null;
  /** Written to the store (only then may the host arrays go). */
  stored: boolean;
  info: Pick<AdapterInfo, 'rank' | 'poolRank' | 'nnz' | 'gpuBytes'>;
  hostBytes: number;
  modules: string[];
  /** LoRA: its pool, and its slot there while resident (-1 when not). */
  pool: AdapterPool | null;
  slot: number;
  /** Sparse: its buffers while resident. */
  sparse: ResidentSparse | null;
  /** Batches holding it (pins), and whether the current selection names it. */
  pins: number;
  selected: boolean;
  /** The clock at its last use. */
  used: number;
}

/** A group of rows reading one pool buffer: one slot for all rows, or a slot (or none) per sequence. */
interface Group {
  pool: AdapterPool;
  buffer: number;
  fixed: number | null;
  perSequence: Uint32Array | null;
}

interface Selection {
  /** Per sequence (null: one adapter on every row); entries null where a row has none. */
  sequences: (Entry | null)[] | null;
  entries: Entry[];
  groups: Group[];
  version: number;
}

/** Per activation arena: the low-rank scratch and the per-row slots of the selection last written. */
interface RowState {
  u: GPUBuffer | null;
  rowSlots: GPUBuffer[];
  version: number;
}

const DEFAULT_BUDGET = 512 * 2 ** 20;
const DEFAULT_SLOTS = 1024;

export class AdapterCache implements LinearHooks {
  readonly fused = false;
  readonly gpu: Gpu;
  readonly gpuBudgetBytes: number;
  private readonly slotsPerBuffer: number;
  private readonly entries = new Map<string, Entry>();
  private readonly pools = new Map<string, AdapterPool>();
  /** Entries on the GPU tier (their recency is each one's `used` stamp). */
  private readonly resident = new Map<string, Entry>();
  /** Stamps of use: the least recently used resident entry has the smallest. */
  private clock = 0;
  /** Entries whose arrays are in host memory, least recently used first. */
  private readonly onHost = new Map<string, Entry>();
  private hostBytes = 0;
  private readonly store: AdapterStore | null;
  private readonly hostBudgetBytes: number;
  private readonly shapes: Map<string, LinearShape>;
  private readonly rowStates = new Map<Activations, RowState>();
  private selection: Selection = { sequences: null, entries: [], groups: [], version: 0 };
  /** Where sparse adapters are written into the base's weights. */
  private readonly inWeights: SparseWeights;
  /** A failed store write or delete, reported by the next add or flush. */
  private storeError: Error | null = null;
  private readonly writes = new Set<Promise<void>>();
  private sparseBytes = 0;
  private destroyed = false;

  constructor(
    readonly model: CausalLM,
    o: AdapterCacheOptions = {},
  ) {
    checkOptionKeys('adapter cache options', o, optionKeys<AdapterCacheOptions>()(['gpuBudgetBytes', 'slotsPerBuffer', 'store', 'hostBudgetBytes']));
    if (model.transformer.hooks) throw new ShapeError('this model already has a method attached; serve adapters from a base with none (detach it, or merge and reload)');
    this.gpu = model.gpu;
    const budget = o.gpuBudgetBytes ?? DEFAULT_BUDGET;
    if (!(budget > 0)) throw new ShapeError(`gpuBudgetBytes must be positive, got ${budget}`);
    this.gpuBudgetBytes = budget;
    const slots = o.slotsPerBuffer ?? DEFAULT_SLOTS;
    if (!Number.isInteger(slots) || slots < 1) throw new ShapeError(`slotsPerBuffer must be a positive integer, got ${slots}`);
    this.slotsPerBuffer = slots;
    this.store = o.store ?? null;
    this.hostBudgetBytes = o.hostBudgetBytes ?? Infinity;
    if (!(this.hostBudgetBytes > 0)) throw new ShapeError(`hostBudgetBytes must be positive, got ${o.hostBudgetBytes}`);
    if (o.hostBudgetBytes !== undefined && !this.store) throw new ShapeError('hostBudgetBytes needs a store for the adapters it moves out of host memory');
    this.shapes = linearModules(model.config, ['all-linear'], 'adapter cache');
    this.inWeights = new SparseWeights(model, this.shapes);
    model.transformer.hooks = this;
  }

  /**
   * What a budget holds: adapters of `rank` on `targetModules` (engine or Hugging Face names, or
   * 'all-linear') for a model of this config, under a device's limits.
   */
  static capacity(
    config: ModelConfig,
    limits: Pick<GPUSupportedLimits, 'maxBufferSize' | 'maxStorageBufferBindingSize'>,
    o: { rank: number; targetModules: string[]; gpuBudgetBytes?: number; slotsPerBuffer?: number },
  ): AdapterCapacity {
    const shapes = linearModules(config, o.targetModules, 'adapter cache');
    const poolRank = rankClass(o.rank);
    const floats = slotFloats(poolRank, shapes.values());
    const bytesPerAdapter = (floats + shapes.size) * 4;
    const adaptersPerBuffer = slotsPerBuffer(floats, limits, o.slotsPerBuffer ?? DEFAULT_SLOTS);
    // Buffers grow to whatever the budget has left, so a lone pool reaches every whole slot of it.
    const adapters = adaptersPerBuffer < 1 ? 0 : Math.floor((o.gpuBudgetBytes ?? DEFAULT_BUDGET) / bytesPerAdapter);
    return { poolRank, bytesPerAdapter, adaptersPerBuffer, adapters };
  }

  /** Adapters held (on the GPU or only on the host). */
  get size(): number {
    return this.entries.size;
  }

  get residentCount(): number {
    return this.resident.size;
  }

  /** GPU bytes taken: pool buffers (whole, free slots included) and resident sparse adapters. */
  get gpuBytes(): number {
    let n = this.sparseBytes;
    for (const p of this.pools.values()) n += p.gpuBytes;
    return n;
  }

  has(name: string): boolean {
    const groups = this.selection.groups;
    for (let i = 0; i < groups.length; i++) if (groups[i].pool.modules.has(name)) return true;
    return false;
  }

  ids(): string[] {
    return [...this.entries.keys()];
  }

  info(id: string): AdapterInfo {
    const e = this.entry(id);
    return { id, kind: e.kind, modules: e.modules, resident: this.resident.has(id), onHost: e.adapter !== null, hostBytes: e.hostBytes, ...e.info };
  }

  /**
   * Take an adapter (its arrays are kept, not copied: do not change them after) and upload it, evicting
   * the least recently used adapter no batch holds when the budget is full. Shapes that do not fit this
   * base are a ShapeError; an adapter made for another base, a ModelMismatchError.
   */
  add(id: string, adapter: Adapter): AdapterInfo {
    this.alive();
    this.reportStoreError();
    if (typeof id !== 'string' || id.length === 0) throw new ShapeError('an adapter id must be a non-empty string');
    if (this.entries.has(id)) throw new AdapterCacheError('adapter-exists', `an adapter '${id}' is already in the cache (remove it first)`);
    if (!['lora', 'sparse', 'sparse+lora'].includes((adapter as { kind?: string })?.kind ?? '')) throw new ShapeError(`adapter '${id}': kind must be 'lora', 'sparse' or 'sparse+lora'`);
    this.checkBase(id, adapter);
    const lora = loraOf(adapter);
    const sparse = sparseOf(adapter);
    const loraModules = lora ? this.checkLora(id, lora) : [];
    const sparseModules = sparse ? this.checkSparse(id, sparse) : [];
    const modules = [...this.shapes.keys()].filter((m) => loraModules.includes(m) || sparseModules.includes(m));
    let pool: AdapterPool | null = null;
    const maxRank = lora ? Math.max(...[...lora.modules.values()].map((m) => m.rank)) : 0;
    if (lora) {
      const rank = rankClass(maxRank);
      const key = AdapterPool.key(rank, loraModules);
      pool = this.pools.get(key) ?? null;
      if (!pool) {
        const perBuffer = slotsPerBuffer(slotFloats(rank, loraModules.map((m) => this.shapes.get(m)!)), this.gpu.limits, this.slotsPerBuffer);
        if (perBuffer < 1) throw new ShapeError(`adapter '${id}': one slot of rank ${rank} exceeds this device's buffer binding limit`);
        pool = new AdapterPool(this.gpu, rank, loraModules.map((m) => [m, this.shapes.get(m)!]), perBuffer);
        this.pools.set(key, pool);
      }
    }
    const info = {
      ...(lora ? { rank: maxRank, poolRank: pool!.rank } : {}),
      ...(sparse ? { nnz: [...sparse.modules.values()].reduce((n, m) => n + m.indices.length, 0) } : {}),
      gpuBytes: (pool?.slotBytes ?? 0) + (sparse ? sparseAdapterBytes(sparse) : 0),
    };
    const entry: Entry = { id, kind: adapter.kind, adapter, stored: false, info, hostBytes: adapterHostBytes(adapter), modules, pool, slot: -1, sparse: null, pins: 0, selected: false, used: 0 };
    this.entries.set(id, entry);
    try {
      this.makeResident(entry);
    } catch (e) {
      this.forget(entry); // a part made resident before the failure is released with it
      throw e;
    }
    if (this.store) {
      const write = this.store.set(id, adapter).then(
        () => {
          entry.stored = true;
          this.spill(new Set());
        },
        (error) => this.noteStoreError(error),
      );
      this.writes.add(write);
      void write.finally(() => this.writes.delete(write));
    }
    return this.info(id);
  }

  /** Wait until every adapter added is in the store (and host memory is back within its budget). */
  async flush(): Promise<void> {
    while (this.writes.size) await Promise.all(this.writes);
    this.alive();
    this.reportStoreError();
  }

  /**
   * Bring adapters whose arrays are only in the store back into host memory (uploading them to the GPU
   * when they are next used). Generation and evaluation call it for the adapters they name.
   */
  async load(ids: readonly (string | null)[]): Promise<void> {
    const loaded = new Set<string>();
    for (const id of new Set(ids)) {
      if (id === null) continue;
      const e = this.entry(id);
      loaded.add(id);
      if (e.adapter) {
        this.keepOnHost(e);
        continue;
      }
      const adapter = await this.store!.get(id);
      if (!adapter) throw new AdapterCacheError('adapter-unknown', `adapter '${id}' is missing from the cache's store`);
      if (e.adapter === null && this.entries.get(id) === e) {
        e.adapter = adapter;
        this.keepOnHost(e);
      }
    }
    this.spill(loaded);
  }

  /** A PEFT LoRA adapter's files (adapter_config.json, adapter_model.safetensors). */
  async addPeft(id: string, files: { config: Uint8Array | string; weights: Uint8Array }): Promise<AdapterInfo> {
    return this.add(id, await loraAdapterFromPeft(files, this.model.config));
  }

  /** A sparse delta file of this engine. */
  async addSparseDelta(id: string, bytes: Uint8Array): Promise<AdapterInfo> {
    return this.add(id, await sparseAdapterFromFile(bytes, this.model.config, id));
  }

  /** What a LoRA, sparse or sparse+LoRA method has trained (on this base, loaded separately or not). */
  async addFromMethod(id: string, method: Method): Promise<AdapterInfo> {
    return this.add(id, await adapterFromMethod(method));
  }

  /** Drop an adapter from every tier; one a batch holds is an AdapterCacheError. */
  remove(id: string): void {
    const e = this.entry(id);
    if (e.selected || e.pins > 0) throw new AdapterCacheError('adapter-in-use', `adapter '${id}' is in use by ${e.selected ? 'the current selection' : 'a batch'}`);
    this.forget(e);
    this.store?.delete(id).catch((error) => this.noteStoreError(error));
  }

  /** The adapter of every row of the next forwards (null: the base alone). */
  select(id: string | null): void {
    const e = id === null ? null : this.entry(id);
    this.setSelection(null, e ? [e] : []);
  }

  /** One adapter per sequence of the next forwards' batch (null: that row has the base alone). */
  selectRows(ids: readonly (string | null)[]): void {
    const sequences = ids.map((id) => (id === null ? null : this.entry(id)));
    this.setSelection(sequences, [...new Set(sequences.filter((e): e is Entry => e !== null))]);
  }

  /** Hold adapters against eviction (while a multi-step batch runs); returns the release. */
  pin(ids: readonly (string | null)[]): () => void {
    const held = [...new Set(ids.filter((id): id is string => id !== null))].map((id) => this.entry(id));
    for (const e of held) e.pins++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      for (const e of held) e.pins--;
    };
  }

  /** The model's loss on a batch with one adapter per row (null: the base), each row's loss apart. */
  async evaluate(input: BatchInput | PreparedBatch, adapters: readonly (string | null)[], o: { accuracy?: boolean } = {}): Promise<EvalResult> {
    // Pinned before loading, so nothing spills what was just loaded.
    const batch = this.model.prepare(input);
    if (adapters.length !== batch.B) throw new ShapeError(`evaluate: ${adapters.length} adapters for a batch of ${batch.B} rows`);
    const release = this.pin(adapters);
    try {
      await this.load(adapters);
      this.selectRows(adapters);
      return await this.model.evaluate(batch, { ...o, perRow: true });
    } finally {
      release();
    }
  }

  /** Records each selected pool's gathered term for linear `name` into y. */
  outputAdd(rec: CommandRecorder, acts: Activations, name: string, x: TensorView, y: TensorView, outDim: number, inDim: number, _pass: PassContext): void {
    const { groups } = this.selection;
    let state: RowState | null = null;
    for (let k = 0; k < groups.length; k++) {
      const g = groups[k];
      const m = g.pool.modules.get(name);
      if (!m) continue;
      state ??= this.rowState(acts);
      const b = g.pool.buffers[g.buffer];
      multiLora(rec, {
        x, y, u: state.u!, T: acts.T, inDim, outDim, rank: g.pool.rank, pool: b.pool, slots: b.slots, slotStride: g.pool.slotStride,
        offA: m.offA, offB: m.offB, rows: g.fixed !== null ? { slot: g.fixed } : { rowSlots: state.rowSlots[k] }, scales: b.scales, scaleStride: g.pool.modules.size, scaleOffset: m.index,
      });
    }
  }

  /** Restore the base's weights (no sparse adapter in them), free every GPU buffer and leave the model. */
  destroy(): void {
    if (this.destroyed) return;
    this.switchSparse(null);
    for (const p of this.pools.values()) p.destroy();
    for (const e of this.entries.values()) if (e.sparse) destroyResidentSparse(e.sparse);
    for (const acts of [...this.rowStates.keys()]) this.releaseRowState(acts);
    this.pools.clear();
    this.entries.clear();
    this.resident.clear();
    this.onHost.clear();
    if (this.model.transformer.hooks === this) this.model.transformer.hooks = null;
    this.destroyed = true;
  }

  private alive(): void {
    if (this.destroyed) throw new AdapterCacheError('adapter-unknown', 'this adapter cache was destroyed');
  }

  private noteStoreError(error: unknown): void {
    this.storeError = error instanceof Error ? error : new Error(String(error));
  }

  /** The error for an entry whose arrays are only in the store. */
  private notLoaded(e: Entry): AdapterCacheError {
    return new AdapterCacheError('adapter-not-loaded', `adapter '${e.id}' is only in the store: await cache.load(['${e.id}']) first (generation and evaluation do)`);
  }

  /** A store write or delete that failed since the last report (the adapter stays in host memory). */
  private reportStoreError(): void {
    const error = this.storeError;
    if (!error) return;
    this.storeError = null;
    throw new AdapterCacheError('adapter-store', `the adapter store failed: ${error.message}; the adapters it did not take stay in host memory`);
  }

  /** Out of every tier of this cache (the store aside). */
  private forget(e: Entry): void {
    this.evict(e);
    this.entries.delete(e.id);
    if (this.onHost.delete(e.id)) this.hostBytes -= e.hostBytes;
  }

  private keepOnHost(e: Entry): void {
    if (!this.onHost.delete(e.id)) this.hostBytes += e.hostBytes;
    this.onHost.set(e.id, e);
  }

  /** Past the host budget, drop the arrays of the least recently used stored adapters nothing holds. */
  private spill(keep: Set<string>): void {
    if (this.hostBytes <= this.hostBudgetBytes) return;
    for (const e of [...this.onHost.values()]) {
      if (this.hostBytes <= this.hostBudgetBytes) break;
      if (!e.stored || e.selected || e.pins > 0 || keep.has(e.id)) continue;
      e.adapter = null;
      this.onHost.delete(e.id);
      this.hostBytes -= e.hostBytes;
    }
  }

  private entry(id: string): Entry {
    this.alive();
    const e = this.entries.get(id);
    if (!e) throw new AdapterCacheError('adapter-unknown', `no adapter '${id}' in the cache`);
    return e;
  }

  private setSelection(sequences: (Entry | null)[] | null, entries: Entry[]): void {
    const sparse = entries.filter((e) => e.kind !== 'lora');
    if (sparse.length > 0 && (entries.length > 1 || (sequences && sequences.some((e) => e === null)))) {
      throw new AdapterCacheError('adapter-batch', `sparse adapter '${sparse[0].id}' changes the base's own weights, so a batch with it must use it on every row and nothing else`);
    }
    for (const e of entries) {
      if (!e.adapter && !this.isResident(e)) throw this.notLoaded(e);
    }
    // The new selection is held before anything is uploaded, so making one resident never evicts another.
    for (const e of this.selection.entries) e.selected = false;
    for (const e of entries) e.selected = true;
    try {
      for (const e of entries) {
        if (!this.isResident(e)) this.makeResident(e);
        else this.touch(e);
      }
      this.switchSparse(sparse[0] ?? null);
    } catch (error) {
      // The previous selection may have lost its slots to the uploads: nothing stays selected.
      for (const e of entries) e.selected = false;
      this.switchSparse(null);
      this.selection = { sequences: null, entries: [], groups: [], version: this.selection.version + 1 };
      throw error;
    }
    this.selection = { sequences, entries, groups: sequences ? this.rowGroups(sequences) : this.allRowGroups(entries[0]), version: this.selection.version + 1 };
  }

  private isResident(e: Entry): boolean {
    return (!e.pool || e.slot >= 0) && (e.kind === 'lora' || e.sparse !== null);
  }

  private allRowGroups(e: Entry | undefined): Group[] {
    if (!e?.pool) return [];
    const { buffer, local } = e.pool.locate(e.slot);
    return [{ pool: e.pool, buffer, fixed: local, perSequence: null }];
  }

  private rowGroups(sequences: (Entry | null)[]): Group[] {
    const groups: Group[] = [];
    sequences.forEach((e, b) => {
      if (!e?.pool) return;
      const { buffer, local } = e.pool.locate(e.slot);
      let g = groups.find((x) => x.pool === e.pool && x.buffer === buffer);
      if (!g) groups.push((g = { pool: e.pool, buffer, fixed: null, perSequence: new Uint32Array(sequences.length).fill(NO_SLOT) }));
      g.perSequence![b] = local;
    });
    return groups;
  }

  /** The scratch and row slots of an activation arena, written for the current selection. */
  private rowState(acts: Activations): RowState {
    let s = this.rowStates.get(acts);
    if (!s) {
      s = { u: null, rowSlots: [], version: -1 };
      this.rowStates.set(acts, s);
      acts.onDestroy(() => this.releaseRowState(acts));
    }
    const { groups, sequences, version } = this.selection;
    const rank = Math.max(...groups.map((g) => g.pool.rank));
    if (!s.u || s.u.size < acts.T * rank * 4) {
      if (s.u) this.gpu.destroyBuffer(s.u);
      s.u = null; // a failed allocation leaves none rather than the destroyed one
      s.u = this.gpu.createBuffer(acts.T * rank * 4, undefined, 'adapter cache u');
    }
    if (s.version !== version) {
      if (sequences && sequences.length !== acts.B) throw new ShapeError(`the adapters selected are for ${sequences.length} sequences, but the batch has ${acts.B}`);
      const perRow = acts.T / acts.B;
      groups.forEach((g, k) => {
        if (!g.perSequence) return;
        s!.rowSlots[k] ??= this.gpu.createBuffer(acts.T * 4, undefined, `adapter cache rows ${k}`);
        this.gpu.write(s!.rowSlots[k], Uint32Array.from({ length: acts.T }, (_, t) => g.perSequence![Math.floor(t / perRow)]));
      });
      s.version = version;
    }
    return s;
  }

  private releaseRowState(acts: Activations): void {
    const s = this.rowStates.get(acts);
    if (!s) return;
    if (s.u) this.gpu.destroyBuffer(s.u);
    for (const b of s.rowSlots) if (b) this.gpu.destroyBuffer(b);
    this.rowStates.delete(acts);
  }

  /** A stamp, not a reordering: a switch stays a lookup and a store however many adapters are resident. */
  private touch(e: Entry): void {
    if (e.slot >= 0 || e.sparse) this.resident.set(e.id, e);
    e.used = ++this.clock;
  }

  /** The least recently used resident entry no batch holds, among those `fits` accepts. */
  private victim(fits: (e: Entry) => boolean): Entry | null {
    // A scan, on eviction only (an upload follows it anyway).
    let best: Entry | null = null;
    for (const e of this.resident.values()) if (!e.selected && e.pins === 0 && fits(e) && (!best || e.used < best.used)) best = e;
    return best;
  }

  /** Upload an entry to the GPU tier, making room by eviction if the budget is full. */
  private makeResident(e: Entry): void {
    if (!e.adapter) throw this.notLoaded(e);
    this.keepOnHost(e);
    const pool = e.pool;
    if (pool && e.slot < 0) {
      let slot = pool.take();
      // A new buffer, as large as the budget leaves room for (up to a full one).
      const room = Math.min(pool.maxSlotsPerBuffer, Math.floor((this.gpuBudgetBytes - this.gpuBytes) / pool.slotBytes));
      if (slot === null && room >= 1) {
        pool.grow(room);
        slot = pool.take();
      }
      if (slot === null) {
        const v = this.victim((o) => o.pool === pool);
        if (!v) throw new AdapterCacheError('adapter-cache-full', `no room for adapter '${e.id}': its pool (rank ${pool.rank}) is full, every adapter in it is in use, and another pool buffer would pass the ${this.gpuBudgetBytes}-byte budget`);
        this.evict(v);
        slot = pool.take()!;
      }
      pool.write(slot, loraOf(e.adapter)!);
      e.slot = slot;
      this.touch(e); // resident (and evictable) from here, whatever happens to the sparse part
    }
    const sparse = sparseOf(e.adapter);
    if (sparse && !e.sparse) {
      const bytes = sparseAdapterBytes(sparse);
      while (this.gpuBytes + bytes > this.gpuBudgetBytes) {
        const v = this.victim((o) => o.sparse !== null && o !== e);
        if (!v) throw new AdapterCacheError('adapter-cache-full', `no room for the sparse part of adapter '${e.id}' (${bytes} bytes) within the ${this.gpuBudgetBytes}-byte budget: every resident sparse adapter is in use`);
        this.evict(v);
      }
      e.sparse = this.inWeights.upload(e.id, sparse);
      this.sparseBytes += e.sparse.bytes;
    }
    this.touch(e);
  }

  /** Leave the GPU tier (the host arrays stay). */
  private evict(e: Entry): void {
    if (e.pool && e.slot >= 0) {
      e.pool.release(e.slot);
      e.slot = -1;
    }
    if (e.sparse) {
      if (this.inWeights.active === e.sparse) this.switchSparse(null);
      destroyResidentSparse(e.sparse);
      this.sparseBytes -= e.sparse.bytes;
      e.sparse = null;
    }
    this.resident.delete(e.id);
  }

  /** Put `next`'s sparse values into the weights (null: the base's own). */
  private switchSparse(next: Entry | null): void {
    this.inWeights.switchTo(next?.sparse ?? null);
  }

  private checkBase(id: string, a: Adapter): void {
    if (a.kind === 'sparse+lora') for (const part of [a.lora, a.sparse]) this.checkBase(id, part);
    const f = a.base;
    if (!f) return;
    if (f.shapes && f.shapes !== shapesDigest(this.model.config)) throw new ModelMismatchError(`adapter '${id}' was made for a model with another configuration or shapes`);
    if (f.weights && f.weights !== this.model.fingerprint.weights) throw new ModelMismatchError(`adapter '${id}' was made for another base: the weights it was trained on differ from this model's`);
  }

  private module(id: string, name: string): LinearShape {
    const s = this.shapes.get(name);
    if (!s) throw new ShapeError(`adapter '${id}': '${name}' is not a linear layer of this ${this.model.config.architecture} model`);
    return s;
  }

  /** The adapter's modules in model order, every shape checked. */
  private checkLora(id: string, a: LoraAdapter): string[] {
    if (a.modules.size === 0) throw new ShapeError(`adapter '${id}' has no modules`);
    for (const [name, w] of a.modules) {
      const s = this.module(id, name);
      if (!Number.isInteger(w.rank) || w.rank < 1 || w.rank > Math.min(s.in, s.out)) throw new ShapeError(`adapter '${id}': rank ${w.rank} of '${name}' is not between 1 and ${Math.min(s.in, s.out)}`);
      if (!(w.A instanceof Float32Array) || !(w.B instanceof Float32Array)) throw new ShapeError(`adapter '${id}': A and B of '${name}' must be Float32Arrays`);
      if (!allFinite(w.A) || !allFinite(w.B)) throw new ShapeError(`adapter '${id}': '${name}' holds a value that is not finite`);
      if (w.A.length !== w.rank * s.in) throw new ShapeError(`adapter '${id}': '${name}' A has ${w.A.length} values; [${w.rank}, ${s.in}] is ${w.rank * s.in}`);
      if (w.B.length !== s.out * w.rank) throw new ShapeError(`adapter '${id}': '${name}' B has ${w.B.length} values; [${s.out}, ${w.rank}] is ${s.out * w.rank}`);
      if (!Number.isFinite(w.scale)) throw new ShapeError(`adapter '${id}': the scale of '${name}' is ${w.scale}`);
    }
    return [...this.shapes.keys()].filter((m) => a.modules.has(m));
  }

  private checkSparse(id: string, a: SparseAdapter): string[] {
    if (a.modules.size === 0) throw new ShapeError(`adapter '${id}' has no modules`);
    for (const [name, d] of a.modules) {
      const s = this.module(id, name);
      this.inWeights.weight(name);
      if (!(d.indices instanceof Uint32Array) || !(d.delta instanceof Float32Array)) throw new ShapeError(`adapter '${id}': '${name}' needs Uint32Array indices and a Float32Array delta`);
      if (!allFinite(d.delta)) throw new ShapeError(`adapter '${id}': the delta of '${name}' holds a value that is not finite`);
      if (d.delta.length !== d.indices.length) throw new ShapeError(`adapter '${id}': '${name}' has ${d.indices.length} indices and ${d.delta.length} values`);
      const sorted = Uint32Array.from(d.indices).sort();
      for (let i = 0; i < sorted.length; i++) {
        if (sorted[i] >= s.out * s.in) throw new ShapeError(`adapter '${id}': index ${sorted[i]} of '${name}' is outside its ${s.out}x${s.in} weight`);
        if (i > 0 && sorted[i] === sorted[i - 1]) throw new ShapeError(`adapter '${id}': '${name}' names index ${sorted[i]} twice`);
      }
    }
    return [...this.shapes.keys()].filter((m) => a.modules.has(m));
  }
}

function allFinite(a: Float32Array): boolean {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return false;
  return true;
}
