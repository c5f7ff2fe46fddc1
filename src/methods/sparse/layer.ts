/**
 * Sparse fine-tuning in the style of CentML's Sylva: only the weights at a mask train, and they train in
 * place, inside the frozen weights (on a 16-bit base the values stay f32 masters and the weight holds
 * their rounding, as Sylva's bf16 w0). The forward pass is the base model's own (no adapter work at all),
 * the input gradient is the base's, and the weight gradient is computed only at the mask (a sampled
 * product per element, or a small tiled product per block). AdamW updates the masked values and writes
 * each one into its weight. The original values are kept, so unmerging restores the base bit for bit.
 */
import type { TensorView } from '../../gpu/buffers.js';
import type { Gpu } from '../../gpu/gpu.js';
import type { CommandRecorder } from '../../gpu/recorder.js';
import { elementwise } from '../../kernels/elementwise.js';
import { blockSparseGrad, sparseGather, sparseGrad, sparseScatter } from '../../kernels/sparse.js';
import { Arena, bindingLimit, planArena } from '../../model/arena.js';
import type { Activations } from '../../model/activations.js';
import type { CausalLM } from '../../model/causal-lm.js';
import { ShapeError } from '../../errors.js';
import type { WeightFormat } from '../../kernels/matmul.js';
import { AdamW, type AdamWConfig, type InPlaceTarget, type Optimizer, type OptimizerGroup, type TrainableSet } from '../../optim/adamw.js';
import type { LinearHooks, Method } from '../method.js';
import type { ModelFingerprint } from '../../model/fingerprint.js';
import { isDense } from '../../model/linear-weights.js';
import type { SparseMask } from './mask.js';

const VALUES = '.sparse_values';

export class SparseFineTuning implements Method, LinearHooks {
  readonly name = 'sparse';
  readonly fused = false;
  readonly linear: LinearHooks = this;
  readonly trainable: TrainableSet;
  /** The trainable values, in each module's value order. */
  readonly values: Arena;
  readonly grads: Arena;
  /** The base's values at the mask, for unmerging and deltas. */
  readonly originals: Arena;
  /** Per module: flat element indices in value order (u32). */
  readonly indices: Arena;
  /** Per module: block ids (u32), for block masks. */
  readonly blocks: Arena | null;
  /** Whether the trained values are in the weights (from the start; unmerging restores the base). */
  merged = true;
  /** The base the method was attached to (deltas and masks made from it record this). */
  readonly base: ModelFingerprint;
  /** Each targeted weight as stored: f32, or 16-bit packed in pairs (holding the values rounded). */
  private readonly weights = new Map<string, { view: TensorView; format: WeightFormat; size: number }>();
  /** Room for the largest module's delta (deltaWeight). */
  private readonly scratch: GPUBuffer;

  constructor(
    readonly gpu: Gpu,
    model: CausalLM,
    readonly mask: SparseMask,
  ) {
    mask.checkModel(model.config, model.fingerprint);
    this.base = model.fingerprint;
    for (const [module, e] of mask.entries) {
      const w = model.linearWeight(`${module}.weight`);
      if (!isDense(w)) throw new ShapeError(`sparse fine-tuning trains inside the weights, and '${module}' is stored ${w.format}: load the base without quantize`);
      this.weights.set(module, { view: w.view, format: w.format, size: e.rows * e.cols });
    }
    const modules = [...mask.entries.keys()];
    const limit = bindingLimit(gpu).bytes;
    const valueLayout = planArena(modules.map((m) => ({ name: `${m}${VALUES}`, length: mask.nnz(m) })), limit);
    const indexLayout = planArena(modules.map((m) => ({ name: m, length: mask.nnz(m) })), limit);
    const made: { destroy(): void }[] = [];
    const arena = (layout: typeof valueLayout, label: string) => {
      const a = new Arena(gpu, layout, label);
      made.push(a);
      return a;
    };
    try {
      this.values = arena(valueLayout, 'sparse values');
      this.grads = arena(valueLayout, 'sparse grads');
      this.originals = arena(valueLayout, 'sparse originals');
      this.indices = arena(indexLayout, 'sparse indices');
      this.blocks = mask.granularity === 'element' ? null : arena(planArena(modules.map((m) => ({ name: m, length: mask.entries.get(m)!.indices.length })), limit), 'sparse blocks');
      this.scratch = gpu.createBuffer(Math.max(...modules.map((m) => mask.nnz(m)), 1) * 4, undefined, 'sparse delta scratch');
    } catch (e) {
      for (const m of made) m.destroy();
      throw e;
    }
    this.trainable = { names: modules.map((m) => `${m}${VALUES}`), param: (n) => this.values.view(n), grads: this.grads };
    const rec = gpu.recorder();
    for (const m of modules) {
      gpu.write(this.indices.view(m), mask.valueIndices(m));
      if (this.blocks) gpu.write(this.blocks.view(m), mask.entries.get(m)!.indices);
      const w = this.weights.get(m)!;
      sparseGather(rec, { indices: this.indices.view(m), nnz: mask.nnz(m), values: this.values.view(`${m}${VALUES}`), weight: w.view, weightSize: w.size, weightFormat: w.format });
      rec.copy(this.values.view(`${m}${VALUES}`), this.originals.view(`${m}${VALUES}`));
    }
    for (const b of this.grads.buffers) rec.clear(b);
    void rec.submit();
  }

  get modules(): string[] {
    return [...this.mask.entries.keys()];
  }

