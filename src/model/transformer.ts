/**
 * Forward and backward passes of a decoder-only transformer (Llama family and GPT-2) as explicit call
 * lists, llm.c style: forward() records every layer's kernels in order and saves what backward() needs;
 * backward() mirrors it in reverse. What differs between the families (how positions enter, the MLP) is
 * each family module's parts (families/); what their configs switch on (norms around the sublayers,
 * soft caps, q/k norms, scaled embeddings) is here. Activations live in one arena planned per (batch, sequence) shape,
 * so a training step allocates nothing. Conventions: parameter gradients accumulate (+=), activation
 * gradients are overwritten.
 */
import { asView, type TensorView } from '../gpu/buffers.js';
import type { Gpu } from '../gpu/gpu.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { attentionBackward, attentionForward } from '../kernels/attention.js';
import { crossEntropyBackward, crossEntropyForward, crossEntropyOneChunk } from '../kernels/cross-entropy.js';
import { embeddingBackward, embeddingForward } from '../kernels/embedding.js';
import { elementwise } from '../kernels/elementwise.js';
import { geluForward, type GeluKind } from '../kernels/activation.js';
import { addLowRank, addTerms, matmul, type LowRankTerm } from '../kernels/matmul.js';
import { matmulGrouped, type GroupedProblem, type GroupedTerm } from '../kernels/matmul-grouped.js';
import { matmulQ4, matmulQ4InputGrad } from '../kernels/q4-matmul.js';
import { columnScaleBackward, columnScaleForward } from '../kernels/column-scale.js';
import { normBackward, normForward } from '../kernels/norm.js';
import { ropeTable, type RopeRange } from '../kernels/rope.js';
import { layerRope, type ModelConfig } from './config.js';
import type { Activations, LayerActivations } from './activations.js';
import { familyOf, type FamilyParts } from './families/index.js';
import { paramSpecs } from './layout.js';
import { isDense, type DenseWeight, type LinearWeight } from './linear-weights.js';
import { EVAL_PASS, type LinearHooks, type PassContext } from '../methods/method.js';

type View = TensorView;

/** Parameters by internal name (see layout.ts); gradients for the trainable ones. */
export interface ParamAccess {
  /** An f32 parameter (norms, embeddings, biases, trainable weights). */
  param(name: string): View;
  /** A linear layer's weight in its storage format (f32, or packed 16-bit when frozen). */
  weight(name: string): LinearWeight;
  /** The gradient view, or null when the parameter is frozen. */
  grad(name: string): View | null;
  has(name: string): boolean;
  /**
   * The stored pieces of the embedding or LM head, in vocabulary order: one, or row pieces that each fit
   * a storage binding when the whole does not.
   */
  pieces(name: 'embed' | 'lm_head'): TablePiece[];
  /**
   * Make the weights the products read current before a forward pass (mixed precision's f16 copies of
   * f32 masters); `beforeTraining` when the pass may be followed by an update.
   */
  prepareWeights?(rec: CommandRecorder, beforeTraining: boolean): void;
}

/** A row piece of the embedding or LM head, by its stored name: rows [rowStart, rowStart + rows). */
export interface TablePiece {
  name: string;
  rows: number;
  rowStart: number;
}

/** A piece as the kernels take it: its weight as stored, and its gradient (when trained). */
interface TableView extends Omit<TablePiece, 'name'> {
  weight: DenseWeight;
  grad: View | null;
}

/**
 * A layer's self-attention from its projected queries, keys and values (RoPE applied) into `l.att` and
 * `l.ast`. Training attends within the batch; generation supplies one that attends over a KV cache
 * (src/serve/kv-cache.ts).
 */
export type AttentionStep = (rec: CommandRecorder, acts: Activations, layer: number, l: LayerActivations) => void;

