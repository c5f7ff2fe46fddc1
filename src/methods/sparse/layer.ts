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
import { BufferTooLargeError, ShapeError } from '../../errors.js';
import type { WeightFormat } from '../../kernels/matmul.js';
import { matmul } from '../../kernels/matmul.js';
import { AdamW, type AdamWConfig, type InPlaceTarget, type Optimizer, type OptimizerGroup, type TrainableSet } from '../../optim/adamw.js';
import type { LinearHooks, Method, TrainingStep } from '../method.js';
import type { ModelFingerprint } from '../../model/fingerprint.js';
import { isDense } from '../../model/linear-weights.js';
import { backpropStep } from '../../train/backprop-step.js';
import { SparseMask } from './mask.js';
import { checkRegrowth, DEFAULT_REGROW_FRACTION, planSwap, recordSwap, type ModuleSwap, type RegrowthOptions, type SwapScratch } from './regrowth.js';

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
  /** With drop-and-regrow (./regrowth.ts): its own step, which scores and swaps. */
  readonly step?: TrainingStep;
  private adam: AdamW | null = null;
  /** Dense weight gradients of the step being scored, by module (a regrowth step only). */
  private scoring: Map<string, GPUBuffer> | null = null;
  /** A scored step's regrowth until its swaps are queued (or it failed). */
  private pending: Promise<void> | null = null;
  private destroyed = false;
  /** The mask attached with: what a state file without a layout was saved over. */
  private readonly attachedMask: SparseMask;

  /** The positions that train (drop-and-regrow replaces it). */
  mask: SparseMask;

  constructor(
    readonly gpu: Gpu,
    model: CausalLM,
    mask: SparseMask,
    regrowth?: RegrowthOptions,
  ) {
    this.mask = mask;
    this.attachedMask = mask;
    mask.checkModel(model.config, model.fingerprint);
    if (regrowth) {
      checkRegrowth(regrowth, mask.granularity);
      const limit = bindingLimit(gpu);
      for (const [m, e] of mask.entries) {
        if (e.rows * e.cols * 4 > limit.bytes) throw new BufferTooLargeError(`drop-and-regrow's f32 gradient of '${m}'`, e.rows * e.cols * 4, limit.bytes, limit.name, 'Train this mask without regrow, or on a device with larger storage bindings.');
      }
      this.step = this.regrowingStep(regrowth.every, regrowth.fraction ?? DEFAULT_REGROW_FRACTION);
    }
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
      this.placeAt(rec, m);
      rec.copy(this.originals.view(`${m}${VALUES}`), this.values.view(`${m}${VALUES}`));
    }
    for (const b of this.grads.buffers) rec.clear(b);
    void rec.submit();
  }

  /**
   * The mask as index arrays by module, for state files; loading one moves the values there first (a
   * file without one was saved over the mask attached with).
   */
  readonly layout = {
    read: () => new Map([...this.mask.entries].map(([m, e]) => [m, e.indices])),
    initial: () => new Map([...this.attachedMask.entries].map(([m, e]) => [m, e.indices])),
    adopt: (layout: ReadonlyMap<string, Uint32Array>) => this.adoptMask(layout),
    settle: () => this.settle(),
  };

  /**
   * Moves to another mask of the same modules and counts (a state saved after drop-and-regrow), checked
   * whole first: the base is restored at the old mask, the base values gathered at the new one; the
   * values are the caller's to write next (FineTuner.loadState), then merged by trainableWritten.
   */
  private adoptMask(layout: ReadonlyMap<string, Uint32Array>): void {
    const modules = this.modules;
    const missing = modules.filter((m) => !layout.has(m));
    if (layout.size !== modules.length || missing.length) {
      throw new ShapeError(`the saved mask covers ${layout.size} layers, this one ${modules.length}${missing.length ? ` (the saved one lacks '${missing[0]}')` : ''}`);
    }
    if (modules.every((m) => layout.get(m)!.every((v, i) => v === this.mask.entries.get(m)!.indices[i]))) return; // already there
    const entries = new Map(modules.map((m) => {
      const e = this.mask.entries.get(m)!;
      const indices = layout.get(m)!;
      if (indices.length !== e.indices.length) throw new ShapeError(`the saved mask holds ${indices.length} entries of '${m}'; this one ${e.indices.length}`);
      return [m, { ...e, indices }] as const;
    }));
    const mask = new SparseMask(this.mask.granularity, entries, this.mask.info);
    const rec = this.gpu.recorder();
    this.setMerged(rec, false);
    void rec.submit();
    this.mask = mask;
    const gather = this.gpu.recorder();
    for (const m of modules) this.placeAt(gather, m);
    void gather.submit();
    this.merged = true; // once the caller's values are written, trainableWritten merges them
  }

  /**
   * Puts module m's indices (and blocks) of this.mask on the GPU and records gathering the weight's
   * values there into its originals: the base values, while the weight holds the base.
   */
  private placeAt(rec: CommandRecorder, m: string): void {
    this.gpu.write(this.indices.view(m), this.mask.valueIndices(m));
    if (this.blocks) this.gpu.write(this.blocks.view(m), this.mask.entries.get(m)!.indices);
    const w = this.weights.get(m)!;
    sparseGather(rec, { indices: this.indices.view(m), nnz: this.mask.nnz(m), values: this.originals.view(`${m}${VALUES}`), weight: w.view, weightSize: w.size, weightFormat: w.format });
  }

  get modules(): string[] {
    return [...this.mask.entries.keys()];
  }

  has(name: string): boolean {
    return this.merged && this.mask.entries.has(name);
  }

  /** The gradient only at the mask: dV += dy^T x sampled at each element, or per selected block. */
  weightGradient(rec: CommandRecorder, acts: Activations, name: string, x: TensorView, dy: TensorView, outDim: number, inDim: number): boolean {
    const dense = this.scoring?.get(name);
    if (dense) matmul(rec, { a: dy, b: x, c: dense, M: outDim, N: inDim, K: acts.T, transA: true });
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
    this.adam = new AdamW(this.gpu, [this.optimizerGroup()], config);
    return this.adam;
  }

  /**
   * Backpropagation with drop-and-regrow: a step that completes every `every`-th optimizer step also
   * computes each module's dense weight gradient, read back with the trained deltas to plan the swaps,
   * which are queued as soon as they are planned; its loss resolves after, so an awaited step is followed
   * by steps on the new mask. A step recorded while a plan is pending is not scored (a plan is made
   * against the mask it read), and a swap that lands between micro-batches moves their gradients too.
   */
  private regrowingStep(every: number, fraction: number): TrainingStep {
    return {
      // Scoring holds an f32 copy of every targeted weight: automatic batch sizes leave room for it.
      probe: (rec, model, batch) => {
        const scoring = this.scoringBuffers();
        const release = backpropStep.probe(rec, model, batch);
        return () => {
          release();
          for (const b of scoring.values()) this.gpu.destroyBuffer(b);
        };
      },
      record: (rec, ctx) => {
        const scoring = ctx.update !== null && (ctx.optimizer.step + 1) % every === 0 && !this.pending;
        if (scoring) this.scoring = this.scoringBuffers();
        let step;
        try {
          step = backpropStep.record(rec, ctx);
        } catch (e) {
          this.releaseScoring();
          throw e;
        }
        if (!scoring) return step;
        return {
          finish: () => {
            const loss = step.finish();
            const planned = this.planSwaps(fraction);
            this.pending = planned.catch(() => undefined).finally(() => (this.pending = null));
            return Promise.all([loss, planned]).then(([l]) => l);
          },
        };
      },
    };
  }

  /** An f32 [out, in] buffer per targeted weight, for a scored step's dense gradients. */
  private scoringBuffers(): Map<string, GPUBuffer> {
    const out = new Map<string, GPUBuffer>();
    try {
      for (const [m, e] of this.mask.entries) out.set(m, this.gpu.createBuffer(e.rows * e.cols * 4, undefined, `regrowth gradient ${m}`));
    } catch (e) {
      for (const b of out.values()) this.gpu.destroyBuffer(b);
      throw e;
    }
    return out;
  }

  /** Settles a pending regrowth, so what is read next (state, deltas) is in one mask's order. */
  async settle(): Promise<void> {
    await this.pending;
  }

  /** Reads back the scored step's gradients and deltas, plans every module's swap and applies them. */
  private async planSwaps(fraction: number): Promise<void> {
    const dense = this.scoring!;
    this.scoring = null;
    const mask = this.mask;
    try {
      // Every readback is queued at once, right after the scored step.
      const modules = [...mask.entries.keys()];
      const reads = modules.map((m) => Promise.all([
        this.gpu.readF32(dense.get(m)!), this.gpu.readF32(this.values.view(`${m}${VALUES}`)), this.gpu.readF32(this.originals.view(`${m}${VALUES}`)),
      ]));
      const plans = new Map<string, ModuleSwap>();
      for (const [i, m] of modules.entries()) {
        const [gradient, values, originals] = await reads[i];
        const delta = values.map((v, j) => v - originals[j]);
        if (delta.some(Number.isNaN) || gradient.some(Number.isNaN)) throw new ShapeError(`drop-and-regrow: '${m}' has NaN values or gradients: training diverged (a lower learning rate may help)`);
        const swap = planSwap(mask.entries.get(m)!.indices, delta, gradient, fraction);
        if (swap) plans.set(m, swap);
      }
      // Nothing else moves the mask while a plan is pending; a destroyed method takes no swap.
      if (this.destroyed || this.mask !== mask) return;
      this.applySwaps(plans);
    } finally {
      for (const b of dense.values()) this.gpu.destroyBuffer(b);
    }
  }

  private releaseScoring(): void {
    for (const b of this.scoring?.values() ?? []) this.gpu.destroyBuffer(b);
    this.scoring = null;
  }

  /**
   * Swaps the planned entries, module by module (each its own submission, so the index arrays written
   * for one are not overwritten before it runs), and replaces the mask.
   */
  private applySwaps(planned: Map<string, ModuleSwap>): void {
    if (!planned.size) return;
    if (!this.adam) throw new Error('drop-and-regrow needs the method\'s own optimizer');
    const most = Math.max(...[...planned.keys()].map((m) => this.mask.nnz(m)), 1);
    const made: GPUBuffer[] = [];
    const buffer = (label: string) => {
      const b = this.gpu.createBuffer(most * 4, undefined, `regrowth ${label}`);
      made.push(b);
      return b;
    };
    try {
      const scratch: SwapScratch = {
        droppedFlat: buffer('dropped indices'), droppedOld: buffer('dropped positions'), keptOld: buffer('kept positions'), keptNew: buffer('kept new positions'),
        old: buffer('old values'), moved: buffer('moved values'),
      };
      const entries = new Map(this.mask.entries);
      for (const [m, swap] of planned) {
        const w = this.weights.get(m)!;
        const name = `${m}${VALUES}`;
        const moments = this.adam.momentViews(name);
        this.gpu.write(this.indices.view(m), swap.indices);
        for (const key of ['droppedFlat', 'droppedOld', 'keptOld', 'keptNew'] as const) if (swap[key].length) this.gpu.write(scratch[key], swap[key]);
        const rec = this.gpu.recorder();
        recordSwap(rec, {
          nnz: this.mask.nnz(m), indices: this.indices.view(m), values: this.values.view(name), originals: this.originals.view(name),
          moved: [moments.m, moments.v, this.grads.view(name)], weight: w.view, weightSize: w.size, weightFormat: w.format,
        }, swap, scratch);
        void rec.submit();
        entries.set(m, { ...entries.get(m)!, indices: swap.indices });
      }
      this.mask = new SparseMask(this.mask.granularity, entries, this.mask.info);
    } finally {
      for (const b of made) this.gpu.destroyBuffer(b);
    }
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
    await this.settle();
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
    this.destroyed = true;
    this.releaseScoring();
    for (const a of [this.values, this.grads, this.originals, this.indices, this.blocks]) a?.destroy();
    this.gpu.destroyBuffer(this.scratch);
  }
}
