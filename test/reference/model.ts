/**
 * float64 reference of the whole model (engine layout, see src/model/layout.ts): forward to the mean
 * loss over target tokens and backward to every parameter's gradient, composed from the layer references.
 */
import { layerRope, type ModelConfig } from '../../src/model/config.js';
import type { PreparedBatch } from '../../src/model/batch.js';
import { dropoutKeep } from '../../src/util/random.js';
import { attentionBackwardRef, attentionForwardRef } from './attention.js';
import { crossEntropyRef } from './cross-entropy.js';
import {
  embeddingBackwardRef,
  embeddingForwardRef,
  geluGradRef,
  geluRef,
  normBackwardRef,
  normForwardRef,
  ropeInvFreqRef,
  ropeRef,
  swigluBackwardRef,
  swigluForwardRef,
} from './layers.js';

type P = Map<string, Float64Array>;

// y (T, out) = x (T, in) W^T + b
function linear(x: Float64Array, w: Float64Array, b: Float64Array | undefined, T: number, out: number, inp: number): Float64Array {
  const y = new Float64Array(T * out);
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < out; o++) {
      let s = b ? b[o] : 0;
      for (let i = 0; i < inp; i++) s += x[t * inp + i] * w[o * inp + i];
      y[t * out + o] = s;
    }
  }
  return y;
}

function linearBack(x: Float64Array, w: Float64Array, dy: Float64Array, T: number, out: number, inp: number) {
  const dx = new Float64Array(T * inp);
  const dw = new Float64Array(out * inp);
  const db = new Float64Array(out);
  for (let t = 0; t < T; t++) {
    for (let o = 0; o < out; o++) {
      const g = dy[t * out + o];
      db[o] += g;
      for (let i = 0; i < inp; i++) {
        dx[t * inp + i] += g * w[o * inp + i];
        dw[o * inp + i] += g * x[t * inp + i];
      }
    }
  }
  return { dx, dw, db };
}

const add = (a: Float64Array, b: ArrayLike<number>) => a.map((v, i) => v + b[i]);

/** LoRA on some linear layers: y += scale * (x A^T) B^T with A [r, in], B [out, r], by module name. */
export interface LoraRef {
  scale: number;
  rank: number;
  /**
   * A module's own rank and scale, where it has them, override the defaults. With `magnitude`, DoRA as
   * PEFT computes it (tuners/lora/dora.py): y = m / n ⊙ (x W^T + s x A^T B^T) + b, n = ‖W + s B A‖ per
   * output row, held constant in the backward pass.
   */
  modules: Map<string, { A: Float64Array; B: Float64Array; rank?: number; scale?: number; magnitude?: Float64Array }>;
  /** Dropout on the adapter input with the kernel's mask (dropoutKeep) and each module's seed. */
  dropout?: { p: number; seed: (module: string) => number };
}

/** The adapter's input: x, or dropout(x) with the same mask the GPU draws. */
function loraInput(lora: LoraRef, module: string, x: Float64Array): Float64Array {
  const d = lora.dropout;
  if (!d || d.p === 0) return x;
  const seed = d.seed(module);
  return x.map((v, i) => (dropoutKeep(i, seed, d.p) ? v / (1 - d.p) : 0));
}

/** DoRA's m / n per output row of W [out, inp], n = ‖W + s B A‖, or null for plain LoRA. */
function doraScale(W: Float64Array, ad: { A: Float64Array; B: Float64Array; magnitude?: Float64Array }, r: number, s: number, out: number, inp: number): Float64Array | null {
  if (!ad.magnitude) return null;
  const scale = new Float64Array(out);
  for (let j = 0; j < out; j++) {
    let n2 = 0;
    for (let i = 0; i < inp; i++) {
      let ba = 0;
      for (let k = 0; k < r; k++) ba += ad.B[j * r + k] * ad.A[k * inp + i];
      const v = W[j * inp + i] + s * ba;
      n2 += v * v;
    }
    scale[j] = ad.magnitude[j] / Math.sqrt(n2);
  }
  return scale;
}

