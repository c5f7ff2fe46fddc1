/**
 * Mask selection: the calibration sums against float64 sums of the same layer inputs and output
 * gradients (captured in the same passes), Sylva's K-FAC saliency against the formula computed in
 * float64 with explicit inverses, the damped inverse diagonal (dense and block-diagonal), and each
 * selection's mask.
 */
import { describe, expect, it } from 'vitest';
import { successorRows, toBatchInput } from '../../src/data/tasks.js';
import type { TensorView } from '../../src/gpu/buffers.js';
import type { CommandRecorder } from '../../src/gpu/recorder.js';
import { memorySource } from '../../src/io/sources.js';
import type { Activations } from '../../src/model/activations.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tinyModelFiles } from '../../src/model/tiny.js';
import type { LinearHooks } from '../../src/methods/method.js';
import { calibrate, inverseDiagonal, selectMask, SELECTIONS, sylvaScores, type SelectProgress, type Selection } from '../../src/methods/sparse/index.js';
import { compare, freshSeed, rng, testGpu } from '../helpers.js';

const OPTIONS = { architecture: 'llama', hiddenSize: 32, intermediateSize: 48, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositions: 64 } as const;
const LAYER = 'layers.1.k'; // 16 x 32: small enough for explicit float64 inverses

async function load(seed: number): Promise<CausalLM> {
  return CausalLM.fromCheckpoint(await testGpu(), await openCheckpoint(memorySource(tinyModelFiles({ ...OPTIONS, seed, initStd: 0.2 }))));
}

/** Copies one layer's input x [T, in] and output gradient dy [T, out] of every calibration pass. */
class Capture implements LinearHooks {
  readonly fused = false;
  readonly passes: { x: GPUBuffer; dy: GPUBuffer; T: number }[] = [];
  constructor(private readonly model: CausalLM) {}
  has(): boolean {
    return true;
  }
  weightGradient(rec: CommandRecorder, acts: Activations, name: string, x: TensorView, dy: TensorView, outDim: number, inDim: number): boolean {
    if (name !== LAYER) return false;
    const gpu = this.model.gpu;
    const copy = { x: gpu.createBuffer(acts.T * inDim * 4), dy: gpu.createBuffer(acts.T * outDim * 4), T: acts.T };
    rec.copy(x, copy.x, acts.T * inDim * 4);
    rec.copy(dy, copy.dy, acts.T * outDim * 4);
    this.passes.push(copy);
    return false;
  }
}

/** (M + λ·mean(diag M)·I)⁻¹ by Gauss-Jordan elimination, float64. */
function dampedInverse(m: Float64Array, n: number, damping: number): Float64Array {
  let trace = 0;
  for (let i = 0; i < n; i++) trace += m[i * n + i];
  const a = Float64Array.from(m);
  for (let i = 0; i < n; i++) a[i * n + i] += (damping * trace) / n;
  const inv = new Float64Array(n * n);
  for (let i = 0; i < n; i++) inv[i * n + i] = 1;
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(a[r * n + c]) > Math.abs(a[p * n + c])) p = r;
    for (const x of [a, inv]) for (let k = 0; k < n; k++) [x[c * n + k], x[p * n + k]] = [x[p * n + k], x[c * n + k]];
    const d = a[c * n + c];
    for (let k = 0; k < n; k++) {
      a[c * n + k] /= d;
      inv[c * n + k] /= d;
    }
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = a[r * n + c];
      for (let k = 0; k < n; k++) {
        a[r * n + k] -= f * a[c * n + k];
        inv[r * n + k] -= f * inv[c * n + k];
      }
    }
  }
  return inv;
}