export class Transformer {
  /** RoPE tables, one per distinct (base, scaling) among the layers, and each layer's (none for GPT-2). */
  private readonly ropeTables: GPUBuffer[] = [];
  private readonly layerRopeTables: (LayerRopeTables | null)[];
  /** The fine-tuning method's hooks in linear layers (LoRA's adapter path, a sparse gradient), if any. */
  hooks: LinearHooks | null = null;
  /** The pass being recorded: set from the caller's context at each forward() and backward(). */
  private pass: PassContext = EVAL_PASS;
  private readonly family: FamilyParts;
  constructor(
    readonly gpu: Gpu,
    readonly config: ModelConfig,
    readonly params: ParamAccess,
  ) {
    const c = config;
    const tables = new Map<string, LayerRopeTables>();
    this.layerRopeTables = Array.from({ length: c.numLayers }, (_, i) => {
      const r = layerRope(c, i);
      if (!r) return null;
      const { theta, scaling } = r;
      const key = JSON.stringify([theta, scaling]);
      if (!tables.has(key)) {
        const make = (range: RopeRange) => {
          const table = gpu.upload(ropeTable(c.rotaryDim, theta, c.maxPositions, scaling, range), `rope table ${theta} ${range}`);
          this.ropeTables.push(table);
          return table;
        };
        tables.set(key, { short: make('short'), ...(scaling?.type === 'longrope' ? { long: make('long'), context: scaling.originalMaxPositions } : {}) });
      }
      return tables.get(key)!;
    });
    this.family = familyOf(c).parts({
      config: c,
      params,
      linear: (rec, acts, x, name, y, outDim, inDim, activation) => this.linear(rec, acts, x, name, y, outDim, inDim, undefined, activation),
      linearBackward: (rec, acts, x, name, dy, dx, outDim, inDim, accumulateDx) => this.linearBackward(rec, acts, x, name, dy, dx, outDim, inDim, accumulateDx),
      ropeTable: (layer, acts) => {
        const tables = this.layerRopeTables[layer]!;
        // LongRoPE: the long factors when the batch's positions reach past the pre-training context, as transformers chooses.
        return tables.long && acts.maxPosition + 1 > tables.context! ? tables.long : tables.short;
      },
    });
  }

  /** The embedding's or LM head's pieces: f32, or 16-bit when frozen in a 16-bit base (never 4-bit). */
  private table(name: 'embed' | 'lm_head'): TableView[] {
    return this.params.pieces(name).map((p) => {
      const w = this.params.weight(p.name);
      if (!isDense(w)) throw new Error(`'${p.name}' is not a dense weight`);
      return { weight: w, rows: p.rows, rowStart: p.rowStart, grad: this.params.grad(p.name) };
    });
  }

  private get lmHead(): 'embed' | 'lm_head' {
    return this.config.tieWordEmbeddings ? 'embed' : 'lm_head';
  }

  /** Scratch for the logits of one piece of a split LM head, kept for its size. */
  private pieceLogits: GPUBuffer | null = null;

  /**
   * y = x W^T (+ b) (+ the method's term) (+ residual), one matmul with the bias and the term fused into
   * its store; under a method's per-column scale, y = s ⊙ (x W^T + term) + b, the scale applied after the
   * matmul. A residual, or an activation of y into `activation.out`, is computed in the same store (the
   * grouped matmul's epilogue) where the method adds nothing to this output, otherwise by its own pass.
   */
  private linear(rec: CommandRecorder, acts: Activations, x: View, name: string, y: View, outDim: number, inDim: number, residual?: View, activation?: { kind: GeluKind; out: View }): void {
    const T = acts.T;
    const hooks = this.hooks?.has(name) ? this.hooks : null;
    const term = hooks?.outputTerm?.(rec, acts, name, x, outDim, inDim, this.pass);
    const bias = this.params.has(`${name}.bias`) ? this.params.param(`${name}.bias`) : undefined;
    const scale = hooks?.outputScale?.(rec, acts, name, outDim, this.pass, 'forward');
    const w = this.params.weight(`${name}.weight`);
    // The epilogue writes f32: a 16-bit activation (mixed precision) takes its own pass.
    const fusedActivation = activation && !asView(activation.out).format ? activation : undefined;
    if ((residual || fusedActivation) && isDense(w) && !term && !scale && !hooks?.outputAdd) {
      matmulGrouped(rec, [{ c: y, M: T, N: outDim, terms: [{ a: x, b: w.view, bFormat: w.format, transB: true, K: inDim }], bias, residual, activation: fusedActivation }]);
      if (activation && !fusedActivation) geluForward(rec, { x: y, y: activation.out, n: T * outDim, kind: activation.kind });
      return;
    }
    if (isDense(w)) {
      matmul(rec, { a: x, b: w.view, bFormat: w.format, c: y, M: T, N: outDim, K: inDim, transB: true, bias: scale ? undefined : bias, lowRank: hooks?.fused ? term : undefined });
      if (term && !hooks!.fused) addLowRank(rec, y, T, outDim, term);
    } else {
      // 4-bit: the fused product, then the bias and the method's term in one epilogue pass.
      matmulQ4(rec, { x, weight: w.q4, y, M: T });
      addTerms(rec, y, T, outDim, { bias: scale ? undefined : bias, lowRank: term });
    }
    hooks?.outputAdd?.(rec, acts, name, x, y, outDim, inDim, this.pass);
    // z is kept wherever a backward pass may follow: in training arenas, whatever the pass.
    if (scale) columnScaleForward(rec, { y, scale: scale.scale, bias, saved: acts.grad ? scale.saved : undefined, rows: T, cols: outDim });
    if (residual) elementwise(rec, { op: 'axpy', y, x: residual, n: T * outDim, s0: 1 });
    if (activation) geluForward(rec, { x: y, y: activation.out, n: T * outDim, kind: activation.kind });
  }

