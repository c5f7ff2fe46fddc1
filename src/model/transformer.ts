/**
 * Forward and backward passes of a decoder-only transformer (Llama family and GPT-2) as explicit call
 * lists, llm.c style: forward() records every layer's kernels in order and saves what backward() needs;
 * backward() mirrors it in reverse. Activations live in one arena planned per (batch, sequence) shape,
 * so a training step allocates nothing. Conventions: parameter gradients accumulate (+=), activation
 * gradients are overwritten.
 */
import { view, type TensorView } from '../gpu/buffers.js';
import type { Gpu } from '../gpu/gpu.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { attentionBackward, attentionForward } from '../kernels/attention.js';
import { crossEntropyBackward, crossEntropyChunk, crossEntropyForward } from '../kernels/cross-entropy.js';
import { embeddingBackward, embeddingForward } from '../kernels/embedding.js';
import { elementwise } from '../kernels/elementwise.js';
import { geluBackward, geluForward, swigluBackward, swigluForward } from '../kernels/activation.js';
import { addLowRank, matmul, type LowRankTerm } from '../kernels/matmul.js';
import { normBackward, normForward } from '../kernels/norm.js';
import { rope, ropeTable } from '../kernels/rope.js';
import type { PreparedBatch } from './batch.js';
import type { ModelConfig } from './config.js';
import { EVAL_PASS, type LinearHooks, type PassContext } from '../methods/method.js';

type View = TensorView;

/** Parameters by internal name (see layout.ts); gradients for the trainable ones. */
export interface ParamAccess {
  param(name: string): View;
  /** The gradient view, or null when the parameter is frozen. */
  grad(name: string): View | null;
  has(name: string): boolean;
}

/** Keys and values of every layer for `batch` sequences: [batch * rows, nKV * headDim] per layer. */
export interface KvCache {
  k: GPUBuffer[];
  v: GPUBuffer[];
  /** Rows (positions) per sequence. */
  rows: number;
  batch: number;
}

/**
 * Decoding over a KV cache: sequence b's S new tokens sit at positions starts[b].., and the same starts
 * are in `startsBuffer` (u32 [B]) for the attention kernel.
 */
export interface KvStep {
  cache: KvCache;
  starts: number[];
  startsBuffer: GPUBuffer;
}

/**
 * The activations of one (batch, sequence) shape, allocated once and reused every step. Each tensor has
 * its own buffer: WebGPU checks read/write conflicts per buffer, not per range, and kernels read one
 * activation while writing the next.
 */
export class Activations {
  private readonly buffers = new Map<string, GPUBuffer>();
  private readonly onDestroyed: (() => void)[] = [];
  readonly T: number;
  readonly chunk: number;
  /** Bytes of this arena's own buffers (what the model's activation cache budgets). */
  readonly bytes: number;
  /** Set by load(): whether the batch packs documents, and the unique id counts of its gradient plans. */
  hasSegments = false;
  uniqueIds = 0;
  uniquePositions = 0;
  constructor(private readonly gpu: Gpu, readonly config: ModelConfig, readonly B: number, readonly S: number) {
    const t = Activations.plan(config, B, S);
    this.T = B * S;
    this.chunk = crossEntropyChunk(this.T, config.vocabSize, 32 << 20);
    // Every size is checked before the first allocation, and a failure part way releases what was made.
    for (const { name, length } of t) gpu.checkBufferSize(length * 4, `act ${name}`);
    try {
      for (const { name, length } of t) this.buffers.set(name, gpu.createBuffer(length * 4, undefined, `act ${name}`));
      gpu.write(this.v('ones'), new Float32Array(this.T).fill(1));
    } catch (e) {
      this.destroy();
      throw e;
    }
    this.bytes = [...this.buffers.values()].reduce((sum, b) => sum + b.size, 0);
  }