describe('calibration statistics and the K-FAC saliency', () => {
  it('match float64 sums of the captured inputs and output gradients, and the saliency formula', async () => {
    const seed = freshSeed();
    const model = await load(seed);
    const gpu = model.gpu;
    const capture = new Capture(model);
    const batches = [1, 2, 3].map((b) => toBatchInput(successorRows(2, 7 + b, seed + b)));
    const modules = new Map([[LAYER, { out: 16, in: 32 }]]);
    try {
      for (const selection of ['sylva', 'fisher'] as const) {
        capture.passes.length = 0;
        const { stats, totals } = await calibrate(model, modules, batches, selection, capture);
        const s = stats.get(LAYER)!;
        const [out, inDim] = [16, 32];
        const gsum = new Float64Array(out * inDim);
        const Fsum = new Float64Array(out * inDim);
        const A = new Float64Array(inDim * inDim);
        const G = new Float64Array(out * out);
        let tokens = 0;
        for (const [b, p] of capture.passes.entries()) {
          const x = await gpu.readF32(p.x);
          const dy = await gpu.readF32(p.dy);
          const targets = model.prepare(batches[b]).targetCount;
          const dW = new Float64Array(out * inDim);
          for (let t = 0; t < p.T; t++) {
            for (let o = 0; o < out; o++) for (let i = 0; i < inDim; i++) dW[o * inDim + i] += dy[t * out + o] * x[t * inDim + i];
            for (let i = 0; i < inDim; i++) for (let j = 0; j < inDim; j++) A[i * inDim + j] += x[t * inDim + i] * x[t * inDim + j];
            for (let o = 0; o < out; o++) for (let q = 0; q < out; q++) G[o * out + q] += dy[t * out + o] * dy[t * out + q];
          }
          dW.forEach((v, j) => {
            gsum[j] += v;
            Fsum[j] += (v / targets) ** 2;
          });
          tokens += p.T;
        }
        expect(totals).toEqual({ tokens, batches: 3 });
        expect(compare(s.gsum, gsum).rel, `seed ${seed} gsum`).toBeLessThan(1e-4);
        if (selection === 'fisher') {
          expect(compare(s.Fsum!, Fsum).rel, `seed ${seed} fisher`).toBeLessThan(1e-4);
          continue;
        }
        expect(compare(s.Asum!, A).rel, `seed ${seed} A`).toBeLessThan(1e-4);
        expect(compare(s.Gsum!, G).rel, `seed ${seed} G`).toBeLessThan(1e-4);
        // The saliency straight from the formula: ḡ = gsum / N, A / N, G / N, explicit damped inverses.
        const N = tokens;
        const g = gsum.map((v) => v / N);
        const aInv = dampedInverse(A.map((v) => v / N), inDim, 0.05);
        const gInv = dampedInverse(G.map((v) => v / N), out, 0.05);
        const want = new Float64Array(out * inDim);
        const impIn = Array.from({ length: inDim }, (_, i) => {
          let q = 0;
          for (let o = 0; o < out; o++) for (let p = 0; p < out; p++) q += g[o * inDim + i] * (G[o * out + p] / N) * g[p * inDim + i];
          return q / aInv[i * inDim + i];
        });
        const impOut = Array.from({ length: out }, (_, o) => {
          let q = 0;
          for (let i = 0; i < inDim; i++) for (let j = 0; j < inDim; j++) q += g[o * inDim + i] * (A[i * inDim + j] / N) * g[o * inDim + j];
          return q / gInv[o * out + o];
        });
        for (let o = 0; o < out; o++) for (let i = 0; i < inDim; i++) want[o * inDim + i] = impOut[o] * impIn[i];
        const err = compare(sylvaScores(s, N, 0.05), want);
        expect(err.rel, `seed ${seed} saliency (max abs ${err.maxAbs})`).toBeLessThan(1e-3);
      }
    } finally {
      for (const p of capture.passes) [p.x, p.dy].forEach((b) => gpu.destroyBuffer(b));
      model.destroy();
    }
  });

  it.each([
    [12, 12, 12],
    [40, 16, 16],
    [37, 10, 8],
  ])('the damped inverse diagonal: n=%i (dense up to %i rows, else blocks of %i)', (n, limit, block) => {
    const seed = freshSeed();
    const rand = rng(seed);
    // A positive semi-definite matrix of rank below n (a few samples), as a calibration factor can be.
    const k = Math.floor(n / 2);
    const v = Float64Array.from({ length: k * n }, () => rand() * 2 - 1);
    const m = new Float64Array(n * n);
    for (let s = 0; s < k; s++) for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) m[i * n + j] += v[s * n + i] * v[s * n + j];
    const got = inverseDiagonal(m, n, 0.01, limit, block);
    const want = new Float64Array(n);
    // Reference: the inverse of each diagonal block, damped by the whole matrix's mean diagonal.
    let trace = 0;
    for (let i = 0; i < n; i++) trace += m[i * n + i];
    const step = n <= limit ? n : block;
    for (let start = 0; start < n; start += step) {
      const size = Math.min(step, n - start);
      const sub = new Float64Array(size * size);
      for (let r = 0; r < size; r++) for (let c = 0; c < size; c++) sub[r * size + c] = m[(start + r) * n + start + c];
      for (let r = 0; r < size; r++) sub[r * size + r] += (0.01 * trace) / n;
      const inv = dampedInverse(sub, size, 0);
      for (let i = 0; i < size; i++) want[start + i] = inv[i * size + i];
    }
    expect(compare(got, want).rel, `seed ${seed}`).toBeLessThan(1e-9);
  });
});