  /** Whether a method changes this linear layer's output (a term, a scale, an addition). */
  private hooksOutput(name: string): boolean {
    const h = this.hooks?.has(name) ? this.hooks : null;
    return !!(h?.outputTerm || h?.outputScale || h?.outputAdd);
  }

  /** Whether a method changes this linear layer's input gradient (a term, a scale). */
  private hooksInputGrad(name: string): boolean {
    const h = this.hooks?.has(name) ? this.hooks : null;
    return !!(h?.inputGradTerm || h?.outputScale);
  }

  /** Whether a linear layer's method adds only low-rank terms that it can record for a group of layers. */
  private groupsTerms(name: string, phase: 'forward' | 'backward'): boolean {
    const h = this.hooks;
    if (!h?.has(name) || !h.fused || h.outputScale || h.outputAdd) return false;
    return phase === 'forward' ? !!(h.outputTerm && h.outputTerms) : !!(h.inputGradTerm && h.inputGradTerms);
  }

  /** The term of a grouped product for a method's low-rank term (one without dropout: the forward's). */
  private lowRankTerm(t: LowRankTerm): GroupedTerm {
    if (t.dropout) throw new Error('unreachable: a low-rank term with dropout in a grouped product');
    return { a: t.u, b: t.v, transB: t.transV, K: t.rank, alpha: t.scale ?? 1 };
  }

  /**
   * Linear layers that read one input (q, k and v): those with dense weights and, at most, a method's
   * low-rank term (LoRA) in one grouped matmul, each with its bias and term; the others one by one.
   */
  private linears(rec: CommandRecorder, acts: Activations, x: View, outs: { name: string; y: View; outDim: number }[], inDim: number): void {
    const dense = (name: string) => isDense(this.params.weight(`${name}.weight`));
    const adapted = outs.filter((o) => dense(o.name) && this.groupsTerms(o.name, 'forward'));
    const grouped = outs.filter((o) => adapted.includes(o) || (dense(o.name) && !this.hooksOutput(o.name)));
    // Without grouped products (GpuTuning.groupedProducts), a method's term stays fused in its layer's matmul.
    if (grouped.length < 2 || !this.gpu.tuning.groupedProducts) {
      for (const o of outs) this.linear(rec, acts, x, o.name, o.y, o.outDim, inDim);
      return;
    }
    for (const o of outs) if (!grouped.includes(o)) this.linear(rec, acts, x, o.name, o.y, o.outDim, inDim);
    const terms = adapted.length ? this.hooks!.outputTerms!(rec, acts, adapted, x, inDim, this.pass) : [];
    matmulGrouped(rec, grouped.map((o) => {
      const w = this.params.weight(`${o.name}.weight`) as DenseWeight;
      const bias = this.params.has(`${o.name}.bias`) ? this.params.param(`${o.name}.bias`) : undefined;
      const term = terms[adapted.indexOf(o)];
      return { c: o.y, M: acts.T, N: o.outDim, terms: [{ a: x, b: w.view, bFormat: w.format, transB: true, K: inDim }, ...(term ? [this.lowRankTerm(term)] : [])], bias };
    }));
  }

  /**
   * The backward pass of linears() into one dx (= or +=; none where nothing below takes a gradient): the
   * grouped layers' input gradients (with their low-rank terms) as the terms of one product, their weight
   * and bias gradients in one grouped matmul; the others one by one.
   */
  private linearsBackward(rec: CommandRecorder, acts: Activations, x: View, grads: { name: string; dy: View; outDim: number }[], dx: View | null, inDim: number, accumulateDx = false): void {
    const T = acts.T;
    const dense = (name: string) => isDense(this.params.weight(`${name}.weight`));
    const adapted = grads.filter((g) => dense(g.name) && this.groupsTerms(g.name, 'backward'));
    const grouped = grads.filter((g) => adapted.includes(g) || (dense(g.name) && !this.hooksInputGrad(g.name)));
    if (grouped.length < 2 || !this.gpu.tuning.groupedProducts) {
      grads.forEach((g, i) => this.linearBackward(rec, acts, x, g.name, g.dy, dx, g.outDim, inDim, accumulateDx || i > 0));
      return;
    }
    const terms = adapted.length ? this.hooks!.inputGradTerms!(rec, acts, adapted, x, inDim, this.pass) : [];
    // Terms with dropout (a mask on the term alone) are added after the grouped product.
    const masked = terms.filter((t) => t?.dropout);
    const products: GroupedTerm[] = grouped.map((g) => {
      const w = this.params.weight(`${g.name}.weight`) as DenseWeight;
      return { a: g.dy, b: w.view, bFormat: w.format, K: g.outDim };
    });
    for (const t of terms) if (t && !t.dropout) products.push(this.lowRankTerm(t));
    if (dx) {
      matmulGrouped(rec, [{ c: dx, M: T, N: inDim, terms: products, accumulate: accumulateDx }]);
      for (const t of masked) addLowRank(rec, dx, T, inDim, t!);
    }
    for (const g of grads) if (!grouped.includes(g)) this.linearBackward(rec, acts, x, g.name, g.dy, dx, g.outDim, inDim, true);
    const problems: GroupedProblem[] = [];
    for (const g of grouped) {
      const hooks = this.hooks?.has(g.name) ? this.hooks : null;
      const ownGradient = hooks?.weightGradient?.(rec, acts, g.name, x, g.dy, g.outDim, inDim, this.pass) ?? false;
      problems.push(...this.parameterGrads(g.name, x, g.dy, g.dy, g.outDim, inDim, T, ownGradient));
    }
    matmulGrouped(rec, problems);
  }

