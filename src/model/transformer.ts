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
import type { ModelConfig } from './config.js';
import type { Activations } from './activations.js';
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
    if (dB) matmul(rec, { a: acts.ones, b: dy, c: dB, M: 1, N: outDim, K: T, accumulate: true });
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
    const target = accumulate ? acts.grad!.dtmp : dx;
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
    const r = { positions: acts.positions, table: this.ropeTable, T: acts.T, headDim: c.headDim, maxPositions: c.maxPositions, backward };
    rope(rec, { ...r, x: q, heads: c.numHeads });
    rope(rec, { ...r, x: k, heads: c.numKvHeads });
  }

  private attentionShape(acts: Activations, layer: number) {
    const c = this.config;
    return {
      B: acts.B, S: acts.S, nH: c.numHeads, nKV: c.numKvHeads, headDim: c.headDim, window: c.layerWindows[layer],
      segments: acts.hasSegments ? acts.segments : undefined,
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
    embeddingForward(rec, { ids: acts.ids, table: this.params.param('embed'), out: acts.stream[0], T, C: H, rows: c.vocabSize });
    if (c.family === 'gpt2') {
      embeddingForward(rec, { ids: acts.positions, table: this.params.param('pos_embed'), out: acts.stream[0], T, C: H, rows: c.maxPositions, accumulate: true });
    }
    for (let i = 0; i < c.numLayers; i++) {
      const L = `layers.${i}`;
      const l = acts.layers[i];
      this.norm(rec, acts, `${L}.norm1`, acts.stream[i], l.ln1, l.st1);
      this.linear(rec, acts, l.ln1, `${L}.q`, l.q, qd, H);
      this.linear(rec, acts, l.ln1, `${L}.k`, l.k, kvd, H);
      this.linear(rec, acts, l.ln1, `${L}.v`, l.v, kvd, H);
      this.rope(rec, acts, l.q, l.k, false);
      if (kv) {
        const rowBytes = kvd * 4;
        const bytes = acts.S * rowBytes;
        for (let b = 0; b < acts.B; b++) {
          const at = (b * kv.cache.rows + kv.starts[b]) * rowBytes;
          rec.copy(view(l.k, b * bytes, bytes), { buffer: kv.cache.k[i], offset: at, size: bytes }, bytes);
          rec.copy(view(l.v, b * bytes, bytes), { buffer: kv.cache.v[i], offset: at, size: bytes }, bytes);
        }
        attentionForward(rec, {
          B: acts.B, S: acts.S, nH: c.numHeads, nKV: c.numKvHeads, headDim: c.headDim, window: c.layerWindows[i], q: l.q, k: kv.cache.k[i], v: kv.cache.v[i],
          o: l.att, stats: l.ast, cache: { kvRows: kv.cache.rows, qOffset: kv.starts, offsets: kv.startsBuffer },
        });
      } else {
        attentionForward(rec, { ...this.attentionShape(acts, i), q: l.q, k: l.k, v: l.v, o: l.att, stats: l.ast });
      }
      // Residuals: write the projection, then add the stream (one arena buffer cannot copy into itself).
      this.linear(rec, acts, l.att, `${L}.o`, l.xm, H, qd);
      elementwise(rec, { op: 'axpy', y: l.xm, x: acts.stream[i], n: T * H, s0: 1 });
      this.norm(rec, acts, `${L}.norm2`, l.xm, l.ln2, l.st2);
      if (c.family === 'gpt2') {
        this.linear(rec, acts, l.ln2, `${L}.fc`, l.a, I, H);
        geluForward(rec, { x: l.a, y: l.h, n: T * I, kind: c.activation === 'gelu' ? 'gelu' : 'gelu_new' });
      } else {
        this.linear(rec, acts, l.ln2, `${L}.gate`, l.a, I, H);
        this.linear(rec, acts, l.ln2, `${L}.up`, l.b!, I, H);
        swigluForward(rec, { gate: l.a, up: l.b!, h: l.h, n: T * I });
      }
      this.linear(rec, acts, l.h, `${L}.${c.family === 'gpt2' ? 'proj' : 'down'}`, acts.stream[i + 1], H, I);
      elementwise(rec, { op: 'axpy', y: acts.stream[i + 1], x: l.xm, n: T * H, s0: 1 });
    }
    this.norm(rec, acts, 'norm_f', acts.stream[c.numLayers], acts.lnf, acts.stf);
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
      hidden: acts.lnf, weight: this.params.param(this.lmHead), targets: acts.targets,
      T: acts.T, H: c.hiddenSize, V: c.vocabSize, chunk: acts.chunk,
      logits: acts.logits, stats: acts.cestats, losses: acts.losses,
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
    if (!acts.grad) throw new Error('backward() needs training activations; these were planned for inference');
    const g = acts.grad;
    const dx = g.dx;
    crossEntropyBackward(rec, { ...this.ceArgs(acts), dHidden: g.dln, dWeight: this.params.grad(this.lmHead) ?? undefined, gradScale });
    this.normBackwardInto(rec, acts, 'norm_f', acts.stream[c.numLayers], acts.stf, g.dln, dx, false);
    for (let i = c.numLayers - 1; i >= 0; i--) {
      const L = `layers.${i}`;
      const l = acts.layers[i];
      // x_{i+1} = xm + mlp(norm2(xm)): dx flows to xm unchanged, plus through the MLP.
      this.linearBackward(rec, acts, l.h, `${L}.${c.family === 'gpt2' ? 'proj' : 'down'}`, dx, g.dh, H, I);
      if (c.family === 'gpt2') {
        geluBackward(rec, { x: l.a, dY: g.dh, dX: g.da, n: T * I, kind: c.activation === 'gelu' ? 'gelu' : 'gelu_new' });
        this.linearBackward(rec, acts, l.ln2, `${L}.fc`, g.da, g.dln, I, H);
      } else {
        swigluBackward(rec, { gate: l.a, up: l.b!, dH: g.dh, dGate: g.da, dUp: g.db, n: T * I });
        this.linearBackward(rec, acts, l.ln2, `${L}.gate`, g.da, g.dln, I, H);
        this.linearBackward(rec, acts, l.ln2, `${L}.up`, g.db, g.dln, I, H, true);
      }
      this.normBackwardInto(rec, acts, `${L}.norm2`, l.xm, l.st2, g.dln, dx, true);
      // xm = x_i + attention(norm1(x_i)) W_o^T.
      this.linearBackward(rec, acts, l.att, `${L}.o`, dx, g.datt, H, qd);
      attentionBackward(rec, {
        ...this.attentionShape(acts, i), q: l.q, k: l.k, v: l.v, o: l.att, stats: l.ast,
        dO: g.datt, dQ: g.dq, dK: g.dk, dV: g.dv,
      });
      this.rope(rec, acts, g.dq, g.dk, true);
      this.linearBackward(rec, acts, l.ln1, `${L}.q`, g.dq, g.dln, qd, H);
      this.linearBackward(rec, acts, l.ln1, `${L}.k`, g.dk, g.dln, kvd, H, true);
      this.linearBackward(rec, acts, l.ln1, `${L}.v`, g.dv, g.dln, kvd, H, true);
      this.normBackwardInto(rec, acts, `${L}.norm1`, acts.stream[i], l.st1, g.dln, dx, true);
    }
    const dEmbed = this.params.grad('embed');
    if (dEmbed) {
      embeddingBackward(rec, {
        unique: acts.embedPlan.unique, offsets: acts.embedPlan.offsets, order: acts.embedPlan.order, U: acts.uniqueIds,
        dOut: dx, dTable: dEmbed, T, C: H, rows: c.vocabSize,
      });
    }
    const dPos = c.family === 'gpt2' ? this.params.grad('pos_embed') : null;
    if (dPos) {
      // Positions as ids: each position's gradient is the sum over the tokens at that position.
      embeddingBackward(rec, {
        unique: acts.positionPlan.unique, offsets: acts.positionPlan.offsets, order: acts.positionPlan.order, U: acts.uniquePositions,
        dOut: dx, dTable: dPos, T, C: H, rows: c.maxPositions,
      });
    }
  }

  destroy(): void {
    if (this.ropeTable) this.gpu.destroyBuffer(this.ropeTable);
  }
}