describe('selectMask', () => {
  it.each(SELECTIONS)('%s: the density asked for, the base fingerprinted, the cost reported', async (selection: Selection) => {
    const model = await load(9);
    try {
      const batches = [toBatchInput(successorRows(2, 8, 1)), toBatchInput(successorRows(2, 8, 2))];
      const { mask, cost } = await selectMask(model, batches, { selection, density: 0.05, seed: 1 });
      expect(mask.info.selection).toBe(selection);
      expect(mask.entries.size).toBe(14); // every linear layer of two Llama blocks
      for (const [m, e] of mask.entries) {
        const want = selection === 'columns' ? Math.round(0.05 * e.cols) * e.rows : Math.max(1, Math.round(0.05 * e.rows * e.cols));
        expect(e.indices.length, m).toBe(want);
      }
      const dataFree = selection === 'random' || selection === 'columns';
      expect(mask.info.calibrationTokens).toBe(dataFree ? 0 : batches.reduce((n, b) => n + model.prepare(b).ids.length, 0));
      expect(mask.info.fingerprint?.weights).toBe(dataFree ? '' : model.fingerprint.weights);
      expect(cost.layers).toBe(14);
      expect(cost.seconds).toBeGreaterThanOrEqual(0);
      expect(cost.peakGpuBytes).toBeGreaterThan(0);
      expect(model.transformer.hooks).toBeNull(); // the borrowed hooks are given back
    } finally {
      model.destroy();
    }
  });

  it('data-driven selections choose differently from random, and a global budget moves density between layers', async () => {
    const model = await load(10);
    try {
      const batches = [toBatchInput(successorRows(4, 8, 3))];
      const progress: SelectProgress[] = [];
      const sylva = (await selectMask(model, batches, { selection: 'sylva', density: 0.05, onProgress: (p) => progress.push(p) })).mask;
      // A calibration batch, then every layer scored, each reported as it finishes.
      const layers = sylva.entries.size;
      expect(progress).toEqual([
        { phase: 'calibrating', done: 1, total: 1 },
        ...[...sylva.entries.keys()].map((layer, i) => ({ phase: 'scoring', done: i + 1, total: layers, layer })),
      ]);
      const random = (await selectMask(model, batches, { selection: 'random', density: 0.05 })).mask;
      const overlap = (a: Uint32Array, b: Uint32Array) => a.filter((v) => b.includes(v)).length / a.length;
      expect(overlap(sylva.entries.get('layers.0.q')!.indices, random.entries.get('layers.0.q')!.indices)).toBeLessThan(0.5);
      const global = (await selectMask(model, batches, { selection: 'fisher', density: 0.05, budget: 'global' })).mask;
      expect(global.density).toBeCloseTo(0.05, 2);
      const densities = [...global.entries.keys()].map((m) => global.nnz(m) / (global.entries.get(m)!.rows * global.entries.get(m)!.cols));
      expect(Math.max(...densities) / Math.min(...densities)).toBeGreaterThan(2);
    } finally {
      model.destroy();
    }
  });
});