  /** The tensors of a (batch, sequence) shape, by name and f32 length. */
  static plan(c: ModelConfig, B: number, S: number): { name: string; length: number }[] {
    const T = B * S;
    const H = c.hiddenSize;
    const qd = c.numHeads * c.headDim;
    const kvd = c.numKvHeads * c.headDim;
    const I = c.intermediateSize;
    const chunk = crossEntropyChunk(T, c.vocabSize, 32 << 20);
    const t: { name: string; length: number }[] = [];
    const add = (name: string, length: number) => t.push({ name, length });
    for (const n of ['ids', 'positions', 'segments', 'targets', 'ones', 'emb.order', 'emb.unique', 'pos.order', 'pos.unique']) add(n, T);
    add('emb.offsets', T + 1);
    add('pos.offsets', T + 1);
    for (let i = 0; i <= c.numLayers; i++) add(`x${i}`, T * H);
    for (let i = 0; i < c.numLayers; i++) {
      const p = `l${i}.`;
      add(`${p}ln1`, T * H);
      add(`${p}st1`, 2 * T);
      add(`${p}q`, T * qd);
      add(`${p}k`, T * kvd);
      add(`${p}v`, T * kvd);
      add(`${p}att`, T * qd);
      add(`${p}ast`, 2 * T * c.numHeads);
      add(`${p}xm`, T * H);
      add(`${p}ln2`, T * H);
      add(`${p}st2`, 2 * T);
      add(`${p}a`, T * I);
      if (c.family === 'llama') add(`${p}b`, T * I);
      add(`${p}h`, T * I);
    }
    add('lnf', T * H);
    add('stf', 2 * T);
    add('logits', T * Math.min(chunk, c.vocabSize));
    add('cestats', 3 * T);
    add('losses', T);
    // Backward scratch, reused by every layer.
    for (const n of ['dx', 'dtmp', 'dln']) add(n, T * H);
    add('dq', T * qd);
    add('dk', T * kvd);
    add('dv', T * kvd);
    add('datt', T * qd);
    for (const n of ['da', 'db', 'dh']) add(n, T * I);
    return t;
  }

  /** Holders that still read this arena after an await (a readback of its losses); see retire(). */
  private pins = 0;
  private retired = false;

  pin(): void {
    this.pins++;
  }

  /** Ends a pin; an arena retired while pinned is destroyed with its last pin. */
  unpin(): void {
    this.pins--;
    if (this.pins === 0 && this.retired) this.destroy();
  }

  /** Destroy now, or, while a holder still reads it, when the last pin ends (cache eviction). */
  retire(): void {
    this.retired = true;
    if (this.pins === 0) this.destroy();
  }

  /** Run `release` when this arena is destroyed: adapters free their per-shape buffers with it. */
  onDestroy(release: () => void): void {
    this.onDestroyed.push(release);
  }

  v(name: string): View {
    const buffer = this.buffers.get(name);
    if (!buffer) throw new Error(`no activation '${name}'`);
    return { buffer, offset: 0, size: buffer.size };
  }

  /** Upload a batch's token data into this arena. */
  load(gpu: Gpu, b: PreparedBatch): void {
    if (b.B !== this.B || b.S !== this.S) throw new Error(`batch ${b.B}x${b.S} loaded into activations planned for ${this.B}x${this.S}`);
    this.hasSegments = b.segments !== null;
    this.uniqueIds = b.embedPlan.unique.length;
    this.uniquePositions = b.positionPlan.unique.length;
    gpu.write(this.v('pos.unique'), b.positionPlan.unique);
    gpu.write(this.v('pos.offsets'), b.positionPlan.offsets);
    gpu.write(this.v('pos.order'), b.positionPlan.order);
    gpu.write(this.v('ids'), b.ids);
    gpu.write(this.v('positions'), b.positions);
    gpu.write(this.v('targets'), b.targets);
    if (b.segments) gpu.write(this.v('segments'), b.segments);
    gpu.write(this.v('emb.unique'), b.embedPlan.unique);
    gpu.write(this.v('emb.offsets'), b.embedPlan.offsets);
    gpu.write(this.v('emb.order'), b.embedPlan.order);
  }

