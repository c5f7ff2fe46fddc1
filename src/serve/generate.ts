/**
 * Text generation with a KV cache: the prompt is run once (prefill), writing every layer's keys and
 * values into the cache; each new token then runs the model on one position, attending over the cache.
 * The last hidden state's logits come back to the host, which samples the next token (greedy,
 * temperature, top-k, top-p). Works with a LoRA adapter attached, merged or not, for a batch of
 * prompts at once, and with an adapter cache (./adapter-cache.ts), each sequence on its own adapter.
 */
import { checkOptionKeys, optionKeys } from '../util/options.js';
import { ShapeError } from '../errors.js';
import { view } from '../gpu/buffers.js';
import { IGNORE_INDEX } from '../kernels/cross-entropy.js';
import type { CausalLM } from '../model/causal-lm.js';
import type { PreparedBatch } from '../model/batch.js';
import { layerRope, type ModelConfig } from '../model/config.js';
import { cachedAttention, type KvCache } from './kv-cache.js';
import { rng } from '../util/random.js';
import type { AdapterCache } from './adapter-cache.js';

export interface SamplingOptions {
  /** 0 (default) picks the most likely token. */
  temperature?: number;
  /** Keep only the k most likely tokens (0 = all). */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p (1 = all). */
  topP?: number;
  seed?: number;
}

export interface GenerateOptions extends SamplingOptions {
  maxNewTokens: number;
  /** Stop after generating any of these (it is included in the output). Default: the config's eos ids. */
  stopTokens?: number[];
  /** Called with each new token as it is produced (and its sequence's index in a batch). */
  onToken?: (token: number, sequence: number) => void;
  /** Keep each step's logits (for tests and scoring). */
  keepLogits?: boolean;
  /**
   * With an adapter cache: the adapter of every sequence (an id, or null for the base alone), or one
   * per prompt. Those adapters are held against eviction until the call returns.
   */
  adapters?: string | null | readonly (string | null)[];
}

export const SAMPLING_OPTION_KEYS = optionKeys<SamplingOptions>()(['temperature', 'topK', 'topP', 'seed']);
const GENERATE_OPTION_KEYS = optionKeys<GenerateOptions>()(['maxNewTokens', 'stopTokens', 'onToken', 'keepLogits', 'adapters', ...(SAMPLING_OPTION_KEYS as readonly (keyof SamplingOptions)[])]);

export interface GenerateResult {
  tokens: number[];
  stoppedBy: 'stop-token' | 'max-new-tokens';
  logits?: Float32Array[];
}

/** The context past which a LongRoPE model switches its RoPE factors, or null. */
function longropeContext(c: ModelConfig): number | null {
  const long = Array.from({ length: c.numLayers }, (_, i) => layerRope(c, i)?.scaling).find((s) => s?.type === 'longrope');
  return long?.type === 'longrope' ? long.originalMaxPositions : null;
}

/** Pick a token from logits with the given sampling rule. */
export function sampleToken(logits: Float32Array, o: SamplingOptions, rand: () => number): number {
  const t = o.temperature ?? 0;
  if (t <= 0) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  let order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
  if (o.topK && o.topK > 0) order = order.slice(0, o.topK);
  const max = logits[order[0]];
  let probs = order.map((i) => Math.exp((logits[i] - max) / t));
  let total = probs.reduce((a, b) => a + b, 0);
  if (o.topP !== undefined && o.topP < 1) {
    let cum = 0;
    let keep = 0;
    while (keep < probs.length && cum < o.topP * total) cum += probs[keep++];
    order = order.slice(0, Math.max(keep, 1));
    probs = probs.slice(0, Math.max(keep, 1));
    total = probs.reduce((a, b) => a + b, 0);
  }
  let r = rand() * total;
  for (let k = 0; k < order.length; k++) {
    r -= probs[k];
    if (r <= 0) return order[k];
  }
  return order[order.length - 1];
}

/**
 * Generation for one prompt or a batch of prompts of different lengths. A batch is prefilled together
 * (prompts right-padded to a common length; padding rows land in the cache past each prompt and are
 * overwritten by its next tokens before anything reads them), then decoded in lockstep, one token per
 * sequence per step, each at its own position.
 */
export class Generator {
  private cache: KvCache | null = null;
  private scratch: { batch: number; hidden: GPUBuffer; logits: GPUBuffer; starts: GPUBuffer } | null = null;

  readonly adapters: AdapterCache | null;