  /** dW += dy^T x (unless the method keeps its own) and db += dyOut^T 1, as grouped-matmul problems. */
  private parameterGrads(name: string, x: View, dy: View, dyOut: View, outDim: number, inDim: number, T: number, ownGradient: boolean): GroupedProblem[] {
    const dW = ownGradient ? null : this.params.grad(`${name}.weight`);
    const dB = this.params.has(`${name}.bias`) ? this.params.grad(`${name}.bias`) : null;
    const out: GroupedProblem[] = [];
    if (dW) out.push({ c: dW, M: outDim, N: inDim, terms: [{ a: dy, transA: true, b: x, K: T }], accumulate: true });
    if (dB) out.push({ c: dB, M: outDim, N: 1, terms: [{ a: dyOut, transA: true, b: 'ones', K: T }], accumulate: true });
    return out;
  }

  /**
   * dx (= or +=; none where nothing below takes a gradient) = dy W (+ the method's term); dW += dy^T x (or the method's own weight gradient) and
   * db += dy^T 1 as one grouped matmul. Under a per-column scale, dy ⊙ s takes dy's place below the scale
   * (the bias's gradient takes dy itself). With `activationGrad`, dx = (dy W) * act'(activationGrad.x) instead
   * (see activationGradOf).
   */
  private linearBackward(
    rec: CommandRecorder, acts: Activations, x: View, name: string, dyOut: View, dx: View | null, outDim: number, inDim: number, accumulateDx = false,
    activationGrad?: { kind: GeluKind; x: View },
  ): void {
    const T = acts.T;
    const hooks = this.hooks?.has(name) ? this.hooks : null;
    const scale = hooks?.outputScale?.(rec, acts, name, outDim, this.pass, 'backward');
    let dy = dyOut;
    if (scale) {
      if (!scale.dz || (scale.scaleGrad && !scale.saved)) throw new Error(`${name}: a per-column scale's backward needs dz (and the saved output for its gradient)`);
      const grad = scale.scaleGrad ? { z: scale.saved!, ds: scale.scaleGrad, divisor: scale.scaleGradDivisor } : undefined;
      columnScaleBackward(rec, { dy: dyOut, scale: scale.scale, dz: scale.dz, grad, rows: T, cols: outDim });
      dy = asView(scale.dz);
    }
    const term = hooks?.inputGradTerm?.(rec, acts, name, x, dy, outDim, inDim, this.pass);
    const w = this.params.weight(`${name}.weight`);
    // Without dx, the method's term was recorded for its own gradients alone.
    if (dx && activationGrad && isDense(w)) {
      // dx = (dy W) * act'(a) in one product: activationGradOf allows no term or scale here.
      matmulGrouped(rec, [{ c: dx, M: T, N: inDim, terms: [{ a: dy, b: w.view, bFormat: w.format, K: outDim }], activationGrad }]);
    } else if (dx && isDense(w)) {
      matmul(rec, { a: dy, b: w.view, bFormat: w.format, c: dx, M: T, N: inDim, K: outDim, accumulate: accumulateDx, lowRank: hooks?.fused ? term : undefined });
      if (term && !hooks!.fused) addLowRank(rec, dx, T, inDim, term);
    } else if (dx && !isDense(w)) {
      matmulQ4InputGrad(rec, { dy, weight: w.q4, dx, M: T, accumulate: accumulateDx });
      if (term) addLowRank(rec, dx, T, inDim, term);
    }
    const ownGradient = hooks?.weightGradient?.(rec, acts, name, x, dy, outDim, inDim, this.pass) ?? false;
    matmulGrouped(rec, this.parameterGrads(name, x, dy, dyOut, outDim, inDim, T, ownGradient));
  }