  destroy(): void {
    for (const b of this.buffers.values()) this.gpu.destroyBuffer(b);
    this.buffers.clear();
    for (const release of this.onDestroyed.splice(0)) release();
  }
}

export class Transformer {
  readonly ropeTable: GPUBuffer | null;
  /** The fine-tuning method's hooks in linear layers (LoRA's adapter path, a sparse gradient), if any. */
  hooks: LinearHooks | null = null;
  /** The pass being recorded: set from the caller's context at each forward() and backward(). */
  private pass: PassContext = EVAL_PASS;
  constructor(
    readonly gpu: Gpu,
    readonly config: ModelConfig,
    readonly params: ParamAccess,
  ) {
    const c = config;
    this.ropeTable = c.ropeTheta === null ? null : gpu.upload(ropeTable(c.headDim, c.ropeTheta, c.maxPositions), 'rope table');
  }

  private get lmHead(): string {
    return this.config.tieWordEmbeddings ? 'embed' : 'lm_head';
  }

  /** y = x W^T (+ b) (+ the method's term), one matmul with the bias and the term fused into its store. */
  private linear(rec: CommandRecorder, acts: Activations, x: View, name: string, y: View, outDim: number, inDim: number): void {
    const T = acts.T;
    const hooks = this.hooks?.has(name) ? this.hooks : null;
    const term = hooks?.outputTerm?.(rec, acts, name, x, outDim, inDim, this.pass);
    const bias = this.params.has(`${name}.bias`) ? this.params.param(`${name}.bias`) : undefined;
    matmul(rec, { a: x, b: this.params.param(`${name}.weight`), c: y, M: T, N: outDim, K: inDim, transB: true, bias, lowRank: hooks?.fused ? term : undefined });
    if (term && !hooks!.fused) addLowRank(rec, y, T, outDim, term);
  }

  /**
   * dx (= or +=) = dy W (+ the method's term); dW += dy^T x (or the method's own weight gradient);
   * db += ones^T dy.
   */
  private linearBackward(rec: CommandRecorder, acts: Activations, x: View, name: string, dy: View, dx: View, outDim: number, inDim: number, accumulateDx = false): void {
    const T = acts.T;
    const hooks = this.hooks?.has(name) ? this.hooks : null;
    const term = hooks?.inputGradTerm?.(rec, acts, name, x, dy, outDim, inDim, this.pass);
    matmul(rec, { a: dy, b: this.params.param(`${name}.weight`), c: dx, M: T, N: inDim, K: outDim, accumulate: accumulateDx, lowRank: hooks?.fused ? term : undefined });
    if (term && !hooks!.fused) addLowRank(rec, dx, T, inDim, term);
    const ownGradient = hooks?.weightGradient?.(rec, acts, name, x, dy, outDim, inDim, this.pass) ?? false;
    const dW = ownGradient ? null : this.params.grad(`${name}.weight`);
    if (dW) matmul(rec, { a: dy, b: x, c: dW, M: outDim, N: inDim, K: T, transA: true, accumulate: true });
    const dB = this.params.has(`${name}.bias`) ? this.params.grad(`${name}.bias`) : null;
    if (dB) matmul(rec, { a: acts.v('ones'), b: dy, c: dB, M: 1, N: outDim, K: T, accumulate: true });
  }

  private norm(rec: CommandRecorder, acts: Activations, name: string, x: View, y: View, stats: View): void {
    const c = this.config;
    normForward(rec, {
      kind: c.norm, rows: acts.T, cols: c.hiddenSize, eps: c.normEps, x, y, stats,
      weight: this.params.param(`${name}.weight`),
      bias: c.norm === 'layernorm' ? this.params.param(`${name}.bias`) : undefined,
    });
  }

