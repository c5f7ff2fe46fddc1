/**
 * The activations of one (batch, sequence) shape, allocated once and reused every step, as typed
 * records: `acts.layers[i].q`, `acts.stream[i]`, `acts.grad.dx`. Each tensor has its own buffer: WebGPU
 * checks read/write conflicts per buffer, not per range, and kernels read one activation while writing
 * the next. A training arena adds the backward scratch (`grad`). A checkpointed training arena (gradient
 * checkpointing) keeps only the residual stream of every layer and one set of layer tensors that all
 * layers share: the backward pass recomputes each layer's forward from the stream entering it, one more
 * forward's work for a fraction of the memory. An inference arena (evaluation, generation, zeroth-order
 * training) keeps nothing for a backward pass: one set of layer tensors and two stream buffers that the
 * layers alternate between, so its size does not grow with the depth. Under mixed precision the inputs
 * of the linear layers that norms and the MLP's activation write (ln1, ln2, h) are f16, packed two per
 * word: views with format 'f16', which the products read as 16-bit operands.
 */
import type { TensorView } from '../gpu/buffers.js';
import type { Gpu } from '../gpu/gpu.js';
import { keepsScores, keptScoresLength, type AttentionVariant } from '../kernels/attention.js';
import { crossEntropyChunk } from '../kernels/cross-entropy.js';
import type { PreparedBatch } from './batch.js';
import type { ModelConfig } from './config.js';

type View = TensorView;

export type ActivationKind = 'train' | 'checkpointed' | 'inference';

/**
 * A planned tensor: its name, its length in 4-byte words, 'f16' where it holds packed halves, and the
 * group whose one buffer it shares (see GROUP_ALIGN).
 */
export interface PlannedTensor {
  name: string;
  length: number;
  format?: 'f16';
  group?: string;
}

/** A buffer of an arena: one tensor, or a group of them at GROUP_ALIGN-aligned offsets. */
export interface PlannedBuffer {
  name: string;
  bytes: number;
  tensors: { tensor: PlannedTensor; offset: number }[];
}

/**
 * Tensors that one grouped product writes or reads together share a buffer (q, k and v; their
 * gradients), so one binding covers them all. Each starts at a multiple of 256 bytes, the largest
 * minStorageBufferOffsetAlignment WebGPU allows, so every device can bind each alone. A group larger
 * than 128 MiB, the smallest maxStorageBufferBindingSize a device may have, keeps a buffer per tensor.
 */
const GROUP_ALIGN = 256;
const GROUP_MAX_BYTES = 128 << 20;

/** Whether a model's arenas keep the linear layers' norm and activation inputs f16 (mixed precision, even widths). */
export function halfLinearInputs(c: ModelConfig, precision: 'f32' | 'mixed'): boolean {
  return precision === 'mixed' && c.hiddenSize % 2 === 0 && c.intermediateSize % 2 === 0;
}

/** What one layer keeps from its forward pass for its backward pass. */
export interface LayerActivations {
  /** norm1(x), [T, H] (f16 under mixed precision, as ln2 and h), and its per-token statistics [T, 2]. */
  ln1: View;
  st1: View;
  /** Projections after RoPE: [T, heads * headDim], [T, kvHeads * headDim]. */
  q: View;
  k: View;
  v: View;
  /** With a per-head q/k norm (Qwen3): the projections before it, and its statistics [T, heads, 2]. */
  qk: { q: View; k: View; qStats: View; kStats: View } | null;
  /** Attention output [T, heads * headDim] and its log-sum-exp statistics [T, heads, 2]. */
  att: View;
  ast: View;
  /** The stream after attention (x + o-projection), [T, H]. */
  xm: View;
  /**
   * With norms on the sublayers' outputs (Gemma): the o-projection's and the down projection's outputs
   * before them [T, H], and their statistics [T, 2].
   */
  post: { ao: View; sta: View; mo: View; stm: View } | null;
  ln2: View;
  st2: View;
  /** MLP pre-activations [T, I]: `a` is fc (GPT-2) or gate (SwiGLU), `b` is up (SwiGLU only). */
  a: View;
  b: View | null;
  /** MLP activation output [T, I]: one buffer every layer shares (the backward pass recomputes it). */
  h: View;
}

/** Backward scratch shared by every layer (activation gradients are overwritten, layer by layer). */
export interface GradientScratch {
  dx: View;
  dtmp: View;
  dln: View;
  dq: View;
  dk: View;
  dv: View;
  datt: View;
  da: View;
  db: View;
  dh: View;
  /** With a per-head q/k norm: the gradient of the key projection before it (the query's reuses datt). */
  dkp: View | null;
  /** Where attention's blocked backward keeps its scores (beside dq, dk and dv), for short sequences; else null. */
  kept: View | null;
}

