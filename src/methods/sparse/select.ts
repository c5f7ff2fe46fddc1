/**
 * Mask selection from data, a step of its own (saved with SparseMask.toSafetensors and reused across
 * jobs). Calibration batches run forward and backward through the frozen base with a hook in every
 * targeted linear y = x W^T that accumulates, on the GPU, per layer:
 *
 *   gsum = Σ_b dW_b                      dW_b = Σ_t dy_t x_tᵀ, the batch's summed weight gradient
 *   Asum = Σ_t x_t x_tᵀ        [in, in]  (input-side Kronecker factor)
 *   Gsum = Σ_t dy_t dy_tᵀ      [out, out] (output-gradient-side factor)
 *   Fsum = Σ_b (dW_b / n_b)²             (squared per-batch mean gradient, elementwise)
 *
 * over N token positions and nb batches (n_b target tokens in batch b), where dy_t is the gradient of
 * token t's own loss (the summed loss, not the mean, so a token's gradient does not shrink with the
 * batch). Then, with ḡ = gsum / N, A = Asum / N, G = Gsum / N:
 *
 *   sylva   importance[o, i] = imp_out[o] · imp_in[i]  (K-FAC / OBS saliency, as CentML's Sylva)
 *             imp_in[i]  = ḡ_iᵀ G ḡ_i / (Ã⁻¹)_ii    ḡ_i: column i of ḡ (length out)
 *             imp_out[o] = ḡ_oᵀ A ḡ_o / (G̃⁻¹)_oo    ḡ_o: row o of ḡ (length in)
 *           Ã = A + λ·mean(diag A)·I and G̃ likewise (damping λ, default 0.01). The inverse diagonal is
 *           exact (dense Cholesky) up to DENSE_INVERSE_LIMIT rows; larger factors are treated as
 *           block-diagonal with blocks of INVERSE_BLOCK rows (the inverse of each diagonal block).
 *   fisher  importance[o, i] = Fsum[o, i] / nb                    (diagonal empirical Fisher)
 *   snip    importance[o, i] = |W[o, i] · ḡ[o, i]|                (SNIP's connection sensitivity)
 *   random, columns: data-free (./budget.ts).
 */
import { checkOptionKeys, optionKeys } from '../../util/options.js';
import { BUDGET_OPTION_KEYS, SELECTIONS, type Selection } from './config.js';
import type { TensorView } from '../../gpu/buffers.js';
import type { CommandRecorder } from '../../gpu/recorder.js';
import { ShapeError } from '../../errors.js';
import { elementwise } from '../../kernels/elementwise.js';
import { matmul } from '../../kernels/matmul.js';
import type { Activations } from '../../model/activations.js';
import type { BatchInput, PreparedBatch } from '../../model/batch.js';
import type { CausalLM } from '../../model/causal-lm.js';
import type { LinearHooks } from '../method.js';
import type { LinearShape } from '../targets.js';
import { budgetModules, columnMask, maskFromScores, randomMask, type BudgetOptions } from './budget.js';
import type { SparseMask } from './mask.js';

export { SELECTIONS, type Selection };

export interface SelectOptions extends BudgetOptions {
  selection: Selection;
  /** Damping λ of the Kronecker factors, relative to their mean diagonal (sylva). Default 0.01. */
  damping?: number;
  /** Seed of the data-free selections. Default 0. */
  seed?: number;
  /** Called after each calibration batch and each layer scored (scoring a large layer takes seconds). */
  onProgress?: (p: SelectProgress) => void;
}

/** How far a selection is: calibration batches run (total null when the batches are an iterator), layers scored. */
export interface SelectProgress {
  phase: 'calibrating' | 'scoring';
  done: number;
  total: number | null;
  /** The layer just scored. */
  layer?: string;
}

const SELECT_OPTION_KEYS = optionKeys<SelectOptions>()(['selection', 'damping', 'seed', 'onProgress', ...(BUDGET_OPTION_KEYS as readonly (keyof BudgetOptions)[])]);

/** What a selection cost: wall time, the GPU memory it peaked at, and the data it saw. */
export interface SelectionCost {
  seconds: number;
  /** Peak GPU bytes during selection, the loaded model included. */
  peakGpuBytes: number;
  calibrationTokens: number;
  layers: number;
}

/** Factors up to this many rows invert exactly; larger ones block-diagonally. */
export const DENSE_INVERSE_LIMIT = 1024;
export const INVERSE_BLOCK = 512;