  /** dx += norm backward of dy (through the scratch buffer dtmp). */
  private normBackwardInto(rec: CommandRecorder, acts: Activations, name: string, x: View, stats: View, dy: View, dx: View, accumulate: boolean): void {
    const c = this.config;
    const target = accumulate ? acts.v('dtmp') : dx;
    normBackward(rec, {
      kind: c.norm, rows: acts.T, cols: c.hiddenSize, eps: c.normEps, x, stats, dy, dx: target,
      weight: this.params.param(`${name}.weight`),
      dWeight: this.params.grad(`${name}.weight`) ?? undefined,
      dBias: c.norm === 'layernorm' ? this.params.grad(`${name}.bias`) ?? undefined : undefined,
    });
    if (accumulate) elementwise(rec, { op: 'axpy', y: dx, x: target, n: acts.T * c.hiddenSize, s0: 1 });
  }

  /** RoPE in place on queries and keys (backward: the inverse rotation on their gradients); no-op for GPT-2. */
  private rope(rec: CommandRecorder, acts: Activations, q: View, k: View, backward: boolean): void {
    if (!this.ropeTable) return;
    const c = this.config;
    const r = { positions: acts.v('positions'), table: this.ropeTable, T: acts.T, headDim: c.headDim, maxPositions: c.maxPositions, backward };
    rope(rec, { ...r, x: q, heads: c.numHeads });
    rope(rec, { ...r, x: k, heads: c.numKvHeads });
  }

  private attentionShape(acts: Activations, layer: number) {
    const c = this.config;
    return {
      B: acts.B, S: acts.S, nH: c.numHeads, nKV: c.numKvHeads, headDim: c.headDim, window: c.layerWindows[layer],
      segments: acts.hasSegments ? acts.v('segments') : undefined,
    };
  }

  /** Records the forward pass through the per-token losses (acts 'losses'). */
  forward(rec: CommandRecorder, acts: Activations, pass: PassContext = EVAL_PASS): void {
    this.pass = pass;
    this.forwardHidden(rec, acts);
    crossEntropyForward(rec, this.ceArgs(acts));
  }

