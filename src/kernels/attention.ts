/**
 * Flash-style causal attention with GQA and packed-document segments (shaders/attention.wgsl): forward
 * saves the log-sum-exp; backward recomputes probabilities in a dQ pass and a dK/dV pass, no atomics:
 * one dispatch doing both where dQ, dK and dV share a buffer (tiled), else three (a delta pass first).
 * Direct kernels (one invocation per row and head), workgroup-tiled ones, or score blocks computed as
 * matmuls are (shaders/attention_blocked.wgsl, for CPU implementations), as the device tuning says; the
 * blocked backward of a short sequence keeps its scores between its dQ and dK/dV passes (keptScores).
 */
import { ShapeError } from '../errors.js';
import { asView, type BufferLike, type TensorView } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { launch1d, requireDims, requireElements } from './common.js';

export const ATTENTION_MAX_HEAD_DIM = 256;
export type AttentionVariant = 'tiled' | 'blocked' | 'direct';
const WG = 64;

export interface AttentionShape {
  /** Sequences in the batch and tokens per sequence. */
  B: number;
  S: number;
  nH: number;
  nKV: number;
  headDim: number;
  /** Default 1 / sqrt(headDim) (Gemma: 1 / sqrt(query_pre_attn_scalar)). */
  scale?: number;
  /** Soft-capping of the scaled scores, c * tanh(s / c) (Gemma 2's attn_logit_softcapping); omit for none. */
  softcap?: number | null;
  /** u32 [B * S] document ids: attention stays within a document. Omit for one document per sequence. */
  segments?: BufferLike;
  /** Sliding window (Mistral): query position i sees key positions j with i - j < window. Omit for none. */
  window?: number | null;
  /** Kernel form; default: the device tuning's. Decoding over a KV cache always runs direct. */
  variant?: AttentionVariant;
}

function checkShape(kernel: string, s: AttentionShape): void {
  requireDims(kernel, { B: s.B, S: s.S, nH: s.nH, nKV: s.nKV, headDim: s.headDim });
  if (s.nKV === 0 || s.nH % s.nKV) throw new ShapeError(`${kernel}: ${s.nH} query heads are not a multiple of ${s.nKV} key/value heads`);
  if (s.headDim > ATTENTION_MAX_HEAD_DIM) throw new ShapeError(`${kernel}: head dim ${s.headDim} exceeds ${ATTENTION_MAX_HEAD_DIM}`);
  if (s.segments) requireElements(kernel, 'segments', s.segments, s.B * s.S);
  if (s.window != null && (!Number.isInteger(s.window) || s.window < 1)) throw new ShapeError(`${kernel}: window must be a positive integer, got ${s.window}`);
  if (s.softcap != null && !(s.softcap > 0 && Number.isFinite(s.softcap))) throw new ShapeError(`${kernel}: softcap must be a positive number, got ${s.softcap}`);
}

function params(s: AttentionShape, kvRows = s.S, qOffset = 0, at: { dq: number; dk: number; dv: number; kept?: number } = { dq: 0, dk: 0, dv: 0 }) {
  return {
    B: s.B, S: s.S, nH: s.nH, nKV: s.nKV, scale: s.scale ?? 1 / Math.sqrt(s.headDim), Skv: kvRows, qOffset, window: s.window ?? 0, softcap: s.softcap ?? 0,
    dqAt: at.dq, dkAt: at.dk, dvAt: at.dv, keptAt: at.kept ?? 0,
  };
}

/**
 * The most the blocked backward keeps of its scores (probabilities and gradients, 2 B nH S^2 values): up
 * to this, it computes them once, in the dQ pass, rather than again in the dK/dV pass. Short sequences
 * (4 x 128 tokens of 4 heads keep 2 MiB): longer ones recompute, as flash attention does.
 */
export const KEPT_SCORES_MAX_BYTES = 16 << 20;

/** Elements the blocked backward keeps its scores in (see AttentionBackwardArgs.keptScores). */
export function keptScoresLength(B: number, S: number, nH: number): number {
  return 2 * B * nH * S * S + 4;
}