/** A sorted grouping of token positions by id, for deterministic embedding gradients. */
export interface IdPlanViews {
  order: View;
  unique: View;
  offsets: View;
}

/** The tensors of a training arena's backward scratch. */
const GRADIENT_SCRATCH = new Set(['dx', 'dtmp', 'dln', 'dq', 'dk', 'dv', 'kept', 'datt', 'dkp', 'da', 'db', 'dh']);

export class Activations {
  private readonly buffers = new Map<string, GPUBuffer>();
  private readonly onDestroyed: (() => void)[] = [];
  readonly T: number;
  readonly chunk: number;
  /** Bytes of this arena's own buffers (what the model's activation cache budgets). */
  readonly bytes: number;
  /** Batch inputs: token ids, positions, segment ids and targets per token. */
  readonly ids: View;
  readonly positions: View;
  readonly segments: View;
  readonly targets: View;
  readonly embedPlan: IdPlanViews;
  readonly positionPlan: IdPlanViews;
  /** The residual stream: stream[i] enters layer i; stream[numLayers] leaves the last one. */
  readonly stream: View[];
  readonly layers: LayerActivations[];
  /** Final norm output [T, H] and statistics; one vocabulary chunk of logits; [T, 3] cross-entropy stats; [T] losses. */
  readonly lnf: View;
  readonly stf: View;
  readonly logits: View;
  readonly cestats: View;
  readonly losses: View;
  /** Backward scratch; null in an inference arena. */
  readonly grad: GradientScratch | null;
  /** Layer tensors are one set all layers share, recomputed in the backward pass (gradient checkpointing). */
  readonly checkpointed: boolean;
  /** Set by load(): whether the batch packs documents, and the unique id counts of its gradient plans. */
  hasSegments = false;
  /** The batch's largest position (LongRoPE picks its factors by it). */
  maxPosition = 0;
  uniqueIds = 0;
  uniquePositions = 0;

  constructor(
    private readonly gpu: Gpu,
    readonly config: ModelConfig,
    readonly B: number,
    readonly S: number,
    readonly kind: ActivationKind = 'train',
    /** The linear layers' norm and activation inputs in f16 (see halfLinearInputs). */
    readonly half = false,
  ) {
    const plan = Activations.plan(config, B, S, kind, half, gpu.tuning.attentionVariant);
    const buffers = Activations.buffersOf(plan);
    this.T = B * S;
    this.chunk = crossEntropyChunk(this.T, config.vocabSize, 32 << 20);
    // Every size is checked before the first allocation, and a failure part way releases what was made.
    for (const { name, bytes } of buffers) gpu.checkBufferSize(bytes, `act ${name}`);
    const views = new Map<string, View>();
    try {
      for (const { name, bytes, tensors } of buffers) {
        const buffer = gpu.createBuffer(bytes, undefined, `act ${name}`);
        this.buffers.set(name, buffer);
        for (const { tensor: t, offset } of tensors) views.set(t.name, { buffer, offset, size: Math.max(4, t.length * 4), ...(t.format ? { format: t.format } : {}) });
      }
    } catch (e) {
      this.destroy();
      throw e;
    }
    const v = (name: string): View => views.get(name)!;
    this.ids = v('ids');
    this.positions = v('positions');
    this.segments = v('segments');
    this.targets = v('targets');
    this.embedPlan = { order: v('emb.order'), unique: v('emb.unique'), offsets: v('emb.offsets') };
    this.positionPlan = { order: v('pos.order'), unique: v('pos.unique'), offsets: v('pos.offsets') };
    const inference = kind === 'inference';
    // Layer i reads stream[i] and writes stream[i + 1]: two buffers serve a pass that keeps neither.
    this.stream = Array.from({ length: config.numLayers + 1 }, (_, i) => v(`x${inference ? i % 2 : i}`));
    this.checkpointed = kind === 'checkpointed';
    this.layers = Array.from({ length: config.numLayers }, (_, i) => {
      const l = (n: string) => v(`${kind === 'train' ? `l${i}` : 'l'}.${n}`);
      return {
        ln1: l('ln1'), st1: l('st1'), q: l('q'), k: l('k'), v: l('v'), att: l('att'), ast: l('ast'), xm: l('xm'),
        qk: config.qkNorm ? { q: l('qp'), k: l('kp'), qStats: l('qst'), kStats: l('kst') } : null,
        post: config.postNorms ? { ao: l('ao'), sta: l('sta'), mo: l('mo'), stm: l('stm') } : null,
        ln2: l('ln2'), st2: l('st2'), a: l('a'), b: config.family === 'llama' ? l('b') : null, h: v('h'),
      };
    });
    this.lnf = v('lnf');
    this.stf = v('stf');
    this.logits = v('logits');
    this.cestats = v('cestats');
    this.losses = v('losses');
    this.grad = kind !== 'inference'
      ? { dx: v('dx'), dtmp: v('dtmp'), dln: v('dln'), dq: v('dq'), dk: v('dk'), dv: v('dv'), datt: v('datt'), da: v('da'), db: v('db'), dh: v('dh'), dkp: config.qkNorm ? v('dkp') : null, kept: plan.some((t) => t.name === 'kept') ? v('kept') : null }
      : null;
    this.bytes = [...this.buffers.values()].reduce((sum, b) => sum + b.size, 0);
  }