  /**
   * The lowest layer that trains anything (a parameter, or a method's hooks on its linear layers), or -1
   * where the embeddings train: the backward pass goes no lower, as autograd stops where nothing requires
   * a gradient. With the embeddings frozen (LoRA, sparse), layer 0's q, k and v products take their own
   * gradients alone, and no input gradient.
   */
  private lowestTrainedLayer(): number {
    const pos = this.family.positionEmbedding;
    if (this.table('embed').some((p) => p.grad) || (pos && this.params.grad(pos))) return -1;
    let lowest = this.config.numLayers;
    for (const { name } of paramSpecs(this.config)) {
      const layer = /^layers\.(\d+)\./.exec(name);
      if (layer && this.trains(name)) lowest = Math.min(lowest, Number(layer[1]));
    }
    return lowest;
  }

  /** A norm's parameters: its weight, and its bias where it has one. */
  private paramsOf(norm: string): string[] {
    return [`${norm}.weight`, `${norm}.bias`].filter((name) => this.params.has(name));
  }

  /** Whether a parameter takes a gradient: its own, or through a method's hooks on its linear layer. */
  private trains(param: string): boolean {
    return !!this.params.grad(param) || !!this.hooks?.has(param.replace(/\.(weight|bias)$/, ''));
  }

  /**
   * The family's lone activation as an epilogue of the down projection's input gradient (dx = dy W times
   * act'(a)), where that product runs in the grouped kernel (GpuTuning.groupedProducts) on a dense weight
   * whose method adds no term to its input gradient; otherwise undefined.
   */
  private activationGradOf(down: string, l: LayerActivations): { kind: GeluKind; x: View } | undefined {
    const kind = this.family.activation;
    if (!kind || !this.gpu.tuning.groupedProducts || this.hooksInputGrad(down) || !isDense(this.params.weight(`${down}.weight`)) || asView(l.a).format) return undefined;
    return { kind, x: l.a };
  }

  private norm(rec: CommandRecorder, acts: Activations, name: string, x: View, y: View, stats: View): void {
    const c = this.config;
    normForward(rec, {
      kind: c.norm, rows: acts.T, cols: c.hiddenSize, eps: c.normEps, weightOffset: c.normWeightOffset, x, y, stats,
      weight: this.params.param(`${name}.weight`),
      bias: c.norm === 'layernorm' ? this.params.param(`${name}.bias`) : undefined,
    });
  }

  /** An RMSNorm over each head's headDim values of x [T, heads * headDim] into y (Qwen3's q_norm, k_norm). */
  private headNorm(rec: CommandRecorder, acts: Activations, name: string, x: View, y: View, stats: View, heads: number): void {
    const c = this.config;
    normForward(rec, { kind: 'rmsnorm', rows: acts.T * heads, cols: c.headDim, eps: c.normEps, weightOffset: c.normWeightOffset, x, y, stats, weight: this.params.param(`${name}.weight`) });
  }

  /** dx = the per-head norm's backward of dy (overwritten), its weight's gradient accumulated. */
  private headNormBackward(rec: CommandRecorder, acts: Activations, name: string, x: View, stats: View, dy: View, dx: View, heads: number): void {
    const c = this.config;
    normBackward(rec, {
      kind: 'rmsnorm', rows: acts.T * heads, cols: c.headDim, eps: c.normEps, weightOffset: c.normWeightOffset, x, stats, dy, dx,
      weight: this.params.param(`${name}.weight`), dWeight: this.params.grad(`${name}.weight`) ?? undefined,
    });
  }

  /** dx (= or, with `accumulate`, +=) norm backward of dy. */
  private normBackwardInto(rec: CommandRecorder, acts: Activations, name: string, x: View, stats: View, dy: View, dx: View, accumulate: boolean): void {
    const c = this.config;
    normBackward(rec, {
      kind: c.norm, rows: acts.T, cols: c.hiddenSize, eps: c.normEps, weightOffset: c.normWeightOffset, x, stats, dy, dx, accumulate,
      weight: this.params.param(`${name}.weight`),
      dWeight: this.params.grad(`${name}.weight`) ?? undefined,
      dBias: c.norm === 'layernorm' ? this.params.grad(`${name}.bias`) ?? undefined : undefined,
    });
  }

  private attentionShape(acts: Activations, layer: number) {
    return { B: acts.B, S: acts.S, ...layerAttention(this.config, layer), segments: acts.hasSegments ? acts.segments : undefined };
  }

  /**
   * The activations whose logits buffer holds the last forward pass's whole logits (a vocabulary of one
   * chunk), until a backward pass turns them into gradients: that pass then need not recompute them.
   */
  private heldLogits: Activations | null = null;

