/** The reference backward passes against finite differences of the reference forward passes. */
import { describe, expect, it } from 'vitest';
import { prepareBatch } from '../../src/model/batch.js';
import { parseConfig } from '../../src/model/config.js';
import { paramSpecs } from '../../src/model/layout.js';
import { tinyConfig, type TinyModelOptions } from '../../src/model/tiny.js';
import { randn, rng } from '../../src/util/random.js';
import { modelLossAndGrads } from './model.js';
import { attentionBackwardRef, attentionForwardRef } from './attention.js';
import { crossEntropyRef } from './cross-entropy.js';
import { numericGradient, relError } from './gradcheck.js';
import {
  embeddingBackwardRef,
  embeddingForwardRef,
  erf,
  geluGradRef,
  geluRef,
  normBackwardRef,
  normForwardRef,
  ropeRef,
  swigluBackwardRef,
  swigluForwardRef,
} from './layers.js';

const f64 = (a: Float32Array) => Float64Array.from(a);

describe.each(['rmsnorm', 'layernorm'] as const)('%s reference backward', (kind) => {
  it('matches finite differences for x, weight and bias', () => {
    const rand = rng(7);
    const [rows, cols, eps] = [3, 7, 1e-5];
    const x = f64(randn(rows * cols, rand));
    const w = f64(randn(cols, rand));
    const b = f64(randn(cols, rand));
    const dy = randn(rows * cols, rand);
    const fwd = () => normForwardRef(kind, x, w, kind === 'layernorm' ? b : null, rows, cols, eps).y;
    const { dx, dw, db } = normBackwardRef(kind, x, w, dy, rows, cols, eps);
    expect(relError(dx, numericGradient(x, fwd, dy))).toBeLessThan(1e-6);
    expect(relError(dw, numericGradient(w, fwd, dy))).toBeLessThan(1e-6);
    if (kind === 'layernorm') expect(relError(db, numericGradient(b, fwd, dy))).toBeLessThan(1e-6);
  });
});

describe('rope, activations and embeddings: reference backward', () => {
  it('rope backward is the gradient of rope forward', () => {
    const rand = rng(8);
    const [T, heads, D, stride, off] = [3, 2, 6, 15, 2];
    const x = f64(randn(T * stride, rand));
    const pos = [0, 5, 2];
    const dy = randn(T * stride, rand);
    const dx = ropeRef(dy, pos, T, heads, D, 10000, stride, off, true);
    const num = numericGradient(x, () => ropeRef(x, pos, T, heads, D, 10000, stride, off), dy);
    expect(relError(dx, num)).toBeLessThan(1e-6);
  });

  it.each(['silu', 'gelu_new', 'gelu'] as const)('gated MLP activation backward matches finite differences, gate %s', (act) => {
    const rand = rng(9);
    const gate = f64(randn(11, rand, 2));
    const up = f64(randn(11, rand));
    const dh = randn(11, rand);
    const { dGate, dUp } = swigluBackwardRef(gate, up, dh, act);
    expect(relError(dGate, numericGradient(gate, () => swigluForwardRef(gate, up, act), dh))).toBeLessThan(1e-6);
    expect(relError(dUp, numericGradient(up, () => swigluForwardRef(gate, up, act), dh))).toBeLessThan(1e-6);
  });

  it.each(['gelu_new', 'gelu'] as const)('%s derivative matches finite differences; erf is accurate', (kind) => {
    const x = f64(randn(25, rng(10), 2.5));
    const dy = new Float64Array(25).fill(1);
    const num = numericGradient(x, () => x.map((v) => geluRef(v, kind)), dy);
    expect(relError(Float64Array.from(x, (v) => geluGradRef(v, kind)), num)).toBeLessThan(1e-6);
    // erf(0.5), erf(1), erf(2), erf(3.5) to 15 digits
    expect(Math.abs(erf(0.5) - 0.520499877813047)).toBeLessThan(1e-14);
    expect(Math.abs(erf(-1) + 0.842700792949715)).toBeLessThan(1e-14);
    expect(Math.abs(erf(2) - 0.995322265018953)).toBeLessThan(1e-14);
    expect(Math.abs(erf(3.5) - 0.999999256901628)).toBeLessThan(1e-14);
  });

  it('embedding backward matches finite differences, with repeated ids', () => {
    const rand = rng(11);
    const [T, C, rows] = [6, 3, 4];
    const ids = [1, 3, 1, 0, 1, 3];
    const table = f64(randn(rows * C, rand));
    const dy = randn(T * C, rand);
    const num = numericGradient(table, () => embeddingForwardRef(ids, table, T, C), dy);
    expect(relError(embeddingBackwardRef(ids, dy, T, C, rows), num)).toBeLessThan(1e-6);
  });
});