  /**
   * Records the forward pass through the final norm (acts 'lnf'). With `kv`, the new tokens of each
   * sequence write their keys and values into its rows of the cache and attend over them.
   */
  forwardHidden(rec: CommandRecorder, acts: Activations, kv?: KvStep): void {
    if (kv) this.pass = EVAL_PASS; // decoding never trains
    const c = this.config;
    const T = acts.T;
    const H = c.hiddenSize;
    const qd = c.numHeads * c.headDim;
    const kvd = c.numKvHeads * c.headDim;
    const I = c.intermediateSize;
    embeddingForward(rec, { ids: acts.v('ids'), table: this.params.param('embed'), out: acts.v('x0'), T, C: H, rows: c.vocabSize });
    if (c.family === 'gpt2') {
      embeddingForward(rec, { ids: acts.v('positions'), table: this.params.param('pos_embed'), out: acts.v('x0'), T, C: H, rows: c.maxPositions, accumulate: true });
    }
    for (let i = 0; i < c.numLayers; i++) {
      const L = `layers.${i}`;
      const a = (n: string) => acts.v(`l${i}.${n}`);
      this.norm(rec, acts, `${L}.norm1`, acts.v(`x${i}`), a('ln1'), a('st1'));
      this.linear(rec, acts, a('ln1'), `${L}.q`, a('q'), qd, H);
      this.linear(rec, acts, a('ln1'), `${L}.k`, a('k'), kvd, H);
      this.linear(rec, acts, a('ln1'), `${L}.v`, a('v'), kvd, H);
      this.rope(rec, acts, a('q'), a('k'), false);
      if (kv) {
        const rowBytes = kvd * 4;
        const bytes = acts.S * rowBytes;
        for (let b = 0; b < acts.B; b++) {
          const at = (b * kv.cache.rows + kv.starts[b]) * rowBytes;
          rec.copy(view(a('k'), b * bytes, bytes), { buffer: kv.cache.k[i], offset: at, size: bytes }, bytes);
          rec.copy(view(a('v'), b * bytes, bytes), { buffer: kv.cache.v[i], offset: at, size: bytes }, bytes);
        }
        attentionForward(rec, {
          B: acts.B, S: acts.S, nH: c.numHeads, nKV: c.numKvHeads, headDim: c.headDim, window: c.layerWindows[i], q: a('q'), k: kv.cache.k[i], v: kv.cache.v[i],
          o: a('att'), stats: a('ast'), cache: { kvRows: kv.cache.rows, qOffset: kv.starts, offsets: kv.startsBuffer },
        });
      } else {
        attentionForward(rec, { ...this.attentionShape(acts, i), q: a('q'), k: a('k'), v: a('v'), o: a('att'), stats: a('ast') });
      }
      // Residuals: write the projection, then add the stream (one arena buffer cannot copy into itself).
      this.linear(rec, acts, a('att'), `${L}.o`, a('xm'), H, qd);
      elementwise(rec, { op: 'axpy', y: a('xm'), x: acts.v(`x${i}`), n: T * H, s0: 1 });
      this.norm(rec, acts, `${L}.norm2`, a('xm'), a('ln2'), a('st2'));
      if (c.family === 'gpt2') {
        this.linear(rec, acts, a('ln2'), `${L}.fc`, a('a'), I, H);
        geluForward(rec, { x: a('a'), y: a('h'), n: T * I, kind: c.activation === 'gelu' ? 'gelu' : 'gelu_new' });
      } else {
        this.linear(rec, acts, a('ln2'), `${L}.gate`, a('a'), I, H);
        this.linear(rec, acts, a('ln2'), `${L}.up`, a('b'), I, H);
        swigluForward(rec, { gate: a('a'), up: a('b'), h: a('h'), n: T * I });
      }
      this.linear(rec, acts, a('h'), `${L}.${c.family === 'gpt2' ? 'proj' : 'down'}`, acts.v(`x${i + 1}`), H, I);
      elementwise(rec, { op: 'axpy', y: acts.v(`x${i + 1}`), x: a('xm'), n: T * H, s0: 1 });
    }
    this.norm(rec, acts, 'norm_f', acts.v(`x${c.numLayers}`), acts.v('lnf'), acts.v('stf'));
  }

  /** logits [1, V] = hidden [1, H] W_head^T. */
  /** logits [rows, vocab] of final hidden states [rows, hidden]. */
  logits(rec: CommandRecorder, hidden: View, logits: View, rows = 1): void {
    const c = this.config;
    matmul(rec, { a: hidden, b: this.params.param(this.lmHead), c: logits, M: rows, N: c.vocabSize, K: c.hiddenSize, transB: true });
  }

  private ceArgs(acts: Activations) {
    const c = this.config;
    return {
      hidden: acts.v('lnf'), weight: this.params.param(this.lmHead), targets: acts.v('targets'),
      T: acts.T, H: c.hiddenSize, V: c.vocabSize, chunk: acts.chunk,
      logits: acts.v('logits'), stats: acts.v('cestats'), losses: acts.v('losses'),
    };
  }