/** The shapes both passes use. */
function dims(c: ModelConfig, batch: Pick<PreparedBatch, 'B' | 'S' | 'segments' | 'positions'>) {
  const { B, S } = batch;
  const D = c.headDim;
  // Each layer's RoPE frequencies (Gemma 3's differ between sliding and full layers) over its rotated
  // dims, and the scale on cos and sin: LongRoPE's long factors when a position reaches past its context.
  const seqLen = Math.max(...batch.positions) + 1;
  const ropes = Array.from({ length: c.numLayers }, (_, i) => {
    const r = layerRope(c, i);
    if (!r) return null;
    const long = r.scaling?.type === 'longrope' && seqLen > r.scaling.originalMaxPositions;
    return { inv: ropeInvFreqRef(c.rotaryDim, r.theta, r.scaling, long ? 'long' : 'short'), scale: r.scaling?.type === 'longrope' ? r.scaling.attentionFactor : 1 };
  });
  // Rotates the queries or keys [T, heads * D] of layer i (backward: by the inverse rotation).
  const rotate = (i: number, x: Float64Array, heads: number, backward = false): Float64Array<ArrayBuffer> => {
    const r = ropes[i];
    return r ? ropeRef(x, batch.positions, B * S, heads, c.rotaryDim, r.inv, heads * D, 0, backward, D, r.scale) : Float64Array.from(x);
  };
  return {
    T: B * S, H: c.hiddenSize, D, rotate, qd: c.numHeads * D, kvd: c.numKvHeads * D, I: c.intermediateSize, gpt2: c.family === 'gpt2',
    attnShape: { B, S, nH: c.numHeads, nKV: c.numKvHeads, D, segments: batch.segments ?? undefined, scale: c.attentionScale, softcap: c.attentionSoftcap },
    // A norm's scale: its weight, or Gemma's 1 + weight.
    normScale: (w: Float64Array) => (c.normWeightOffset ? w.map((v) => v + c.normWeightOffset) : w),
  };
}

/**
 * Rounds the linear layers' norm and activation inputs as mixed precision stores them, by site
 * ('layers.<i>.ln1', '.ln2', '.h'); the backward pass treats the rounding as the identity (the
 * straight-through rule of autocast).
 */
export type InputRounding = (v: Float64Array, site: string) => Float64Array;

/** Forward to the final norm: the last residual stream x, its norm lnf, and each layer's saved tensors. */
export function forwardRef(c: ModelConfig, params: P, batch: Pick<PreparedBatch, 'B' | 'S' | 'ids' | 'positions' | 'segments'>, lora?: LoraRef, round: InputRounding = (v) => v) {
  const { T, H, D, rotate, qd, kvd, I, gpt2, attnShape, normScale } = dims(c, batch);
  const p = (n: string) => params.get(n)!;
  const norm = (n: string, x: Float64Array) => normForwardRef(c.norm, x, normScale(p(`${n}.weight`)), gpt2 ? p(`${n}.bias`) : null, T, H, c.normEps).y;
  const lin = (n: string, x: Float64Array, out: number, inp: number) => {
    const y = linear(x, p(`${n}.weight`), params.get(`${n}.bias`), T, out, inp);
    const ad = lora?.modules.get(n);
    if (!ad) return y;
    const [r, s] = [ad.rank ?? lora!.rank, ad.scale ?? lora!.scale];
    const u = linear(loraInput(lora!, n, x), ad.A, undefined, T, r, inp);
    const delta = linear(u, ad.B, undefined, T, out, r);
    const z = y.map((v, i) => v + s * delta[i]);
    const dora = doraScale(p(`${n}.weight`), ad, r, s, out, inp);
    if (!dora) return z;
    const b = params.get(`${n}.bias`);
    return z.map((v, i) => dora[i % out] * (v - (b ? b[i % out] : 0)) + (b ? b[i % out] : 0));
  };

  // Forward, keeping what backward needs.
  let x = embeddingForwardRef(batch.ids, p('embed'), T, H).map((v) => v * c.embedScale);
  if (gpt2) x = add(x, embeddingForwardRef(batch.positions, p('pos_embed'), T, H));
  const saved: Record<string, Float64Array>[] = [];
  for (let i = 0; i < c.numLayers; i++) {
    const L = `layers.${i}`;
    const s: Record<string, Float64Array> = { x };
    s.ln1 = round(norm(`${L}.norm1`, x), `${L}.ln1`);
    let q = lin(`${L}.q`, s.ln1, qd, H);
    let k = lin(`${L}.k`, s.ln1, kvd, H);
    const v = lin(`${L}.v`, s.ln1, kvd, H);
    if (c.qkNorm) {
      // Qwen3: RMSNorm over each head's values, before RoPE.
      Object.assign(s, { qp: q, kp: k });
      q = normForwardRef('rmsnorm', q, normScale(p(`${L}.q_norm.weight`)), null, T * c.numHeads, D, c.normEps).y;
      k = normForwardRef('rmsnorm', k, normScale(p(`${L}.k_norm.weight`)), null, T * c.numKvHeads, D, c.normEps).y;
    }
    q = rotate(i, q, c.numHeads);
    k = rotate(i, k, c.numKvHeads);
    Object.assign(s, { q, k, v });
    s.att = attentionForwardRef({ ...attnShape, window: c.layerWindows[i] }, q, k, v);
    // Gemma: a norm on the attention's and the MLP's outputs before each residual add.
    if (c.postNorms) s.ao = lin(`${L}.o`, s.att, H, qd);
    s.xm = add(x, c.postNorms ? norm(`${L}.post_attn_norm`, s.ao) : lin(`${L}.o`, s.att, H, qd));
    s.ln2 = round(norm(`${L}.norm2`, s.xm), `${L}.ln2`);
    if (gpt2) {
      s.a = lin(`${L}.fc`, s.ln2, I, H);
      s.h = round(s.a.map((v) => geluRef(v, c.activation === 'gelu' ? 'gelu' : 'gelu_new')), `${L}.h`);
    } else {
      s.a = lin(`${L}.gate`, s.ln2, I, H);
      s.b = lin(`${L}.up`, s.ln2, I, H);
      s.h = round(swigluForwardRef(s.a, s.b, c.activation), `${L}.h`);
    }
    const down = gpt2 ? 'proj' : 'down';
    s.mo = lin(`${L}.${down}`, s.h, H, I);
    x = add(s.xm, c.postNorms ? norm(`${L}.post_mlp_norm`, s.mo) : s.mo);
    saved.push(s);
  }
  const lnf = norm('norm_f', x);
  return { x, lnf, saved };
}