  /**
   * The tensors of a (batch, sequence) shape, by name and length in 4-byte words (f16 ones hold two per
   * word); `attention` is the device's attention kernel form, whose blocked backward may keep its scores here.
   */
  static plan(c: ModelConfig, B: number, S: number, kind: ActivationKind = 'train', half = false, attention: AttentionVariant = 'tiled'): PlannedTensor[] {
    const T = B * S;
    const H = c.hiddenSize;
    const qd = c.numHeads * c.headDim;
    const kvd = c.numKvHeads * c.headDim;
    const I = c.intermediateSize;
    const chunk = crossEntropyChunk(T, c.vocabSize, 32 << 20);
    const t: PlannedTensor[] = [];
    const add = (name: string, length: number, group?: string) => t.push({ name, length, ...(group ? { group } : {}) });
    // An f16 linear input: half the words.
    const addHalf = (name: string, length: number) => (half ? t.push({ name, length: Math.ceil(length / 2), format: 'f16' }) : add(name, length));
    for (const n of ['ids', 'positions', 'segments', 'targets', 'emb.order', 'emb.unique', 'pos.order', 'pos.unique']) add(n, T);
    add('emb.offsets', T + 1);
    add('pos.offsets', T + 1);
    // The residual stream entering each layer (two alternating buffers for inference).
    for (let i = 0; i <= (kind === 'inference' ? Math.min(1, c.numLayers) : c.numLayers); i++) add(`x${i}`, T * H);
    // Training: a set of layer tensors per layer; checkpointed and inference: one set, shared.
    const shared = kind !== 'train';
    for (let i = 0; i < (shared ? 1 : c.numLayers); i++) {
      const p = shared ? 'l.' : `l${i}.`;
      addHalf(`${p}ln1`, T * H);
      add(`${p}st1`, 2 * T);
      // The q, k and v products write one group (with a per-head norm, the tensors before it).
      add(`${p}q`, T * qd, c.qkNorm ? undefined : `${p}qkv`);
      add(`${p}k`, T * kvd, c.qkNorm ? undefined : `${p}qkv`);
      add(`${p}v`, T * kvd, `${p}qkv`);
      if (c.qkNorm) {
        add(`${p}qp`, T * qd, `${p}qkv`);
        add(`${p}kp`, T * kvd, `${p}qkv`);
        add(`${p}qst`, 2 * T * c.numHeads);
        add(`${p}kst`, 2 * T * c.numKvHeads);
      }
      add(`${p}att`, T * qd);
      add(`${p}ast`, 2 * T * c.numHeads);
      add(`${p}xm`, T * H);
      if (c.postNorms) {
        add(`${p}ao`, T * H);
        add(`${p}sta`, 2 * T);
        add(`${p}mo`, T * H);
        add(`${p}stm`, 2 * T);
      }
      addHalf(`${p}ln2`, T * H);
      add(`${p}st2`, 2 * T);
      add(`${p}a`, T * I);
      if (c.family === 'llama') add(`${p}b`, T * I);
    }
    // The MLP's activated hidden state: one buffer for all layers. The forward pass writes each layer's
    // just before its down projection reads it; the backward pass recomputes it from a (and b), one
    // elementwise op, instead of keeping a copy per layer (a third of the MLP's activations).
    addHalf('h', T * I);
    add('lnf', T * H);
    add('stf', 2 * T);
    add('logits', T * Math.min(chunk, c.vocabSize));
    add('cestats', 3 * T);
    add('losses', T);
    if (kind !== 'inference') {
      // Backward scratch, reused by every layer (GRADIENT_SCRATCH names it).
      for (const n of ['dx', 'dtmp', 'dln']) add(n, T * H);
      // What attention's backward writes and the q, k and v products read, one group.
      add('dq', T * qd, 'dqkv');
      add('dk', T * kvd, 'dqkv');
      add('dv', T * kvd, 'dqkv');
      if (keepsScores(attention, B, S, c.numHeads)) add('kept', keptScoresLength(B, S, c.numHeads), 'dqkv');
      add('datt', T * qd);
      if (c.qkNorm) add('dkp', T * kvd);
      for (const n of ['da', 'db', 'dh']) add(n, T * I);
    }
    return t;
  }