/** Whether a training step on this kernel form and shape keeps attention's scores for the backward pass. */
export function keepsScores(variant: AttentionVariant, B: number, S: number, nH: number): boolean {
  return variant === 'blocked' && keptScoresLength(B, S, nH) * 4 <= KEPT_SCORES_MAX_BYTES;
}

/**
 * The attention shader with its head rows sized to the head dim (MAX_D, a power of two at least 4): an
 * invocation's rows live in function-scope arrays, whose length must be a constant, and arrays sized for
 * the largest head dim cost every smaller one their memory and its initialization.
 */
function attentionModule(headDim: number): { shader: 'attention'; sizes: { MAX_D: number } } {
  return { shader: 'attention', sizes: { MAX_D: headRowCapacity(headDim) } };
}

/** MAX_D: the head dim's power of two, at least 4 (one vec4 quad). */
function headRowCapacity(headDim: number): number {
  return Math.max(4, 2 ** Math.ceil(Math.log2(headDim)));
}

/** Rows per workgroup of the tiled kernels (their workgroup size). */
const OWN = 64;

/**
 * Override constants for the tiled kernels: staged tiles of TILE rows of MAX_D floats, two of them (plus
 * TILE (lse, delta) pairs when `withStats`), within the device's workgroup storage.
 */
function tileConstants(rec: CommandRecorder, headDim: number, segments: boolean, withStats: boolean) {
  const bytesPerRow = 8 * headRowCapacity(headDim) + (withStats ? 8 : 0);
  const TILE = Math.max(1, Math.min(32, Math.floor(rec.gpu.limits.maxComputeWorkgroupStorageSize / bytesPerRow)));
  return { OWN, TILE, SEGMENTS: segments, HD: headDim };
}

/** Rows per workgroup of the score-block kernels. */
const BLOCK = 32;

/** Head dims up to 128 take one quad per invocation in the products with head rows, larger ones two. */
function blockConstants(headDim: number, segments: boolean) {
  return { HD: headDim, NQ: headDim > 128 ? 2 : 1, SEGMENTS: segments };
}

export interface AttentionForwardArgs extends AttentionShape {
  q: BufferLike;
  k: BufferLike;
  v: BufferLike;
  /**
   * Decoding with a KV cache: k and v hold kvRows rows per sequence (S is then the number of new query
   * tokens), and query i sits at position qOffset + i. Forward only; no segments. A batch of sequences
   * at different positions gives one qOffset per sequence, with `offsets` holding the same values
   * (u32 [B]) for the kernel.
   */
  cache?: { kvRows: number; qOffset: number } | { kvRows: number; qOffset: number[]; offsets: BufferLike };
  /** [B * S, nH, D], overwritten. */
  o: BufferLike;
  /** [B * S, nH, 2]: log-sum-exp per (row, head) for the backward pass. */
  stats: BufferLike;
}