/** Per-layer calibration statistics, read back to the host (sums, see the module comment). */
export interface LayerStatistics {
  shape: LinearShape;
  gsum: Float32Array;
  /** Sylva only. */
  Asum?: Float32Array;
  Gsum?: Float32Array;
  /** Sylva only: Gsum · gsum [out, in] and gsum · Asum [out, in], multiplied on the GPU. */
  Gg?: Float32Array;
  gA?: Float32Array;
  /** Fisher only. */
  Fsum?: Float32Array;
}

/** Totals over calibration: token positions N and batches nb. */
export interface CalibrationTotals {
  tokens: number;
  batches: number;
}

/**
 * Select a mask on a loaded base from calibration batches (ignored by the data-free selections).
 * The model's hooks are borrowed for the passes and restored.
 */
export async function selectMask(model: CausalLM, batches: Iterable<BatchInput | PreparedBatch>, options: SelectOptions): Promise<{ mask: SparseMask; cost: SelectionCost }> {
  checkOptionKeys('mask selection options', options, SELECT_OPTION_KEYS);
  const started = performance.now();
  const gpu = model.gpu;
  gpu.resetPeakMemory();
  const modules = budgetModules(model.config, options);
  if (!SELECTIONS.includes(options.selection)) throw new ShapeError(`unknown mask selection '${String(options.selection).slice(0, 40)}' (${SELECTIONS.join(', ')})`);
  const damping = options.damping ?? 0.01;
  if (!(damping > 0 && Number.isFinite(damping))) throw new ShapeError(`damping must be a positive number, got ${damping}`);
  const cost = (mask: SparseMask, tokens: number): { mask: SparseMask; cost: SelectionCost } => ({
    mask,
    cost: { seconds: (performance.now() - started) / 1000, peakGpuBytes: gpu.memoryStats().peakBytes, calibrationTokens: tokens, layers: modules.size },
  });
  if (options.selection === 'random') return cost(randomMask(model.config, options), 0);
  if (options.selection === 'columns') return cost(columnMask(model.config, options), 0);

  const report = options.onProgress;
  const batchCount = Array.isArray(batches) ? batches.length : null;
  const { stats, totals } = await calibrate(model, modules, batches, options.selection, undefined, (done) => report?.({ phase: 'calibrating', done, total: batchCount }));
  if (totals.tokens === 0) throw new ShapeError('mask selection needs at least one calibration batch with targets');
  const weights = new Map<string, Float32Array>();
  if (options.selection === 'snip') for (const m of modules.keys()) weights.set(m, await model.readParam(`${m}.weight`));
  const scoresOf = (module: string): Float64Array | Float32Array => {
    const s = stats.get(module)!;
    if (options.selection === 'fisher') return s.Fsum!.map((v) => v / totals.batches);
    if (options.selection === 'snip') return snipScores(s.gsum, weights.get(module)!, totals.tokens);
    return sylvaScores(s, totals.tokens, damping);
  };
  // Layer by layer, yielding between layers so that progress reaches a page or a terminal as it goes.
  const scores = new Map<string, Float64Array | Float32Array>();
  for (const m of modules.keys()) {
    scores.set(m, scoresOf(m));
    report?.({ phase: 'scoring', done: scores.size, total: modules.size, layer: m });
    if (report) await new Promise((resolve) => setTimeout(resolve, 0));
  }
  const mask = maskFromScores(model.config, options, (m) => scores.get(m)!, { selection: options.selection, calibrationTokens: totals.tokens, fingerprint: model.fingerprint });
  return cost(mask, totals.tokens);
}

/**
 * Run the calibration passes and read back each layer's statistics. Exported for tests, which check
 * the sums against a float64 computation from the same inputs.
 */
export async function calibrate(
  model: CausalLM,
  modules: Map<string, LinearShape>,
  batches: Iterable<BatchInput | PreparedBatch>,
  selection: 'sylva' | 'fisher' | 'snip',
  observe?: LinearHooks,
  onBatch?: (done: number) => void,
): Promise<{ stats: Map<string, LayerStatistics>; totals: CalibrationTotals }> {
  const gpu = model.gpu;
  const hooks = new CalibrationHooks(model, modules, selection, observe);
  const previous = model.transformer.hooks;
  const totals: CalibrationTotals = { tokens: 0, batches: 0 };
  try {
    model.transformer.hooks = hooks;
    for (const input of batches) {
      const batch = model.prepare(input);
      if (batch.targetCount === 0) continue;
      hooks.batchTargets = batch.targetCount;
      const rec = gpu.recorder();
      // Gradient scale 1: dy_t is the gradient of token t's own loss.
      const acts = model.record(rec, batch, 1, { training: false, pass: 0 });
      try {
        await rec.submit();
      } finally {
        acts.unpin();
      }
      totals.tokens += batch.ids.length;
      totals.batches++;
      onBatch?.(totals.batches);
    }
    return { stats: await hooks.readBack(), totals };
  } finally {
    model.transformer.hooks = previous;
    hooks.destroy();
  }
}