  /** Records the forward pass through the per-token losses (acts 'losses'). */
  forward(rec: CommandRecorder, acts: Activations, pass: PassContext = EVAL_PASS): void {
    this.params.prepareWeights?.(rec, true);
    this.forwardLayers(rec, acts, this.selfAttention, pass);
    const ce = this.ceArgs(acts);
    crossEntropyForward(rec, ce);
    this.heldLogits = crossEntropyOneChunk(ce) ? acts : null;
  }

  /** Self-attention within the batch (causal, segments, windows): what training and evaluation use. */
  private readonly selfAttention: AttentionStep = (rec, acts, i, l) =>
    attentionForward(rec, { ...this.attentionShape(acts, i), q: l.q, k: l.k, v: l.v, o: l.att, stats: l.ast });

  /**
   * Records the forward pass through the final norm (acts.lnf), with `attend` as each layer's
   * attention (default: within the batch; generation passes attention over its KV cache).
   */
  forwardHidden(rec: CommandRecorder, acts: Activations, attend: AttentionStep = this.selfAttention, pass: PassContext = EVAL_PASS): void {
    this.params.prepareWeights?.(rec, false);
    this.forwardLayers(rec, acts, attend, pass);
  }

  /** The forward pass through the final norm, with the weights as they are (forward and forwardHidden prepare them). */
  private forwardLayers(rec: CommandRecorder, acts: Activations, attend: AttentionStep, pass: PassContext): void {
    this.pass = pass;
    const c = this.config;
    const pieces = this.table('embed');
    const pos = this.family.positionEmbedding;
    const positions = pos ? { ids: acts.positions, table: this.params.param(pos), rows: c.maxPositions } : undefined;
    // A split table: each piece writes the tokens whose ids it holds (with their positions' rows).
    for (const p of pieces) {
      embeddingForward(rec, {
        ids: acts.ids, table: p.weight.view, tableFormat: p.weight.format, out: acts.stream[0], T: acts.T, C: c.hiddenSize, rows: p.rows, scale: c.embedScale,
        rowOffset: pieces.length > 1 ? p.rowStart : undefined, positions,
      });
    }
    for (let i = 0; i < c.numLayers; i++) {
      this.layerForward(rec, acts, i, attend);
      this.layerOutput(rec, acts, i);
    }
    this.norm(rec, acts, 'norm_f', acts.stream[c.numLayers], acts.lnf, acts.stf);
  }

  /**
   * Layer i from the stream entering it up to the MLP's activation: everything its backward pass reads
   * (and what gradient checkpointing recomputes), short of the output projection.
   */
  private layerForward(rec: CommandRecorder, acts: Activations, i: number, attend: AttentionStep): void {
    const c = this.config;
    const T = acts.T;
    const H = c.hiddenSize;
    const qd = c.numHeads * c.headDim;
    const kvd = c.numKvHeads * c.headDim;
    const L = `layers.${i}`;
    const l = acts.layers[i];
    this.norm(rec, acts, `${L}.norm1`, acts.stream[i], l.ln1, l.st1);
    this.linears(rec, acts, l.ln1, [
      { name: `${L}.q`, y: l.qk?.q ?? l.q, outDim: qd },
      { name: `${L}.k`, y: l.qk?.k ?? l.k, outDim: kvd },
      { name: `${L}.v`, y: l.v, outDim: kvd },
    ], H);
    if (l.qk) {
      this.headNorm(rec, acts, `${L}.q_norm`, l.qk.q, l.q, l.qk.qStats, c.numHeads);
      this.headNorm(rec, acts, `${L}.k_norm`, l.qk.k, l.k, l.qk.kStats, c.numKvHeads);
    }
    this.family.rotate(rec, acts, i, l.q, l.k, false);
    attend(rec, acts, i, l);
    // Residuals: write the projection (or its norm), then add the stream (one arena buffer cannot copy into itself).
    if (l.post) {
      this.linear(rec, acts, l.att, `${L}.o`, l.post.ao, H, qd);
      this.norm(rec, acts, `${L}.post_attn_norm`, l.post.ao, l.xm, l.post.sta);
      elementwise(rec, { op: 'axpy', y: l.xm, x: acts.stream[i], n: T * H, s0: 1 });
    } else this.linear(rec, acts, l.att, `${L}.o`, l.xm, H, qd, acts.stream[i]);
    this.norm(rec, acts, `${L}.norm2`, l.xm, l.ln2, l.st2);
    this.family.mlpUp(rec, acts, L, l);
  }

  /** The MLP's output projection and the residual: the stream leaving layer i. */
  private layerOutput(rec: CommandRecorder, acts: Activations, i: number): void {
    const c = this.config;
    const l = acts.layers[i];
    if (!l.post) return this.linear(rec, acts, l.h, `layers.${i}.${this.family.down}`, acts.stream[i + 1], c.hiddenSize, c.intermediateSize, l.xm);
    this.mlpOutput(rec, acts, i, acts.stream[i + 1]);
    elementwise(rec, { op: 'axpy', y: acts.stream[i + 1], x: l.xm, n: acts.T * c.hiddenSize, s0: 1 });
  }