export function attentionForward(rec: CommandRecorder, a: AttentionForwardArgs): void {
  checkShape('attentionForward', a);
  const rows = a.B * a.S;
  const cache = a.cache;
  const kvRows = cache?.kvRows ?? a.S;
  const offsets = cache ? (typeof cache.qOffset === 'number' ? [cache.qOffset] : cache.qOffset) : [0];
  // Per-sequence offsets reach the kernel through this buffer; one shared offset through the uniforms.
  const offsetsBuffer = cache && 'offsets' in cache ? cache.offsets : undefined;
  if (cache) {
    requireDims('attentionForward', { kvRows });
    if (a.segments) throw new ShapeError('attentionForward: segments are not supported with a KV cache');
    if (offsetsBuffer && offsets.length !== a.B) throw new ShapeError(`attentionForward: ${offsets.length} query offsets for ${a.B} sequences`);
    for (const qOffset of offsets) {
      requireDims('attentionForward', { qOffset });
      if (qOffset + a.S > kvRows) throw new ShapeError(`attentionForward: positions up to ${qOffset + a.S} exceed the ${kvRows}-row cache`);
    }
    if (offsetsBuffer) requireElements('attentionForward', 'offsets', offsetsBuffer, a.B);
  }
  requireElements('attentionForward', 'q', a.q, rows * a.nH * a.headDim);
  requireElements('attentionForward', 'k', a.k, a.B * kvRows * a.nKV * a.headDim);
  requireElements('attentionForward', 'v', a.v, a.B * kvRows * a.nKV * a.headDim);
  requireElements('attentionForward', 'o', a.o, rows * a.nH * a.headDim);
  requireElements('attentionForward', 'stats', a.stats, rows * a.nH * 2);
  const variant = a.variant ?? rec.gpu.tuning.attentionVariant;
  if (!cache && variant === 'blocked') {
    rec.dispatch({
      shader: 'attention_blocked',
      entryPoint: 'attention_forward_blocked',
      constants: blockConstants(a.headDim, !!a.segments),
      uniforms: params(a),
      storage: { q: a.q, k: a.k, v: a.v, segments: a.segments ?? rec.gpu.placeholder(), o: a.o, stats: a.stats },
      workgroups: [Math.ceil(a.S / BLOCK), a.nH, a.B],
      label: `attention forward blocked ${a.B}x${a.S} h${a.nH}/${a.nKV} d${a.headDim}`,
    });
    return;
  }
  if (!cache && variant === 'tiled') {
    rec.dispatch({
      ...attentionModule(a.headDim),
      entryPoint: 'attention_forward_tiled',
      constants: tileConstants(rec, a.headDim, !!a.segments, false),
      uniforms: params(a),
      storage: { q: a.q, k: a.k, v: a.v, segments: a.segments ?? rec.gpu.placeholder(), o: a.o, stats: a.stats },
      workgroups: [Math.ceil(a.S / OWN), a.nH, a.B],
      label: `attention forward tiled ${a.B}x${a.S} h${a.nH}/${a.nKV} d${a.headDim}`,
    });
    return;
  }
  const unused = rec.gpu.placeholder();
  rec.dispatch({
    ...attentionModule(a.headDim),
    entryPoint: 'attention_forward',
    constants: { WG, SEGMENTS: !!a.segments, SEQ_OFFSETS: !!offsetsBuffer, HD: a.headDim },
    uniforms: params(a, kvRows, offsetsBuffer ? 0 : offsets[0]),
    storage: { q: a.q, k: a.k, v: a.v, segments: a.segments ?? unused, o: a.o, stats: a.stats, seqOffsets: offsetsBuffer ?? unused },
    workgroups: launch1d(rec.gpu, rows * a.nH, WG),
    label: `attention forward ${a.B}x${a.S} h${a.nH}/${a.nKV} d${a.headDim}`,
  });
}

export interface AttentionBackwardArgs extends AttentionForwardArgs {
  dO: BufferLike;
  /** Overwritten. */
  dQ: BufferLike;
  dK: BufferLike;
  dV: BufferLike;
  /**
   * Room for every score's probability and gradient (keptScoresLength elements) in dQ, dK and dV's
   * buffer: the blocked form then runs as two passes, the dQ pass keeping them and the dK/dV pass
   * reading them, in place of computing each score twice. Ignored by the other forms.
   */
  keptScores?: BufferLike;
}