export function modelLossAndGrads(c: ModelConfig, params: P, batch: PreparedBatch, lora?: LoraRef, round?: InputRounding): { loss: number; grads: P } {
  const { T, H, D, rotate, qd, kvd, I, gpt2, attnShape, normScale } = dims(c, batch);
  const p = (n: string) => params.get(n)!;

  const { x, lnf, saved } = forwardRef(c, params, batch, lora, round);
  const head = c.tieWordEmbeddings ? 'embed' : 'lm_head';
  const count = Math.max(batch.targetCount, 1);
  const ce = crossEntropyRef(lnf, p(head), batch.targets, T, H, c.vocabSize, 1 / count, c.finalLogitSoftcap);
  const loss = ce.losses.reduce((a, b) => a + b, 0) / count;

  // Backward.
  const grads: P = new Map([...params].map(([n, v]) => [n, new Float64Array(v.length)]));
  const acc = (n: string, g: ArrayLike<number>) => {
    const t = grads.get(n)!;
    for (let i = 0; i < t.length; i++) t[i] += g[i];
  };
  const normBack = (n: string, xin: Float64Array, dy: Float64Array) => {
    const r = normBackwardRef(c.norm, xin, normScale(p(`${n}.weight`)), dy, T, H, c.normEps);
    acc(`${n}.weight`, r.dw);
    if (gpt2) acc(`${n}.bias`, r.db);
    return r.dx;
  };
  for (const [n, ad] of lora?.modules ?? []) {
    grads.set(`${n}.lora_A`, new Float64Array(ad.A.length));
    grads.set(`${n}.lora_B`, new Float64Array(ad.B.length));
    if (ad.magnitude) grads.set(`${n}.lora_magnitude`, new Float64Array(ad.magnitude.length));
  }
  const linBack = (n: string, xin: Float64Array, dyOut: Float64Array, out: number, inp: number) => {
    const ad = lora?.modules.get(n);
    const [rank, s] = ad ? [ad.rank ?? lora!.rank, ad.scale ?? lora!.scale] : [0, 0];
    // DoRA: below the scale the gradient is dy ⊙ m / n; dm = Σ dy ⊙ z / n, z the unscaled output.
    const dora = ad ? doraScale(p(`${n}.weight`), ad, rank, s, out, inp) : null;
    const dy = dora ? dyOut.map((g, i) => g * dora[i % out]) : dyOut;
    const r = linearBack(xin, p(`${n}.weight`), dy, T, out, inp);
    acc(`${n}.weight`, r.dw);
    if (params.has(`${n}.bias`)) acc(`${n}.bias`, dora ? linearBack(xin, p(`${n}.weight`), dyOut, T, out, inp).db : r.db);
    if (!ad) return r.dx;
    // y += s u B^T with u = x' A^T, x' = dropout(x): d x = mask * d x'
    const xd = loraInput(lora!, n, xin);
    const u = linear(xd, ad.A, undefined, T, rank, inp);
    if (dora) {
      const delta = linear(u, ad.B, undefined, T, out, rank);
      const z = linear(xin, p(`${n}.weight`), undefined, T, out, inp).map((v, i) => v + s * delta[i]);
      const m = ad.magnitude!;
      acc(`${n}.lora_magnitude`, Float64Array.from({ length: out }, (_, j) => {
        let sum = 0;
        for (let t = 0; t < T; t++) sum += dyOut[t * out + j] * z[t * out + j];
        return (sum * dora[j]) / m[j];
      }));
    }
    const sdy = dy.map((g) => g * s);
    const rb = linearBack(u, ad.B, sdy, T, out, rank);
    acc(`${n}.lora_B`, rb.dw);
    const ra = linearBack(xd, ad.A, rb.dx, T, rank, inp);
    acc(`${n}.lora_A`, ra.dw);
    const drop = lora!.dropout?.p ?? 0;
    const seed = drop ? lora!.dropout!.seed(n) : 0;
    return add(r.dx, drop ? ra.dx.map((g, i) => (dropoutKeep(i, seed, drop) ? g / (1 - drop) : 0)) : ra.dx);
  };
  acc(head, ce.dWeight);
  let dx = normBack('norm_f', x, ce.dHidden);
  for (let i = c.numLayers - 1; i >= 0; i--) {
    const L = `layers.${i}`;
    const s = saved[i];
    const down = gpt2 ? 'proj' : 'down';
    const dh = linBack(`${L}.${down}`, s.h, c.postNorms ? normBack(`${L}.post_mlp_norm`, s.mo, dx) : dx, H, I);
    let dln2: Float64Array;
    if (gpt2) {
      const da = dh.map((g, j) => g * geluGradRef(s.a[j], c.activation === 'gelu' ? 'gelu' : 'gelu_new'));
      dln2 = linBack(`${L}.fc`, s.ln2, da, I, H);
    } else {
      const { dGate, dUp } = swigluBackwardRef(s.a, s.b, dh, c.activation);
      dln2 = add(linBack(`${L}.gate`, s.ln2, dGate, I, H), linBack(`${L}.up`, s.ln2, dUp, I, H));
    }
    dx = add(dx, normBack(`${L}.norm2`, s.xm, dln2));
    const datt = linBack(`${L}.o`, s.att, c.postNorms ? normBack(`${L}.post_attn_norm`, s.ao, dx) : dx, H, qd);
    let { dq, dk, dv } = attentionBackwardRef({ ...attnShape, window: c.layerWindows[i] }, s.q, s.k, s.v, datt);
    dq = rotate(i, dq, c.numHeads, true);
    dk = rotate(i, dk, c.numKvHeads, true);
    if (c.qkNorm) {
      const headNormBack = (n: string, xin: Float64Array, dy: Float64Array, heads: number) => {
        const r = normBackwardRef('rmsnorm', xin, normScale(p(`${n}.weight`)), dy, T * heads, D, c.normEps);
        acc(`${n}.weight`, r.dw);
        return r.dx;
      };
      dq = headNormBack(`${L}.q_norm`, s.qp, dq, c.numHeads);
      dk = headNormBack(`${L}.k_norm`, s.kp, dk, c.numKvHeads);
    }
    const dln1 = add(add(linBack(`${L}.q`, s.ln1, dq, qd, H), linBack(`${L}.k`, s.ln1, dk, kvd, H)), linBack(`${L}.v`, s.ln1, dv, kvd, H));
    dx = add(dx, normBack(`${L}.norm1`, s.x, dln1));
  }
  acc('embed', embeddingBackwardRef(batch.ids, dx, T, H, c.vocabSize).map((v) => v * c.embedScale));
  if (gpt2) acc('pos_embed', embeddingBackwardRef(batch.positions, dx, T, H, c.maxPositions));
  return { loss, grads };
}