  has(name: string): boolean {
    return this.merged && this.mask.entries.has(name);
  }

  /** The gradient only at the mask: dV += dy^T x sampled at each element, or per selected block. */
  weightGradient(rec: CommandRecorder, acts: Activations, name: string, x: TensorView, dy: TensorView, outDim: number, inDim: number): boolean {
    const out = this.grads.view(`${name}${VALUES}`);
    const common = { dY: dy, x, T: acts.T, N: outDim, K: inDim, out, accumulate: true };
    if (this.blocks) {
      blockSparseGrad(rec, { ...common, blocks: this.blocks.view(name), numBlocks: this.mask.entries.get(name)!.indices.length, blockSize: this.mask.blockSize });
    } else {
      sparseGrad(rec, { ...common, indices: this.indices.view(name), nnz: this.mask.nnz(name) });
    }
    return true;
  }

  createOptimizer(config: AdamWConfig): Optimizer {
    return new AdamW(this.gpu, [this.optimizerGroup()], config);
  }

  /** The values as an optimizer group: updated values go straight into their weights. */
  optimizerGroup(): OptimizerGroup {
    const inPlace = (name: string): InPlaceTarget => {
      const module = name.slice(0, -VALUES.length);
      const w = this.weights.get(module)!;
      return { indices: this.indices.view(module), weight: w.view, weightSize: w.size, weightFormat: w.format };
    };
    return { set: this.trainable, inPlace };
  }

  /** Training happens inside the weights: put the values back in when unmerged. */
  readyToTrain(rec: CommandRecorder): void {
    this.setMerged(rec, true);
  }

  zeroGrads(rec: CommandRecorder): void {
    for (const b of this.grads.buffers) rec.clear(b);
  }

  /** Write the trained values (merged) or the base's originals (unmerged) into the weights. */
  setMerged(rec: CommandRecorder, merged: boolean): void {
    if (merged === this.merged) return;
    for (const m of this.modules) {
      const w = this.weights.get(m)!;
      const from = (merged ? this.values : this.originals).view(`${m}${VALUES}`);
      sparseScatter(rec, { indices: this.indices.view(m), nnz: this.mask.nnz(m), values: from, weight: w.view, weightSize: w.size, weightFormat: w.format });
    }
    this.merged = merged;
  }

  /** The values were overwritten (restored state): write them into the weights while merged. */
  trainableWritten(rec: CommandRecorder): void {
    if (!this.merged) return;
    this.merged = false;
    this.setMerged(rec, true);
  }

  /** The trained change per module, values - originals, in value order. */
  async deltas(): Promise<Map<string, Float32Array>> {
    const out = new Map<string, Float32Array>();
    for (const m of this.modules) {
      const [values, originals] = await Promise.all([this.gpu.readF32(this.values.view(`${m}${VALUES}`)), this.gpu.readF32(this.originals.view(`${m}${VALUES}`))]);
      out.set(m, values.map((v, i) => v - originals[i]));
    }
    return out;
  }

  /**
   * Sets the values to originals + delta per module (value order) and, while merged, writes them into
   * the weights; unmerging still restores the base exactly. Every size is checked before anything is
   * written; modules the map lacks keep their values.
   */
  applyDeltas(deltas: ReadonlyMap<string, Float32Array>): void {
    for (const [m, d] of deltas) {
      if (!this.mask.entries.has(m)) throw new ShapeError(`sparse delta: '${m}' is not in this mask`);
      if (d.length !== this.mask.nnz(m)) throw new ShapeError(`sparse delta: '${m}' has ${d.length} values, the mask ${this.mask.nnz(m)}`);
    }
    const rec = this.gpu.recorder();
    for (const [m, d] of deltas) {
      const name = `${m}${VALUES}`;
      // The gradient slot is scratch here: the next step clears it.
      this.gpu.write(this.grads.view(name), d);
      rec.copy(this.originals.view(name), this.values.view(name));
      elementwise(rec, { op: 'axpy', y: this.values.view(name), x: this.grads.view(name), n: d.length, s0: 1 });
      rec.clear(this.grads.view(name));
    }
    this.trainableWritten(rec);
    void rec.submit();
  }

  /** values - originals at the mask, zero elsewhere. */
  deltaWeight(rec: CommandRecorder, weight: string, out: TensorView): boolean {
    const m = weight.replace(/\.weight$/, '');
    if (!weight.endsWith('.weight') || !this.mask.entries.has(m)) return false;
    rec.clear(out);
    this.addDelta(rec, m, out);
    return true;
  }

  /** out[idx] += values - originals for one module. */
  addDelta(rec: CommandRecorder, m: string, out: TensorView): void {
    const nnz = this.mask.nnz(m);
    const delta = { buffer: this.scratch, offset: 0, size: nnz * 4 };
    rec.copy(this.values.view(`${m}${VALUES}`), delta);
    elementwise(rec, { op: 'axpy', y: delta, x: this.originals.view(`${m}${VALUES}`), n: nnz, s0: -1 });
    sparseScatter(rec, { indices: this.indices.view(m), nnz, values: delta, weight: out, weightSize: out.size / 4, add: true });
  }

  interchangeName(): string | null {
    return null;
  }

  fromInterchangeName(): string | null {
    return null;
  }

  destroy(): void {
    for (const a of [this.values, this.grads, this.originals, this.indices, this.blocks]) a?.destroy();
    this.gpu.destroyBuffer(this.scratch);
  }
}
