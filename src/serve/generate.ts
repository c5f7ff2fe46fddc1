/**
 * Text generation with a KV cache: the prompt is run once (prefill), writing every layer's keys and
 * values into the cache; each new token then runs the model on one position, attending over the cache.
 * The last hidden state's logits come back to the host, which samples the next token (greedy,
 * temperature, top-k, top-p). Works with a LoRA adapter attached, merged or not.
 */
import { ShapeError } from '../errors.js';
import { view } from '../gpu/buffers.js';
import { IGNORE_INDEX } from '../kernels/cross-entropy.js';
import type { CausalLM } from '../model/causal-lm.js';
import type { PreparedBatch } from '../model/batch.js';
import type { KvCache } from '../model/transformer.js';
import { rng } from '../util/random.js';

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
  /** Called with each new token as it is produced. */
  onToken?: (token: number) => void;
  /** Keep each step's logits (for tests and scoring). */
  keepLogits?: boolean;
}

export interface GenerateResult {
  tokens: number[];
  stoppedBy: 'stop-token' | 'max-new-tokens';
  logits?: Float32Array[];
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

export class Generator {
  private cache: KvCache | null = null;
  private readonly hidden: GPUBuffer;
  private readonly logitsBuffer: GPUBuffer;

  constructor(readonly model: CausalLM) {
    const c = model.config;
    this.hidden = model.gpu.createBuffer(c.hiddenSize * 4, undefined, 'generate hidden');
    this.logitsBuffer = model.gpu.createBuffer(c.vocabSize * 4, undefined, 'generate logits');
  }

  private ensureCache(rows: number): KvCache {
    if (this.cache && this.cache.rows >= rows) return this.cache;
    this.releaseCache();
    const c = this.model.config;
    const bytes = rows * c.numKvHeads * c.headDim * 4;
    const make = (kind: string) => Array.from({ length: c.numLayers }, (_, i) => this.model.gpu.createBuffer(bytes, undefined, `kv ${kind} ${i}`));
    this.cache = { k: make('k'), v: make('v'), rows };
    return this.cache;
  }

  private releaseCache(): void {
    if (!this.cache) return;
    for (const b of [...this.cache.k, ...this.cache.v]) this.model.gpu.destroyBuffer(b);
    this.cache = null;
  }

  /** Run `tokens` at positions pos0.. through the model and return the logits after the last one. */
  private async step(tokens: number[], pos0: number): Promise<Float32Array> {
    const { model } = this;
    const c = model.config;
    const n = tokens.length;
    const ids = Uint32Array.from(tokens);
    const positions = Uint32Array.from({ length: n }, (_, i) => pos0 + i);
    const batch: PreparedBatch = {
      B: 1, S: n, ids, positions, segments: null, targetCount: 0,
      targets: new Int32Array(n).fill(IGNORE_INDEX),
      embedPlan: { unique: new Uint32Array(0), offsets: new Uint32Array(1), order: new Uint32Array(0) },
      positionPlan: { unique: new Uint32Array(0), offsets: new Uint32Array(1), order: new Uint32Array(0) },
    };
    const acts = model.activationsFor(1, n);
    acts.load(model.gpu, batch);
    const rec = model.gpu.recorder();
    model.transformer.forwardHidden(rec, acts, { cache: this.cache!, pos0 });
    // Only the last position's logits are needed: copy its hidden state out, then one row of logits.
    const rowBytes = c.hiddenSize * 4;
    rec.copy(view(acts.v('lnf'), (n - 1) * rowBytes, rowBytes), this.hidden, rowBytes);
    model.transformer.logits(rec, { buffer: this.hidden, offset: 0, size: c.hiddenSize * 4 }, { buffer: this.logitsBuffer, offset: 0, size: c.vocabSize * 4 });
    await rec.submit();
    return this.model.gpu.readF32(this.logitsBuffer);
  }

  async generate(prompt: number[], o: GenerateOptions): Promise<GenerateResult> {
    const c = this.model.config;
    if (prompt.length === 0) throw new ShapeError('generate: the prompt is empty');
    const total = prompt.length + o.maxNewTokens;
    if (total > c.maxPositions) throw new ShapeError(`generate: ${total} tokens exceed the model's ${c.maxPositions} positions`);
    for (const t of prompt) if (!Number.isInteger(t) || t < 0 || t >= c.vocabSize) throw new ShapeError(`generate: token ${t} is outside the vocabulary`);
    this.ensureCache(total);
    const stop = new Set(o.stopTokens ?? c.eosTokenIds);
    const rand = rng(o.seed ?? 0);
    const tokens: number[] = [];
    const kept: Float32Array[] = [];
    let logits = await this.step(prompt, 0);
    for (let i = 0; i < o.maxNewTokens; i++) {
      if (o.keepLogits) kept.push(logits);
      const next = sampleToken(logits, o, rand);
      tokens.push(next);
      o.onToken?.(next);
      if (stop.has(next)) return { tokens, stoppedBy: 'stop-token', logits: o.keepLogits ? kept : undefined };
      if (i + 1 < o.maxNewTokens) logits = await this.step([next], prompt.length + i);
    }
    return { tokens, stoppedBy: 'max-new-tokens', logits: o.keepLogits ? kept : undefined };
  }

  destroy(): void {
    this.releaseCache();
    this.model.gpu.destroyBuffer(this.hidden);
    this.model.gpu.destroyBuffer(this.logitsBuffer);
  }
}