/** Accumulates the statistics in the weight-gradient hook of each targeted layer (see the module comment). */
class CalibrationHooks implements LinearHooks {
  readonly fused = false;
  batchTargets = 1;
  private readonly buffers = new Map<string, { gsum: GPUBuffer; Asum?: GPUBuffer; Gsum?: GPUBuffer; Fsum?: GPUBuffer }>();
  /** One batch's dW, shared by the layers (they run one after another). */
  private readonly batchGrad: GPUBuffer;

  constructor(
    private readonly model: CausalLM,
    private readonly modules: Map<string, LinearShape>,
    private readonly selection: 'sylva' | 'fisher' | 'snip',
    private readonly observe?: LinearHooks,
  ) {
    const gpu = model.gpu;
    const made: GPUBuffer[] = [];
    const zeroed = (elements: number, label: string) => {
      const b = gpu.createBuffer(elements * 4, undefined, label);
      made.push(b);
      return b;
    };
    try {
      this.batchGrad = zeroed(Math.max(...[...modules.values()].map((d) => d.out * d.in)), 'calibration batch dW');
      for (const [m, d] of modules) {
        this.buffers.set(m, {
          gsum: zeroed(d.out * d.in, `calibration gsum ${m}`),
          Asum: selection === 'sylva' ? zeroed(d.in * d.in, `calibration A ${m}`) : undefined,
          Gsum: selection === 'sylva' ? zeroed(d.out * d.out, `calibration G ${m}`) : undefined,
          Fsum: selection === 'fisher' ? zeroed(d.out * d.in, `calibration fisher ${m}`) : undefined,
        });
      }
    } catch (e) {
      for (const b of made) gpu.destroyBuffer(b);
      throw e;
    }
    const rec = gpu.recorder();
    for (const b of made) rec.clear(b);
    void rec.submit();
  }

  has(name: string): boolean {
    return this.modules.has(name);
  }

  weightGradient(rec: CommandRecorder, acts: Activations, name: string, x: TensorView, dy: TensorView, outDim: number, inDim: number): boolean {
    this.observe?.weightGradient?.(rec, acts, name, x, dy, outDim, inDim, { training: false, pass: 0 });
    const T = acts.T;
    const b = this.buffers.get(name)!;
    const dW = { buffer: this.batchGrad, offset: 0, size: outDim * inDim * 4 };
    matmul(rec, { a: dy, b: x, c: dW, M: outDim, N: inDim, K: T, transA: true });
    elementwise(rec, { op: 'axpy', y: b.gsum, x: dW, n: outDim * inDim, s0: 1 });
    if (b.Fsum) elementwise(rec, { op: 'addcmul', y: b.Fsum, x: dW, z: dW, n: outDim * inDim, s0: 1 / this.batchTargets ** 2 });
    if (b.Asum) matmul(rec, { a: x, b: x, c: b.Asum, M: inDim, N: inDim, K: T, transA: true, accumulate: true });
    if (b.Gsum) matmul(rec, { a: dy, b: dy, c: b.Gsum, M: outDim, N: outDim, K: T, transA: true, accumulate: true });
    return true;
  }

  async readBack(): Promise<Map<string, LayerStatistics>> {
    const gpu = this.model.gpu;
    const out = new Map<string, LayerStatistics>();
    for (const [m, d] of this.modules) {
      const b = this.buffers.get(m)!;
      const s: LayerStatistics = { shape: d, gsum: await gpu.readF32(b.gsum) };
      if (b.Fsum) s.Fsum = await gpu.readF32(b.Fsum);
      if (b.Asum && b.Gsum) {
        // The two products the saliency needs, [out, out]·[out, in] and [out, in]·[in, in], on the GPU.
        const Gg = gpu.createBuffer(d.out * d.in * 4, undefined, 'calibration G·g');
        const gA = gpu.createBuffer(d.out * d.in * 4, undefined, 'calibration g·A');
        try {
          await gpu.run((rec) => {
            matmul(rec, { a: b.Gsum!, b: b.gsum, c: Gg, M: d.out, N: d.in, K: d.out });
            matmul(rec, { a: b.gsum, b: b.Asum!, c: gA, M: d.out, N: d.in, K: d.in });
          });
          [s.Asum, s.Gsum, s.Gg, s.gA] = await Promise.all([gpu.readF32(b.Asum), gpu.readF32(b.Gsum), gpu.readF32(Gg), gpu.readF32(gA)]);
        } finally {
          gpu.destroyBuffer(Gg);
          gpu.destroyBuffer(gA);
        }
      }
      out.set(m, s);
    }
    return out;
  }