  /** (Gemma) The MLP's output into `out`: the norm of the down projection of h, keeping what that norm's backward reads. */
  private mlpOutput(rec: CommandRecorder, acts: Activations, i: number, out: View): void {
    const c = this.config;
    const l = acts.layers[i];
    this.linear(rec, acts, l.h, `layers.${i}.${this.family.down}`, l.post!.mo, c.hiddenSize, c.intermediateSize);
    this.norm(rec, acts, `layers.${i}.post_mlp_norm`, l.post!.mo, out, l.post!.stm);
  }

  /** logits [rows, vocab] of final hidden states [rows, hidden]. */
  logits(rec: CommandRecorder, hidden: View, logits: View, rows = 1): void {
    const c = this.config;
    const pieces = this.table(this.lmHead);
    if (pieces.length === 1) {
      const head = pieces[0].weight;
      matmul(rec, { a: hidden, b: head.view, bFormat: head.format, c: logits, M: rows, N: c.vocabSize, K: c.hiddenSize, transB: true });
    } else {
      // Each piece's logits [rows, piece rows] into scratch, then row by row into their columns of [rows, V]
      // (a row's slice of the output is not binding-aligned, so the product cannot write there directly).
      const bytes = rows * Math.max(...pieces.map((p) => p.rows)) * 4;
      if (!this.pieceLogits || this.pieceLogits.size < bytes) {
        if (this.pieceLogits) this.gpu.destroyBuffer(this.pieceLogits);
        this.pieceLogits = this.gpu.createBuffer(bytes, undefined, 'lm head piece logits');
      }
      const out = asView(logits);
      for (const p of pieces) {
        matmul(rec, { a: hidden, b: p.weight.view, bFormat: p.weight.format, c: { buffer: this.pieceLogits, offset: 0, size: rows * p.rows * 4 }, M: rows, N: p.rows, K: c.hiddenSize, transB: true });
        for (let r = 0; r < rows; r++) {
          rec.copy({ buffer: this.pieceLogits, offset: r * p.rows * 4, size: p.rows * 4 }, { buffer: out.buffer, offset: out.offset + (r * c.vocabSize + p.rowStart) * 4, size: p.rows * 4 }, p.rows * 4);
        }
      }
    }
    if (c.finalLogitSoftcap !== null) elementwise(rec, { op: 'softcap', y: logits, n: rows * c.vocabSize, s0: c.finalLogitSoftcap });
  }