export function attentionBackward(rec: CommandRecorder, a: AttentionBackwardArgs): void {
  checkShape('attentionBackward', a);
  const rows = a.B * a.S;
  const qn = rows * a.nH * a.headDim;
  const kvn = rows * a.nKV * a.headDim;
  for (const [name, b, n] of [['q', a.q, qn], ['k', a.k, kvn], ['v', a.v, kvn], ['o', a.o, qn], ['dO', a.dO, qn], ['dQ', a.dQ, qn], ['dK', a.dK, kvn], ['dV', a.dV, kvn]] as const) {
    requireElements('attentionBackward', name, b, n);
  }
  requireElements('attentionBackward', 'stats', a.stats, rows * a.nH * 2);
  const constants = { WG, SEGMENTS: !!a.segments, HD: a.headDim };
  const seg = a.segments ?? rec.gpu.placeholder();
  const label = `${a.B}x${a.S} h${a.nH}/${a.nKV} d${a.headDim}`;
  const variant = a.variant ?? rec.gpu.tuning.attentionVariant;
  // The blocked form keeps the scores between two passes where they have room beside the gradients; it
  // and the tiled form run in one dispatch where the gradients share a binding, else as the tiled three.
  const tiled = variant !== 'direct';
  const kept = variant === 'blocked' && a.keptScores ? oneBinding(rec, [a.dQ, a.dK, a.dV, a.keptScores]) : null;
  if (kept) {
    requireElements('attentionBackward', 'keptScores', a.keptScores!, keptScoresLength(a.B, a.S, a.nH));
    const [dq, dk, dv, keptAt] = kept.at;
    const uniforms = params(a, a.S, 0, { dq, dk, dv, kept: keptAt });
    rec.dispatch({
      shader: 'attention_blocked', entryPoint: 'attention_backward_dq_keeping', constants: { ...blockConstants(a.headDim, !!a.segments), KEEP_SCORES: true },
      uniforms, storage: { q: a.q, k: a.k, v: a.v, segments: seg, o: a.o, stats: a.stats, dO: a.dO, dQKV: kept.binding },
      workgroups: [Math.ceil(a.S / BLOCK), a.nH, a.B], label: `attention backward dq keeping ${label}`,
    });
    rec.dispatch({
      shader: 'attention_blocked', entryPoint: 'attention_backward_dkv_kept', constants: blockConstants(a.headDim, !!a.segments),
      uniforms, storage: { q: a.q, dO: a.dO, dQKV: kept.binding },
      workgroups: [Math.ceil(a.S / BLOCK), a.nKV, a.B], label: `attention backward dkv kept ${label}`,
    });
    return;
  }
  const gradients = tiled ? oneBinding(rec, [a.dQ, a.dK, a.dV]) : null;
  if (gradients && variant === 'blocked') {
    const [dq, dk, dv] = gradients.at;
    rec.dispatch({
      shader: 'attention_blocked', entryPoint: 'attention_backward_blocked', constants: blockConstants(a.headDim, !!a.segments),
      uniforms: params(a, a.S, 0, { dq, dk, dv }), storage: { q: a.q, k: a.k, v: a.v, segments: seg, o: a.o, stats: a.stats, dO: a.dO, dQKV: gradients.binding },
      workgroups: [Math.ceil(a.S / BLOCK), a.nH + a.nKV, a.B], label: `attention backward blocked ${label}`,
    });
    return;
  }
  if (gradients) {
    const [dq, dk, dv] = gradients.at;
    rec.dispatch({
      ...attentionModule(a.headDim), entryPoint: 'attention_backward_tiled', constants: tileConstants(rec, a.headDim, !!a.segments, true),
      uniforms: params(a, a.S, 0, { dq, dk, dv }), storage: { q: a.q, k: a.k, v: a.v, segments: seg, o: a.o, stats: a.stats, dO: a.dO, dQKV: gradients.binding },
      workgroups: [Math.ceil(a.S / OWN), a.nH + a.nKV, a.B], label: `attention backward tiled ${label}`,
    });
    return;
  }
  rec.dispatch({
    ...attentionModule(a.headDim), entryPoint: 'attention_backward_prep', constants, uniforms: params(a),
    storage: { o: a.o, stats: a.stats, dO: a.dO },
    workgroups: launch1d(rec.gpu, rows * a.nH, WG), label: `attention backward prep ${label}`,
  });
  if (tiled) {
    rec.dispatch({
      ...attentionModule(a.headDim), entryPoint: 'attention_backward_dq_tiled', constants: tileConstants(rec, a.headDim, !!a.segments, false),
      uniforms: params(a), storage: { q: a.q, k: a.k, v: a.v, segments: seg, stats: a.stats, dO: a.dO, dQ: a.dQ },
      workgroups: [Math.ceil(a.S / OWN), a.nH, a.B], label: `attention backward dq tiled ${label}`,
    });
    rec.dispatch({
      ...attentionModule(a.headDim), entryPoint: 'attention_backward_dkv_tiled', constants: tileConstants(rec, a.headDim, !!a.segments, true),
      uniforms: params(a), storage: { q: a.q, k: a.k, v: a.v, segments: seg, stats: a.stats, dO: a.dO, dK: a.dK, dV: a.dV },
      workgroups: [Math.ceil(a.S / OWN), a.nKV, a.B], label: `attention backward dkv tiled ${label}`,
    });
    return;
  }
  rec.dispatch({
    ...attentionModule(a.headDim), entryPoint: 'attention_backward_dq', constants, uniforms: params(a),
    storage: { q: a.q, k: a.k, v: a.v, segments: seg, stats: a.stats, dO: a.dO, dQ: a.dQ },
    workgroups: launch1d(rec.gpu, rows * a.nH, WG), label: `attention backward dq ${label}`,
  });
  rec.dispatch({
    ...attentionModule(a.headDim), entryPoint: 'attention_backward_dkv', constants, uniforms: params(a),
    storage: { q: a.q, k: a.k, v: a.v, segments: seg, stats: a.stats, dO: a.dO, dK: a.dK, dV: a.dV },
    workgroups: launch1d(rec.gpu, rows * a.nKV, WG), label: `attention backward dkv ${label}`,
  });
}