  destroy(): void {
    const gpu = this.model.gpu;
    gpu.destroyBuffer(this.batchGrad);
    for (const b of this.buffers.values()) for (const buf of Object.values(b)) if (buf) gpu.destroyBuffer(buf);
  }
}

/** |W · ḡ| elementwise, ḡ = gsum / N. */
function snipScores(gsum: Float32Array, w: Float32Array, tokens: number): Float64Array {
  return Float64Array.from(gsum, (g, j) => Math.abs((w[j] * g) / tokens));
}

/** Sylva's K-FAC saliency importance[o, i] = imp_out[o] · imp_in[i] (module comment), in float64. */
export function sylvaScores(s: LayerStatistics, tokens: number, damping: number): Float64Array {
  const { out, in: inDim } = s.shape;
  const N = tokens;
  // ḡ_iᵀ G ḡ_i = Σ_o ḡ[o, i] (G ḡ)[o, i], with G ḡ = (Gsum gsum) / N² and ḡ = gsum / N.
  const impIn = new Float64Array(inDim);
  const impOut = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    for (let i = 0; i < inDim; i++) {
      const j = o * inDim + i;
      impIn[i] += s.gsum[j] * s.Gg![j];
      impOut[o] += s.gsum[j] * s.gA![j];
    }
  }
  const aInv = inverseDiagonal(Float64Array.from(s.Asum!, (v) => v / N), inDim, damping);
  const gInv = inverseDiagonal(Float64Array.from(s.Gsum!, (v) => v / N), out, damping);
  for (let i = 0; i < inDim; i++) impIn[i] = impIn[i] / N ** 3 / aInv[i];
  for (let o = 0; o < out; o++) impOut[o] = impOut[o] / N ** 3 / gInv[o];
  const scores = new Float64Array(out * inDim);
  for (let o = 0; o < out; o++) for (let i = 0; i < inDim; i++) scores[o * inDim + i] = impOut[o] * impIn[i];
  return scores;
}

/**
 * diag((M + λ·mean(diag M)·I)⁻¹) of a symmetric positive semi-definite n x n matrix: exact by Cholesky
 * up to DENSE_INVERSE_LIMIT, else of its block-diagonal part with INVERSE_BLOCK-row blocks.
 */
export function inverseDiagonal(m: Float64Array, n: number, damping: number, denseLimit = DENSE_INVERSE_LIMIT, blockRows = INVERSE_BLOCK): Float64Array {
  let trace = 0;
  for (let i = 0; i < n; i++) trace += m[i * n + i];
  const shift = damping * Math.max(trace / n, 1e-30);
  const block = n <= denseLimit ? n : blockRows;
  const out = new Float64Array(n);
  for (let start = 0; start < n; start += block) {
    const size = Math.min(block, n - start);
    const sub = new Float64Array(size * size);
    for (let r = 0; r < size; r++) {
      for (let c = 0; c < size; c++) sub[r * size + c] = (m[(start + r) * n + start + c] + m[(start + c) * n + start + r]) / 2;
      sub[r * size + r] += shift;
    }
    out.set(choleskyInverseDiagonal(sub, size), start);
  }
  return out;
}

/** diag(S⁻¹) for symmetric positive definite S: S = L Lᵀ, S⁻¹ = L⁻ᵀ L⁻¹, so (S⁻¹)_ii = Σ_k (L⁻¹)_ki². */
function choleskyInverseDiagonal(s: Float64Array, n: number): Float64Array {
  const L = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    let d = s[j * n + j];
    for (let k = 0; k < j; k++) d -= L[j * n + k] ** 2;
    if (!(d > 0)) throw new Error('a damped Kronecker factor is not positive definite (raise the damping)');
    const ljj = Math.sqrt(d);
    L[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let v = s[i * n + j];
      for (let k = 0; k < j; k++) v -= L[i * n + k] * L[j * n + k];
      L[i * n + j] = v / ljj;
    }
  }
  // Columns of L⁻¹ by forward substitution, accumulating their squared entries.
  const out = new Float64Array(n);
  const col = new Float64Array(n);
  for (let c = 0; c < n; c++) {
    col.fill(0);
    for (let i = c; i < n; i++) {
      let v = i === c ? 1 : 0;
      for (let k = c; k < i; k++) v -= L[i * n + k] * col[k];
      col[i] = v / L[i * n + i];
      out[c] += col[i] ** 2;
    }
  }
  return out;
}