  private ceArgs(acts: Activations) {
    const c = this.config;
    const pieces = this.table(this.lmHead);
    return {
      hidden: acts.lnf, weight: pieces[0].weight.view, weightFormat: pieces[0].weight.format, targets: acts.targets,
      pieces: pieces.length > 1 ? pieces.map((p) => ({ weight: p.weight.view, rows: p.rows })) : undefined,
      T: acts.T, H: c.hiddenSize, V: c.vocabSize, chunk: acts.chunk, softcap: c.finalLogitSoftcap,
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
    const head = this.table(this.lmHead);
    const dHead = head.every((p) => p.grad) ? head.map((p) => p.grad!) : undefined;
    const lowest = this.lowestTrainedLayer();
    crossEntropyBackward(rec, { ...this.ceArgs(acts), dHidden: g.dln, ...(head.length > 1 ? { dWeightPieces: dHead } : { dWeight: dHead?.[0] }), gradScale, forwardLogits: this.heldLogits === acts });
    this.heldLogits = null;
    this.normBackwardInto(rec, acts, 'norm_f', acts.stream[c.numLayers], acts.stf, g.dln, dx, false);
    for (let i = c.numLayers - 1; i >= Math.max(lowest, 0); i--) {
      const L = `layers.${i}`;
      const l = acts.layers[i];
      // Gradient checkpointing: the layers share one set of tensors, so this layer's are recomputed
      // from the stream entering it (same kernels, same pass: bit for bit what the forward pass wrote).
      if (acts.checkpointed) this.layerForward(rec, acts, i, this.selfAttention);
      // x_{i+1} = xm + mlp(norm2(xm)): dx flows to xm unchanged, plus through the MLP, whose input h
      // (one buffer for all layers) is recomputed from a and b where the down projection's backward reads
      // it: for its weight's gradient, or a method's hook (checkpointing has just recomputed it).
      const down = `${L}.${this.family.down}`;
      if (!acts.checkpointed && (this.params.grad(`${down}.weight`) || this.hooks?.has(down))) this.family.mlpActivate(rec, acts, l);
      let dMlp = dx;
      if (l.post) {
        // x_{i+1} = xm + post_mlp_norm(mo): mo (and the norm's statistics) recomputed when checkpointed,
        // its gradient through dtmp.
        if (acts.checkpointed) this.mlpOutput(rec, acts, i, g.dtmp);
        this.normBackwardInto(rec, acts, `${L}.post_mlp_norm`, l.post.mo, l.post.stm, dx, g.dtmp, false);
        dMlp = g.dtmp;
      }
      // A lone GELU's backward in the down projection's input-gradient product, where products are grouped.
      const activationGrad = this.activationGradOf(down, l);
      this.linearBackward(rec, acts, l.h, down, dMlp, activationGrad ? g.da : g.dh, H, I, false, activationGrad);
      this.family.mlpUpBackward(rec, acts, L, l, g, !!activationGrad);
      this.normBackwardInto(rec, acts, `${L}.norm2`, l.xm, l.st2, g.dln, dx, true);
      // xm = x_i + attention(norm1(x_i)) W_o^T (Gemma: + post_attn_norm of that projection).
      let dAttnOut = dx;
      if (l.post) {
        this.normBackwardInto(rec, acts, `${L}.post_attn_norm`, l.post.ao, l.post.sta, dx, g.dtmp, false);
        dAttnOut = g.dtmp;
      }
      this.linearBackward(rec, acts, l.att, `${L}.o`, dAttnOut, g.datt, H, qd);
      attentionBackward(rec, {
        ...this.attentionShape(acts, i), q: l.q, k: l.k, v: l.v, o: l.att, stats: l.ast,
        dO: g.datt, dQ: g.dq, dK: g.dk, dV: g.dv, keptScores: g.kept ?? undefined,
      });
      this.family.rotate(rec, acts, i, g.dq, g.dk, true);
      // Through the per-head q/k norm: attention's gradient input (datt) is spent, so it takes dq's.
      const [dq, dk] = l.qk ? [g.datt, g.dkp!] : [g.dq, g.dk];
      if (l.qk) {
        this.headNormBackward(rec, acts, `${L}.q_norm`, l.qk.q, l.qk.qStats, g.dq, dq, c.numHeads);
        this.headNormBackward(rec, acts, `${L}.k_norm`, l.qk.k, l.qk.kStats, g.dk, dk, c.numKvHeads);
      }
      // In the lowest layer that trains anything, these products' input gradient serves its first norm alone.
      const inputGrad = i > lowest || this.paramsOf(`${L}.norm1`).some((name) => this.trains(name));
      this.linearsBackward(rec, acts, l.ln1, [
        { name: `${L}.q`, dy: dq, outDim: qd },
        { name: `${L}.k`, dy: dk, outDim: kvd },
        { name: `${L}.v`, dy: g.dv, outDim: kvd },
      ], inputGrad ? g.dln : null, H);
      if (inputGrad) this.normBackwardInto(rec, acts, `${L}.norm1`, acts.stream[i], l.st1, g.dln, dx, true);
    }
    const embed = this.table('embed');
    for (const p of embed) {
      if (!p.grad) continue;
      embeddingBackward(rec, {
        unique: acts.embedPlan.unique, offsets: acts.embedPlan.offsets, order: acts.embedPlan.order, U: acts.uniqueIds,
        dOut: dx, dTable: p.grad, T, C: H, rows: p.rows, scale: c.embedScale, rowOffset: embed.length > 1 ? p.rowStart : undefined,
      });
    }
    const dPos = this.family.positionEmbedding ? this.params.grad(this.family.positionEmbedding) : null;
    if (dPos) {
      // Positions as ids: each position's gradient is the sum over the tokens at that position.
      const plan = acts.positionPlan;
      embeddingBackward(rec, { unique: plan.unique, offsets: plan.offsets, order: plan.order, U: acts.uniquePositions, dOut: dx, dTable: dPos, T, C: H, rows: c.maxPositions });
    }
  }

  destroy(): void {
    for (const table of this.ropeTables) this.gpu.destroyBuffer(table);
    if (this.pieceLogits) this.gpu.destroyBuffer(this.pieceLogits);
  }
}

/** A layer's RoPE table, and LongRoPE's table of long factors with the context past which it is used. */
interface LayerRopeTables {
  short: GPUBuffer;
  long?: GPUBuffer;
  context?: number;
}

/** Layer i's attention as the config has it: heads, head size, window, score scale and soft cap. */
export function layerAttention(c: ModelConfig, layer: number) {
  return {
    nH: c.numHeads, nKV: c.numKvHeads, headDim: c.headDim, window: c.layerWindows[layer],
    scale: c.attentionScale, softcap: c.attentionSoftcap,
  };
}