  /** With `adapters`, calls that name no adapters use the cache's current selection. */
  constructor(
    readonly model: CausalLM,
    o: { adapters?: AdapterCache } = {},
  ) {
    if (o.adapters && o.adapters.model !== model) throw new ShapeError('generate: this adapter cache serves another model');
    this.adapters = o.adapters ?? null;
  }

  private ensureCache(batch: number, rows: number): KvCache {
    if (this.cache && this.cache.rows >= rows && this.cache.batch === batch) return this.cache;
    this.releaseCache();
    const c = this.model.config;
    const bytes = batch * rows * c.numKvHeads * c.headDim * 4;
    this.model.gpu.checkBufferSize(bytes, 'kv cache'); // before anything is made, so a refusal leaks nothing
    const made: GPUBuffer[] = [];
    const make = (kind: string) => Array.from({ length: c.numLayers }, (_, i) => made[made.push(this.model.gpu.createBuffer(bytes, undefined, `kv ${kind} ${i}`)) - 1]);
    try {
      this.cache = { k: make('k'), v: make('v'), rows, batch };
    } catch (e) {
      for (const b of made) this.model.gpu.destroyBuffer(b); // a failure part way releases the layers made
      throw e;
    }
    return this.cache;
  }

  /** Per-batch-size buffers: the last hidden state and logits of each sequence, and the start positions. */
  private ensureScratch(batch: number) {
    if (this.scratch?.batch === batch) return this.scratch;
    this.releaseScratch();
    const { gpu, config: c } = this.model;
    gpu.checkBufferSize(batch * c.vocabSize * 4, 'generate logits');
    const made: GPUBuffer[] = [];
    const make = (bytes: number, label: string) => made[made.push(gpu.createBuffer(bytes, undefined, label)) - 1];
    try {
      this.scratch = {
        batch,
        hidden: make(batch * c.hiddenSize * 4, 'generate hidden'),
        logits: make(batch * c.vocabSize * 4, 'generate logits'),
        starts: make(batch * 4, 'generate positions'),
      };
    } catch (e) {
      for (const b of made) gpu.destroyBuffer(b);
      throw e;
    }
    return this.scratch;
  }

  private releaseCache(): void {
    if (!this.cache) return;
    for (const b of [...this.cache.k, ...this.cache.v]) this.model.gpu.destroyBuffer(b);
    this.cache = null;
  }

  private releaseScratch(): void {
    if (!this.scratch) return;
    for (const b of [this.scratch.hidden, this.scratch.logits, this.scratch.starts]) this.model.gpu.destroyBuffer(b);
    this.scratch = null;
  }

  /**
   * Run rows[b] (all of one length, S) at positions starts[b].. through the model and return, per
   * sequence, the logits after its token at index last[b].
   */
  private async step(rows: number[][], starts: number[], last: number[]): Promise<Float32Array[]> {
    const { model } = this;
    const c = model.config;
    const B = rows.length;
    const S = rows[0].length;
    const ids = Uint32Array.from(rows.flat());
    const positions = Uint32Array.from({ length: B * S }, (_, t) => starts[Math.floor(t / S)] + (t % S));
    const noPlan = { unique: new Uint32Array(0), offsets: new Uint32Array(1), order: new Uint32Array(0) };
    const batch: PreparedBatch = {
      B, S, ids, positions, segments: null, targetCount: 0, targets: new Int32Array(B * S).fill(IGNORE_INDEX), embedPlan: noPlan, positionPlan: noPlan,
    };
    const scratch = this.ensureScratch(B);
    const acts = model.activationsFor(B, S, 'inference');
    acts.load(model.gpu, batch);
    model.gpu.write(scratch.starts, Uint32Array.from(starts));
    const rec = model.gpu.recorder();
    model.transformer.forwardHidden(rec, acts, cachedAttention(c, { cache: this.cache!, starts, startsBuffer: scratch.starts }));
    // Only one position per sequence needs logits: gather those hidden states, then one matmul.
    const rowBytes = c.hiddenSize * 4;
    for (let b = 0; b < B; b++) rec.copy(view(acts.lnf, (b * S + last[b]) * rowBytes, rowBytes), view(scratch.hidden, b * rowBytes, rowBytes), rowBytes);
    model.transformer.logits(rec, view(scratch.hidden, 0, B * rowBytes), view(scratch.logits, 0, B * c.vocabSize * 4), B);
    await rec.submit();
    const all = await model.gpu.readF32(scratch.logits);
    return Array.from({ length: B }, (_, b) => all.slice(b * c.vocabSize, (b + 1) * c.vocabSize));
  }

  async generate(prompt: number[], o: GenerateOptions): Promise<GenerateResult> {
    return (await this.generateBatch([prompt], o))[0];
  }