describe('attention reference backward', () => {
  it.each([
    [false, null],
    [true, null],
    [false, 2],
    [true, 3],
    [false, null, 0.8],
    [true, 2, 1.5],
  ])('matches finite differences for q, k, v (GQA, segments %s, window %s, soft cap %s)', (useSegments, window, softcap: number | null = null) => {
    const rand = rng(12);
    const shape = { B: 2, S: 5, nH: 4, nKV: 2, D: 3, window, softcap, scale: softcap ? 0.7 : undefined, segments: useSegments ? [0, 0, 1, 1, 1, 0, 0, 0, 2, 2] : undefined };
    const n = shape.B * shape.S;
    const q = f64(randn(n * shape.nH * shape.D, rand));
    const k = f64(randn(n * shape.nKV * shape.D, rand));
    const v = f64(randn(n * shape.nKV * shape.D, rand));
    const dO = randn(n * shape.nH * shape.D, rand);
    const fwd = () => attentionForwardRef(shape, q, k, v);
    const { dq, dk, dv } = attentionBackwardRef(shape, q, k, v, dO);
    expect(relError(dq, numericGradient(q, fwd, dO))).toBeLessThan(1e-6);
    expect(relError(dk, numericGradient(k, fwd, dO))).toBeLessThan(1e-6);
    expect(relError(dv, numericGradient(v, fwd, dO))).toBeLessThan(1e-6);
  });
});

describe('cross-entropy reference backward', () => {
  it.each([null, 1.5])('matches finite differences of the summed, scaled loss (logit soft cap %s)', (softcap) => {
    const rand = rng(13);
    const [T, H, V, scale] = [4, 3, 7, 0.25];
    const hidden = f64(randn(T * H, rand));
    const weight = f64(randn(V * H, rand));
    const targets = [2, -100, 6, 0];
    const ones = new Float64Array(T).fill(scale);
    const loss = () => crossEntropyRef(hidden, weight, targets, T, H, V, scale, softcap).losses;
    const { dHidden, dWeight } = crossEntropyRef(hidden, weight, targets, T, H, V, scale, softcap);
    expect(relError(dHidden, numericGradient(hidden, loss, ones))).toBeLessThan(1e-6);
    expect(relError(dWeight, numericGradient(weight, loss, ones))).toBeLessThan(1e-6);
  });
});

/**
 * The whole-model reference, composed of the pieces above, against finite differences of its own loss:
 * a few entries of every parameter, per family, so each family's wiring (Gemma's norms around the
 * sublayers, soft caps and scaled embeddings, Qwen3's q/k norms, two RoPEs) is checked, not only its parts.
 */
describe('whole-model reference backward', () => {
  const shape = { hiddenSize: 8, intermediateSize: 12, numLayers: 2, numHeads: 2, numKvHeads: 1, maxPositions: 16 };
  it.each<[string, TinyModelOptions]>([
    ['llama (llama3 RoPE scaling)', { ...shape, architecture: 'llama', ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 4 } }],
    ['qwen3', { ...shape, architecture: 'qwen3', headDim: 6 }],
    ['gemma2', { ...shape, architecture: 'gemma2', headDim: 6, queryPreAttnScalar: 5, attnSoftcap: 0.9, finalSoftcap: 1.3, slidingWindow: 2 }],
    ['gemma3', { ...shape, architecture: 'gemma3', headDim: 6, slidingWindow: 2, slidingWindowPattern: 2, ropeLocalTheta: 50, finalSoftcap: 1.3 }],
    ['phi3 (half of each head rotating, LongRoPE past its context)', { ...shape, architecture: 'phi3', partialRotaryFactor: 0.5, originalMaxPositions: 4, ropeScaling: { type: 'longrope', short_factor: [1.5], long_factor: [3] } }],
    ['gpt2', { ...shape, architecture: 'gpt2' }],
  ])('%s: sampled parameter entries match finite differences of the loss', (_name, options) => {
    const c = parseConfig(tinyConfig(options));
    const rand = rng(14);
    const params = new Map(paramSpecs(c).map((s) => [s.name, f64(randn(s.shape.reduce((a, b) => a * b, 1), rand, 0.5))]));
    const [B, S] = [1, 6];
    const ids = Uint32Array.from({ length: B * S }, () => Math.floor(rand() * c.vocabSize));
    const batch = prepareBatch({ ids: Array.from(ids), B, S }, c.vocabSize, c.maxPositions);
    const { grads } = modelLossAndGrads(c, params, batch);
    const h = 1e-6;
    for (const [name, p] of params) {
      const g = grads.get(name)!;
      for (let k = 0; k < 3; k++) {
        const i = Math.floor(rand() * p.length);
        const keep = p[i];
        p[i] = keep + h;
        const up = modelLossAndGrads(c, params, batch).loss;
        p[i] = keep - h;
        const down = modelLossAndGrads(c, params, batch).loss;
        p[i] = keep;
        const num = (up - down) / (2 * h);
        expect(Math.abs(g[i] - num), `${name}[${i}]: ${g[i]} vs ${num}`).toBeLessThan(1e-6 + 1e-5 * Math.abs(num));
      }
    }
  });
});