  /** Records the backward pass of sum(losses) * gradScale; needs forward() recorded first on the same acts. */
  backward(rec: CommandRecorder, acts: Activations, gradScale: number, pass: PassContext = EVAL_PASS): void {
    this.pass = pass;
    const c = this.config;
    const T = acts.T;
    const H = c.hiddenSize;
    const qd = c.numHeads * c.headDim;
    const kvd = c.numKvHeads * c.headDim;
    const I = c.intermediateSize;
    const dx = acts.v('dx');
    crossEntropyBackward(rec, { ...this.ceArgs(acts), dHidden: acts.v('dln'), dWeight: this.params.grad(this.lmHead) ?? undefined, gradScale });
    this.normBackwardInto(rec, acts, 'norm_f', acts.v(`x${c.numLayers}`), acts.v('stf'), acts.v('dln'), dx, false);
    for (let i = c.numLayers - 1; i >= 0; i--) {
      const L = `layers.${i}`;
      const a = (n: string) => acts.v(`l${i}.${n}`);
      // x_{i+1} = xm + mlp(norm2(xm)): dx flows to xm unchanged, plus through the MLP.
      this.linearBackward(rec, acts, a('h'), `${L}.${c.family === 'gpt2' ? 'proj' : 'down'}`, dx, acts.v('dh'), H, I);
      if (c.family === 'gpt2') {
        geluBackward(rec, { x: a('a'), dY: acts.v('dh'), dX: acts.v('da'), n: T * I, kind: c.activation === 'gelu' ? 'gelu' : 'gelu_new' });
        this.linearBackward(rec, acts, a('ln2'), `${L}.fc`, acts.v('da'), acts.v('dln'), I, H);
      } else {
        swigluBackward(rec, { gate: a('a'), up: a('b'), dH: acts.v('dh'), dGate: acts.v('da'), dUp: acts.v('db'), n: T * I });
        this.linearBackward(rec, acts, a('ln2'), `${L}.gate`, acts.v('da'), acts.v('dln'), I, H);
        this.linearBackward(rec, acts, a('ln2'), `${L}.up`, acts.v('db'), acts.v('dln'), I, H, true);
      }
      this.normBackwardInto(rec, acts, `${L}.norm2`, a('xm'), a('st2'), acts.v('dln'), dx, true);
      // xm = x_i + attention(norm1(x_i)) W_o^T.
      this.linearBackward(rec, acts, a('att'), `${L}.o`, dx, acts.v('datt'), H, qd);
      attentionBackward(rec, {
        ...this.attentionShape(acts, i), q: a('q'), k: a('k'), v: a('v'), o: a('att'), stats: a('ast'),
        dO: acts.v('datt'), dQ: acts.v('dq'), dK: acts.v('dk'), dV: acts.v('dv'),
      });
      this.rope(rec, acts, acts.v('dq'), acts.v('dk'), true);
      this.linearBackward(rec, acts, a('ln1'), `${L}.q`, acts.v('dq'), acts.v('dln'), qd, H);
      this.linearBackward(rec, acts, a('ln1'), `${L}.k`, acts.v('dk'), acts.v('dln'), kvd, H, true);
      this.linearBackward(rec, acts, a('ln1'), `${L}.v`, acts.v('dv'), acts.v('dln'), kvd, H, true);
      this.normBackwardInto(rec, acts, `${L}.norm1`, acts.v(`x${i}`), a('st1'), acts.v('dln'), dx, true);
    }
    const dEmbed = this.params.grad('embed');
    if (dEmbed) {
      embeddingBackward(rec, {
        unique: acts.v('emb.unique'), offsets: acts.v('emb.offsets'), order: acts.v('emb.order'), U: acts.uniqueIds,
        dOut: dx, dTable: dEmbed, T, C: H, rows: c.vocabSize,
      });
    }
    const dPos = c.family === 'gpt2' ? this.params.grad('pos_embed') : null;
    if (dPos) {
      // Positions as ids: each position's gradient is the sum over the tokens at that position.
      embeddingBackward(rec, {
        unique: acts.v('pos.unique'), offsets: acts.v('pos.offsets'), order: acts.v('pos.order'), U: acts.uniquePositions,
        dOut: dx, dTable: dPos, T, C: H, rows: c.maxPositions,
      });
    }
  }

  destroy(): void {
    if (this.ropeTable) this.gpu.destroyBuffer(this.ropeTable);
  }
}