/**
 * One binding over views of one buffer, and each view's start in it (elements), where the views lie in
 * one buffer within a binding's size; null otherwise.
 */
function oneBinding(rec: CommandRecorder, buffers: BufferLike[]): { binding: TensorView; at: number[] } | null {
  const views = buffers.map(asView);
  if (views.some((v) => v.buffer !== views[0].buffer || v.offset % 4)) return null;
  // Overlapping outputs stay apart, for WebGPU's own check of writable bindings to refuse them.
  const sorted = [...views].sort((x, y) => x.offset - y.offset);
  if (sorted.some((v, i) => i > 0 && v.offset < sorted[i - 1].offset + sorted[i - 1].size)) return null;
  const align = rec.gpu.limits.minStorageBufferOffsetAlignment;
  const start = Math.floor(Math.min(...views.map((v) => v.offset)) / align) * align;
  const end = Math.max(...views.map((v) => v.offset + v.size));
  if (end - start > rec.gpu.limits.maxStorageBufferBindingSize) return null;
  return { binding: { buffer: views[0].buffer, offset: start, size: end - start }, at: views.map((v) => (v.offset - start) / 4) };
}

/** Bytes of the probability matrix naive attention materializes. */
export function naiveAttentionScratchBytes(B: number, S: number, nH: number): number {
  return B * nH * S * S * 4;
}

/**
 * Naive attention through an explicit [B, nH, S, S] probability matrix (shaders/attention_naive.wgsl):
 * the baseline flash attention is benchmarked against. Forward only, no segments.
 */
export function naiveAttentionForward(rec: CommandRecorder, a: AttentionForwardArgs & { scores: BufferLike }): void {
  checkShape('naiveAttentionForward', a);
  if (a.segments || a.window || a.softcap) throw new ShapeError('naiveAttentionForward: segments, sliding windows and soft-capping are not supported');
  const rows = a.B * a.S;
  requireElements('naiveAttentionForward', 'scores', a.scores, naiveAttentionScratchBytes(a.B, a.S, a.nH) / 4);
  requireElements('naiveAttentionForward', 'o', a.o, rows * a.nH * a.headDim);
  const { B, S, nH, nKV, scale } = params(a);
  const uniforms = { B, S, nH, nKV, D: a.headDim, scale };
  const label = `naive attention ${a.B}x${a.S} h${a.nH}`;
  rec.dispatch({ shader: 'attention_naive', entryPoint: 'naive_scores', uniforms, storage: { q: a.q, k: a.k, P: a.scores }, workgroups: launch1d(rec.gpu, a.B * a.nH * a.S * a.S, 256), label });
  rec.dispatch({
    shader: 'attention_naive', entryPoint: 'naive_softmax', constants: { WG: rec.gpu.tuning.reductionWorkgroupSize }, uniforms,
    storage: { P: a.scores }, workgroups: launch1d(rec.gpu, a.B * a.nH * a.S, 1), label,
  });
  rec.dispatch({ shader: 'attention_naive', entryPoint: 'naive_output', uniforms, storage: { v: a.v, P: a.scores, o: a.o }, workgroups: launch1d(rec.gpu, rows * a.nH * a.headDim, 256), label });
}