  /**
   * Continue each prompt; sequence b samples with its own generator seeded (seed + b), so a batch gives
   * what generating each prompt alone would. onToken gets the token and its sequence's index.
   */
  async generateBatch(prompts: number[][], o: GenerateOptions): Promise<GenerateResult[]> {
    const c = this.model.config;
    checkOptionKeys('generate options', o, GENERATE_OPTION_KEYS);
    if (prompts.length === 0) throw new ShapeError('generate: no prompts');
    if (!Number.isInteger(o.maxNewTokens) || o.maxNewTokens < 1) throw new ShapeError(`generate: maxNewTokens must be a positive integer, got ${o.maxNewTokens}`);
    for (const prompt of prompts) {
      if (prompt.length === 0) throw new ShapeError('generate: the prompt is empty');
      const total = prompt.length + o.maxNewTokens;
      if (total > c.maxPositions) throw new ShapeError(`generate: ${total} tokens exceed the model's ${c.maxPositions} positions`);
      const context = longropeContext(c);
      if (context !== null && total > context) {
        throw new ShapeError(`generate: ${total} tokens pass the ${context}-token pre-training context of this model's LongRoPE, past which it rotates the whole sequence with other factors (transformers recomputes it); generation with a KV cache stops at ${context} tokens`);
      }
      for (const t of prompt) if (!Number.isInteger(t) || t < 0 || t >= c.vocabSize) throw new ShapeError(`generate: token ${t} is outside the vocabulary`);
    }
    const select = this.adapterSelection(prompts.length, o.adapters);
    // Pinned before loading, so nothing spills what was just loaded.
    const release = select ? this.adapters!.pin(select.ids) : () => undefined;
    try {
      if (select) await this.adapters!.load(select.ids);
      return await this.decode(prompts, o, select?.apply);
    } finally {
      release();
    }
  }

  /** What to select in the cache before each step (the same every step, as the cache's selection may change in between). */
  private adapterSelection(count: number, adapters: GenerateOptions['adapters']): { ids: (string | null)[]; apply: () => void } | null {
    if (adapters === undefined) return null;
    const cache = this.adapters;
    if (!cache) throw new ShapeError('generate: adapters were named, but this generator was made without an adapter cache');
    if (typeof adapters === 'string' || adapters === null) return { ids: [adapters], apply: () => cache.select(adapters) };
    if (adapters.length !== count) throw new ShapeError(`generate: ${adapters.length} adapters for ${count} prompts`);
    const ids = [...adapters];
    return { ids, apply: () => cache.selectRows(ids) };
  }

  private async decode(prompts: number[][], o: GenerateOptions, selectAdapters = () => {}): Promise<GenerateResult[]> {
    const c = this.model.config;
    const B = prompts.length;
    const longest = Math.max(...prompts.map((p) => p.length));
    // Prefill lengths are padded to a power of two (at least 8) so that prompts of many lengths share a
    // few activation shapes instead of each allocating its own.
    const prefill = Math.min(Math.max(8, 2 ** Math.ceil(Math.log2(longest))), c.maxPositions);
    this.ensureCache(B, Math.max(prefill, longest + o.maxNewTokens));
    const stop = new Set(o.stopTokens ?? c.eosTokenIds);
    const rands = prompts.map((_, b) => rng((o.seed ?? 0) + b));
    const results: GenerateResult[] = prompts.map(() => ({ tokens: [], stoppedBy: 'max-new-tokens', logits: o.keepLogits ? [] : undefined }));
    const done = prompts.map(() => false);
    const padded = prompts.map((p) => [...p, ...new Array<number>(prefill - p.length).fill(0)]);
    selectAdapters();
    let logits = await this.step(padded, prompts.map(() => 0), prompts.map((p) => p.length - 1));
    for (let i = 0; i < o.maxNewTokens; i++) {
      const next = prompts.map((_, b) => {
        if (done[b]) return 0; // finished sequences ride along; their outputs are ignored
        const r = results[b];
        r.logits?.push(logits[b]);
        const token = sampleToken(logits[b], o, rands[b]);
        r.tokens.push(token);
        o.onToken?.(token, b);
        if (stop.has(token)) {
          r.stoppedBy = 'stop-token';
          done[b] = true;
        }
        return token;
      });
      if (done.every(Boolean) || i + 1 === o.maxNewTokens) break;
      selectAdapters();
      logits = await this.step(next.map((t) => [t]), prompts.map((p) => p.length + i), prompts.map(() => 0));
    }
    return results;
  }

  destroy(): void {
    this.releaseCache();
    this.releaseScratch();
  }
}