  /** Bytes of a training arena's backward scratch (the gradients every layer reuses). */
  static scratchBytes(c: ModelConfig, B: number, S: number, attention: AttentionVariant = 'tiled'): number {
    return Activations.bytesOf(Activations.plan(c, B, S, 'train', false, attention).filter((t) => GRADIENT_SCRATCH.has(t.name)));
  }

  /** Bytes an arena of this shape and kind allocates (`half`: with f16 linear inputs; `attention`: as plan()). */
  static bytesFor(c: ModelConfig, B: number, S: number, kind: ActivationKind, half = false, attention: AttentionVariant = 'tiled'): number {
    return Activations.bytesOf(Activations.plan(c, B, S, kind, half, attention));
  }

  /** Bytes a plan allocates (every buffer at least 4 bytes). */
  static bytesOf(plan: PlannedTensor[]): number {
    return Activations.buffersOf(plan).reduce((sum, b) => sum + b.bytes, 0);
  }

  /** The buffers of a plan: a group's tensors in one, at aligned offsets; every other tensor alone. */
  static buffersOf(plan: PlannedTensor[]): PlannedBuffer[] {
    const bytes = (t: PlannedTensor) => Math.max(4, Math.ceil(t.length) * 4);
    const groups = new Map<string, PlannedTensor[]>();
    for (const t of plan) if (t.group) groups.set(t.group, [...(groups.get(t.group) ?? []), t]);
    const fits = (members: PlannedTensor[]) => members.reduce((sum, t) => sum + Math.ceil(bytes(t) / GROUP_ALIGN) * GROUP_ALIGN, 0) <= GROUP_MAX_BYTES;
    const out: PlannedBuffer[] = [];
    const done = new Set<string>();
    for (const t of plan) {
      const members = t.group ? groups.get(t.group)! : [];
      if (!t.group || !fits(members)) {
        out.push({ name: t.name, bytes: bytes(t), tensors: [{ tensor: t, offset: 0 }] });
        continue;
      }
      if (done.has(t.group)) continue;
      done.add(t.group);
      let offset = 0;
      const tensors = members.map((m) => {
        const at = offset;
        offset += Math.ceil(bytes(m) / GROUP_ALIGN) * GROUP_ALIGN;
        return { tensor: m, offset: at };
      });
      out.push({ name: t.group, bytes: offset, tensors });
    }
    return out;
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

  /** Upload a batch's token data into this arena. */
  load(gpu: Gpu, b: PreparedBatch): void {
    if (b.B !== this.B || b.S !== this.S) throw new Error(`batch ${b.B}x${b.S} loaded into activations planned for ${this.B}x${this.S}`);
    this.hasSegments = b.segments !== null;
    this.maxPosition = b.positions.reduce((m, p) => Math.max(m, p), 0);
    this.uniqueIds = b.embedPlan.unique.length;
    this.uniquePositions = b.positionPlan.unique.length;
    gpu.write(this.positionPlan.unique, b.positionPlan.unique);
    gpu.write(this.positionPlan.offsets, b.positionPlan.offsets);
    gpu.write(this.positionPlan.order, b.positionPlan.order);
    gpu.write(this.ids, b.ids);
    gpu.write(this.positions, b.positions);
    gpu.write(this.targets, b.targets);
    if (b.segments) gpu.write(this.segments, b.segments);
    gpu.write(this.embedPlan.unique, b.embedPlan.unique);
    gpu.write(this.embedPlan.offsets, b.embedPlan.offsets);
    gpu.write(this.embedPlan.order, b.embedPlan.order);
  }

  destroy(): void {
    for (const b of this.buffers.values()) this.gpu.destroyBuffer(b);
    this.buffers.clear();
    for (const release of this.onDestroyed.splice(0)) release();
  }
}
