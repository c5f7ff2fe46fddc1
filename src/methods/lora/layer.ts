/**
 * LoRA (Hu et al.; Hugging Face PEFT conventions): for each targeted linear layer, y += s * (x A^T) B^T
 * with A [r, in], B [out, r], s = alpha / r; A starts kaiming-uniform (bound 1 / sqrt(in), PEFT's
 * kaiming_uniform_(a=sqrt(5))) and B at zero, so an attached adapter leaves the model's output unchanged.
 * Merging adds s * B A into the base weight (then the adapter path is skipped); unmerging subtracts it.
 * The adapter is the method (what trains, its optimizer, its PEFT names) and its linear-layer hooks.
 */
import type { TensorView } from '../../gpu/buffers.js';
import type { Gpu } from '../../gpu/gpu.js';
import type { CommandRecorder } from '../../gpu/recorder.js';
import { elementwise } from '../../kernels/elementwise.js';
import { matmul, type LowRankTerm } from '../../kernels/matmul.js';
import { matmulGrouped } from '../../kernels/matmul-grouped.js';
import { Arena, bindingLimit, planArena } from '../../model/arena.js';
import type { ModelConfig } from '../../model/config.js';
import type { Activations } from '../../model/activations.js';
import type { CausalLM } from '../../model/causal-lm.js';
import type { LinearWeight } from '../../model/linear-weights.js';
import { AdamW, type AdamWConfig, type Optimizer, type OptimizerGroup, type TrainableSet } from '../../optim/adamw.js';
import { hash32, randn, rng } from '../../util/random.js';
import { hfModulePaths } from '../targets.js';
import { type ColumnScale, type LinearHooks, type Method, type PassContext } from '../method.js';
import { defaultLoraAlpha, LORA_DEFAULT_RANK, loraModuleSpecs, loraScale, type LoraModuleSpec, type LoraOptions } from './config.js';
import { Dora } from './dora.js';
import { decomposeWeight, initMutatesBase } from './init.js';

/** The base model as an adapter sees it: f32 weights to merge into, and each linear weight as stored. */
export interface LoraBase {
  f32(name: string): TensorView;
  linear(name: string): LinearWeight;
}

/** A loaded model's weights as an adapter reads them. */
export function loraBase(model: CausalLM): LoraBase {
  return { f32: (name) => model.f32Param(name), linear: (name) => model.linearWeight(name) };
}

export class Lora implements Method, LinearHooks {
  readonly name = 'lora';
  readonly params: Arena;
  readonly grads: Arena;
  /** The default rank and scale; a module's own (rankPattern, alphaPattern) are in `modules`. */
  readonly rank: number;
  readonly scale: number;
  readonly modules: Map<string, LoraModuleSpec>;
  readonly fused: boolean;
  readonly trainable: TrainableSet;
  /** Its own hooks: the adapter path of each adapted linear layer. */
  readonly linear: LinearHooks = this;
  merged = false;
  private readonly moduleIndex = new Map<string, number>();
  /**
   * Engine module -> Hugging Face module path (layers.0.q -> model.layers.0.self_attn.q_proj), from the
   * model's weight mappings. Only weights that map one to one: GPT-2's q, k and v are one fused c_attn
   * in Hugging Face, so separate adapters on them have no PEFT name.
   */
  private readonly hfModules: Map<string, string>;
  /** Per activation arena: x A^T of every module, the gradient scratch and dropped inputs. */
  private readonly scratch = new Map<Activations, LoraScratch>();
  /** DoRA's magnitudes and norms, with options.dora. */
  readonly dora: Dora | null = null;
  /**
   * A and B as PiSSA or OLoRA made them (the base holding W - s B0 A0): saved adapters subtract them,
   * becoming plain LoRA on the original base. Null for the initializations that leave the base alone.
   */
  initial: Map<string, { A: Float32Array; B: Float32Array }> | null = null;

  /** `base` gives the base weights ('layers.0.q.weight'), for merging and for DoRA's norms. */
  constructor(
    readonly gpu: Gpu,
    readonly config: ModelConfig,
    readonly options: LoraOptions,
    private readonly base?: LoraBase,
  ) {
    const r = (this.rank = options.rank ?? LORA_DEFAULT_RANK);
    const alpha = options.alpha ?? defaultLoraAlpha(r);
    this.scale = loraScale(alpha, r, options.rslora);
    this.fused = options.fused ?? true;
    this.hfModules = hfModulePaths(config);
    this.modules = loraModuleSpecs(config, options);
    [...this.modules.keys()].forEach((name, i) => this.moduleIndex.set(name, i));
    const tensors = [...this.modules].flatMap(([name, d]) => [
      { name: `${name}.lora_A`, length: d.rank * d.in },
      { name: `${name}.lora_B`, length: d.out * d.rank },
      ...(options.dora ? [{ name: `${name}.lora_magnitude`, length: d.out }] : []),
    ]);
    const layout = planArena(tensors, bindingLimit(gpu).bytes);
    this.params = new Arena(gpu, layout, 'lora');
    try {
      this.grads = new Arena(gpu, layout, 'lora grads');
    } catch (e) {
      this.params.destroy();
      throw e;
    }
    this.trainable = { names: this.names, param: (n) => this.params.view(n), grads: this.grads };
    const rand = rng(options.seed ?? 0);
    for (const [name, d] of this.modules) {
      // PiSSA and OLoRA replace these in initialize().
      const bound = 1 / Math.sqrt(d.in);
      const A = options.init === 'gaussian' ? randn(d.rank * d.in, rand, 1 / d.rank) : Float32Array.from({ length: d.rank * d.in }, () => (2 * rand() - 1) * bound);
      gpu.write(this.params.view(`${name}.lora_A`), A);
      gpu.write(this.params.view(`${name}.lora_B`), new Float32Array(d.out * d.rank));
    }
    if (options.dora) {
      try {
        if (!base) throw new Error('DoRA needs the base weights: attach it to a model');
        this.dora = new Dora(gpu, this.modules, this.params, this.grads, (n) => base.linear(n));
        this.dora.initialize();
      } catch (e) {
        this.destroy();
        throw e;
      }
    }
  }

  /**
   * PiSSA's and OLoRA's start: each adapted base weight is read back, decomposed on the host, and
   * replaced by the residual; DoRA's magnitude is then measured on W_res + s B0 A0, as PEFT orders it.
   * Nothing for the other initializations. FineTuner.create awaits it after attaching.
   */
  async initialize(): Promise<void> {
    const init = this.options.init;
    if (!initMutatesBase(init)) return;
    const base = this.base;
    if (!base) throw new Error(`${init} initialization needs the base weights: attach it to a model`);
    // Every weight is looked up (f32 only: the residual is written back) before any is changed.
    const weights = new Map([...this.modules.keys()].map((name) => [name, base.f32(`${name}.weight`)]));
    const initial = new Map<string, { A: Float32Array; B: Float32Array }>();
    let index = 0;
    for (const [name, d] of this.modules) {
      const w = await this.gpu.readF32(weights.get(name)!);
      const seed = hash32((this.options.seed ?? 0) ^ Math.imul(++index, 0x9e3779b1));
      const { A, B, residual } = decomposeWeight(w, d, init as 'pissa' | 'olora', { pissaNiter: this.options.pissaNiter, seed });
      this.gpu.write(weights.get(name)!, residual);
      this.gpu.write(this.params.view(`${name}.lora_A`), A);
      this.gpu.write(this.params.view(`${name}.lora_B`), B);
      initial.set(name, { A, B });
    }
    this.initial = initial;
    this.dora?.initialize();
  }

  get names(): string[] {
    return [...this.params.layout.slots.keys()];
  }

  /**
   * PEFT's name for an adapter tensor, e.g. layers.0.q.lora_A -> base_model.model.model.layers.0.
   * self_attn.q_proj.lora_A.weight (shapes as PEFT: A [r, in], B [out, r]); null when PEFT has none.
   */
  peftName(name: string): string | null {
    const m = /^(layers\.\d+\.\w+)\.(lora_[AB]|lora_magnitude)$/.exec(name);
    const hf = m && this.hfModules.get(m[1]);
    if (!hf) return null;
    // PEFT keeps DoRA's magnitude as a parameter of its own module: saved without '.weight'.
    return m![2] === 'lora_magnitude' ? `base_model.model.${hf}.lora_magnitude_vector` : `base_model.model.${hf}.${m![2]}.weight`;
  }

  /** The engine name of a PEFT tensor name (inverse of peftName), or null. */
  fromPeftName(peft: string): string | null {
    return this.names.find((n) => this.peftName(n) === peft) ?? null;
  }

  /** A PEFT name, or one of this adapter's own tensor names (what a fused module's parts go by). */
  private ownName(name: string): string | null {
    return this.fromPeftName(name) ?? (this.names.includes(name) ? name : null);
  }

  interchangeName(name: string): string | null {
    return this.peftName(name);
  }

  fromInterchangeName(name: string): string | null {
    return this.ownName(name);
  }

  /** Its tensors as an optimizer group: under LoRA+, B and the magnitude at the ratio times the rate. */
  optimizerGroup(): OptimizerGroup {
    const ratio = this.options.loraplusLrRatio ?? 1;
    return ratio === 1 ? { set: this.trainable } : { set: this.trainable, lrScale: (name) => (/\.lora_(B|magnitude)$/.test(name) ? ratio : 1) };
  }

  createOptimizer(config: AdamWConfig): Optimizer {
    return new AdamW(this.gpu, [this.optimizerGroup()], config);
  }

  /** The dropout mask seed of a module in a training pass (the same in its forward and backward). */
  dropoutSeed(name: string, pass: PassContext): number {
    return hash32(Math.imul((this.options.seed ?? 0) + 1, 0x9e3779b1) ^ Math.imul(pass.pass, 0x85ebca6b) ^ this.moduleIndex.get(name)!);
  }

  private dropoutActive(pass: PassContext): boolean {
    return pass.training && (this.options.dropout ?? 0) > 0;
  }

  /** dropout(x) with this module's mask for the current step, in a per-shape buffer shared by the modules of that input width. */
  private droppedInput(rec: CommandRecorder, acts: Activations, name: string, x: TensorView, inDim: number, pass: PassContext): GPUBuffer {
    const scratch = this.buffers(acts);
    let xd = scratch.dropped.get(inDim);
    if (!xd) {
      xd = this.gpu.createBuffer(acts.T * inDim * 4, undefined, `lora dropped x ${inDim}`);
      scratch.owned.push(xd);
      scratch.dropped.set(inDim, xd);
    }
    elementwise(rec, { op: 'dropout', y: xd, x, n: acts.T * inDim, dropout: { p: this.options.dropout!, seed: this.dropoutSeed(name, pass) } });
    return xd;
  }

  has(name: string): boolean {
    return !this.merged && this.modules.has(name);
  }

  /**
   * Per-shape buffers: x A^T for every module (kept for backward), one buffer per layer so that a layer's
   * modules are one grouped product; the gradient du likewise, one layer's worth that every layer reuses.
   */
  private buffers(acts: Activations): LoraScratch {
    let m = this.scratch.get(acts);
    if (!m) {
      const made: LoraScratch = { u: new Map(), du: null, dropped: new Map(), owned: [] };
      m = made;
      this.scratch.set(acts, made);
      // Released with the arena, when the model's activation cache evicts its shape.
      acts.onDestroy(() => this.releaseScratch(acts));
      try {
        for (const [layer, { bytes, offsets }] of this.layerLayout(acts.T)) {
          const buffer = this.gpu.createBuffer(bytes, undefined, `lora u ${layer}`);
          made.owned.push(buffer);
          for (const [name, offset] of offsets) made.u.set(name, { buffer, offset, size: acts.T * this.modules.get(name)!.rank * 4 });
        }
      } catch (e) {
        this.releaseScratch(acts); // no half-made set stays cached for the next step to trip on
        throw e;
      }
    }
    return m;
  }

  /** The gradient scratch du of every module, made on the first backward pass (inference arenas never need it). */
  private gradScratch(acts: Activations): Map<string, TensorView> {
    const scratch = this.buffers(acts);
    if (!scratch.du) {
      const layout = [...this.layerLayout(acts.T).values()];
      const buffer = this.gpu.createBuffer(Math.max(...layout.map((l) => l.bytes)), undefined, 'lora du');
      scratch.owned.push(buffer);
      scratch.du = new Map(layout.flatMap((l) => [...l.offsets].map(([name, offset]) => [name, { buffer, offset, size: acts.T * this.modules.get(name)!.rank * 4 }] as const)));
    }
    return scratch.du;
  }

  /** Each layer's modules ('layers.3' -> q, k, ...) at 256-byte offsets of one buffer of T rows of their ranks. */
  private layerLayout(T: number): Map<string, { bytes: number; offsets: Map<string, number> }> {
    const layers = new Map<string, { bytes: number; offsets: Map<string, number> }>();
    for (const [name, d] of this.modules) {
      const layer = name.replace(/\.[^.]+$/, '');
      const l = layers.get(layer) ?? { bytes: 0, offsets: new Map() };
      layers.set(layer, l);
      l.offsets.set(name, l.bytes);
      l.bytes += Math.ceil((T * d.rank * 4) / 256) * 256;
    }
    return layers;
  }

  private releaseScratch(acts: Activations): void {
    for (const b of this.scratch.get(acts)?.owned ?? []) this.gpu.destroyBuffer(b);
    this.scratch.delete(acts);
  }

  /** Records u = x' A^T (x' = dropout(x) while training) and returns the term s u B^T the layer adds. */
  outputTerm(rec: CommandRecorder, acts: Activations, name: string, x: TensorView, _outDim: number, inDim: number, pass: PassContext): LowRankTerm {
    const { rank: r, scale } = this.modules.get(name)!;
    const u = this.buffers(acts).u.get(name)!;
    const input = this.dropoutActive(pass) ? this.droppedInput(rec, acts, name, x, inDim, pass) : x;
    matmul(rec, { a: input, b: this.params.view(`${name}.lora_A`), c: u, M: acts.T, N: r, K: inDim, transB: true });
    return { u, v: this.params.view(`${name}.lora_B`), rank: r, transV: true, scale };
  }

  /**
   * Records dB += s dy^T u, du = s dy B and dA += du^T x', and returns the term mask(du A) the layer adds
   * to dx, where x' = dropout(x) with its mask regenerated from the same seed rather than stored.
   */
  inputGradTerm(rec: CommandRecorder, acts: Activations, name: string, x: TensorView, dy: TensorView, outDim: number, inDim: number, pass: PassContext): LowRankTerm {
    const { rank: r, scale } = this.modules.get(name)!;
    const T = acts.T;
    const u = this.buffers(acts).u.get(name)!;
    const du = this.gradScratch(acts).get(name)!;
    matmul(rec, { a: dy, b: u, c: this.grads.view(`${name}.lora_B`), M: outDim, N: r, K: T, transA: true, alpha: scale, accumulate: true });
    matmul(rec, { a: dy, b: this.params.view(`${name}.lora_B`), c: du, M: T, N: r, K: outDim, alpha: scale });
    const dropout = this.dropoutActive(pass) ? { p: this.options.dropout!, seed: this.dropoutSeed(name, pass) } : undefined;
    const input = dropout ? this.droppedInput(rec, acts, name, x, inDim, pass) : x;
    matmul(rec, { a: du, b: input, c: this.grads.view(`${name}.lora_A`), M: r, N: inDim, K: T, transA: true, accumulate: true });
    return { u: du, v: this.params.view(`${name}.lora_A`), rank: r, dropout };
  }

  /**
   * outputTerm of modules that read one input (q, k and v): their products x A^T in one grouped matmul.
   * While dropout applies, each module's input has its own mask, so each is recorded alone.
   */
  outputTerms(rec: CommandRecorder, acts: Activations, mods: { name: string; outDim: number }[], x: TensorView, inDim: number, pass: PassContext): LowRankTerm[] {
    if (this.dropoutActive(pass)) return mods.map((m) => this.outputTerm(rec, acts, m.name, x, m.outDim, inDim, pass));
    const u = this.buffers(acts).u;
    matmulGrouped(rec, mods.map(({ name }) => ({ c: u.get(name)!, M: acts.T, N: this.modules.get(name)!.rank, terms: [{ a: x, b: this.params.view(`${name}.lora_A`), transB: true, K: inDim }] })));
    return mods.map(({ name }) => ({ u: u.get(name)!, v: this.params.view(`${name}.lora_B`), rank: this.modules.get(name)!.rank, transV: true, scale: this.modules.get(name)!.scale }));
  }

  /**
   * inputGradTerm of modules that read one input: dB, du and dA of all of them in three grouped matmuls.
   * While dropout applies, each module alone (its own mask).
   */
  inputGradTerms(rec: CommandRecorder, acts: Activations, mods: { name: string; dy: TensorView; outDim: number }[], x: TensorView, inDim: number, pass: PassContext): LowRankTerm[] {
    if (this.dropoutActive(pass)) return mods.map((m) => this.inputGradTerm(rec, acts, m.name, x, m.dy, m.outDim, inDim, pass));
    const T = acts.T;
    const u = this.buffers(acts).u;
    const du = this.gradScratch(acts);
    const spec = (name: string) => this.modules.get(name)!;
    matmulGrouped(rec, mods.map(({ name, dy, outDim }) => ({ c: this.grads.view(`${name}.lora_B`), M: outDim, N: spec(name).rank, terms: [{ a: dy, transA: true, b: u.get(name)!, K: T, alpha: spec(name).scale }], accumulate: true })));
    matmulGrouped(rec, mods.map(({ name, dy, outDim }) => ({ c: du.get(name)!, M: T, N: spec(name).rank, terms: [{ a: dy, b: this.params.view(`${name}.lora_B`), K: outDim, alpha: spec(name).scale }] })));
    matmulGrouped(rec, mods.map(({ name }) => ({ c: this.grads.view(`${name}.lora_A`), M: spec(name).rank, N: inDim, terms: [{ a: du.get(name)!, transA: true, b: x, K: T }], accumulate: true })));
    return mods.map(({ name }) => ({ u: du.get(name)!, v: this.params.view(`${name}.lora_A`), rank: spec(name).rank }));
  }

  /** DoRA's column scale m / n; absent for plain LoRA (the transformer then applies none). */
  get outputScale(): ((rec: CommandRecorder, acts: Activations, name: string, outDim: number, pass: PassContext, phase: 'forward' | 'backward') => ColumnScale) | undefined {
    const dora = this.dora;
    return dora ? (rec, acts, name, _outDim, _pass, phase) => dora.outputScale(rec, acts, name, phase) : undefined;
  }

  /** A base weight written from outside: DoRA measures its row norms again. */
  baseWritten(names: string[]): void {
    this.dora?.baseWritten(names.filter((n) => n.endsWith('.weight')).map((n) => n.replace(/\.weight$/, '')));
  }

  /**
   * A module's A [r, in] and B [out, r] as another tool applies them to the original base: as trained,
   * or after PiSSA or OLoRA converted as PEFT converts them, [A; A0] and [B, -B0] of rank 2r.
   */
  async factors(name: string): Promise<{ A: Float32Array; B: Float32Array; rank: number }> {
    const { out, rank: r } = this.modules.get(name)!;
    const [A, B] = await Promise.all(['A', 'B'].map((t) => this.gpu.readF32(this.params.view(`${name}.lora_${t}`))));
    const start = this.initial?.get(name);
    if (!start) {
      if (initMutatesBase(this.options.init)) throw new Error(`this ${this.options.init} adapter was never initialized (FineTuner.create runs initialize())`);
      return { A, B, rank: r };
    }
    const b = new Float32Array(out * 2 * r);
    for (let o = 0; o < out; o++) {
      b.set(B.subarray(o * r, (o + 1) * r), o * 2 * r);
      for (let j = 0; j < r; j++) b[o * 2 * r + r + j] = -start.B[o * r + j];
    }
    const a = new Float32Array(2 * A.length);
    a.set(A);
    a.set(start.A, A.length);
    return { A: a, B: b, rank: 2 * r };
  }

  /** The adapter trains beside the base: take it out of the weights when merged. */
  readyToTrain(rec: CommandRecorder): void {
    this.setMerged(rec, false);
  }

  /** Fold s * B A into the base weights or take it back out. */
  setMerged(rec: CommandRecorder, merged: boolean): void {
    if (merged === this.merged) return;
    const base = this.base;
    if (!base) throw new Error('this LoRA adapter was made without access to base weights, so it cannot merge');
    // Every base weight is looked up before anything is recorded: a refusal leaves none half-merged.
    const targets = new Map([...this.modules.keys()].map((name) => [name, base.f32(`${name}.weight`)]));
    for (const [name, d] of this.modules) {
      const w = targets.get(name)!;
      // DoRA: W' = m / n ⊙ (W + s B A), so W = n / m ⊙ W' - s B A.
      if (!merged) this.dora?.unmerge(rec, name, w);
      matmul(rec, {
        a: this.params.view(`${name}.lora_B`), b: this.params.view(`${name}.lora_A`), c: w,
        M: d.out, N: d.in, K: d.rank, alpha: merged ? d.scale : -d.scale, accumulate: true,
      });
      if (merged) this.dora?.merge(rec, name, w);
    }
    this.merged = merged;
  }

  /**
   * The change to base weight `weight` ('layers.0.q.weight'), written to `out`: s B A, or with DoRA
   * m / n ⊙ (W + s B A) - W, for which `base` (W in f32) is read, the model's own f32 weight by default
   * (merged or not).
   * False for a weight it does not adapt.
   */
  deltaWeight(rec: CommandRecorder, weight: string, out: TensorView, base?: TensorView): boolean {
    const name = weight.replace(/\.weight$/, '');
    const d = this.modules.get(name);
    if (!d || !weight.endsWith('.weight')) return false;
    // The model's own weight holds the merged one while merged.
    const w = this.dora ? base ?? this.base?.f32(weight) : undefined;
    if (this.dora && !w) throw new Error('DoRA\'s delta needs the base weight');
    matmul(rec, { a: this.params.view(`${name}.lora_B`), b: this.params.view(`${name}.lora_A`), c: out, M: d.out, N: d.in, K: d.rank, alpha: d.scale });
    if (this.dora) this.dora.delta(rec, name, out, w!, !base && this.merged);
    return true;
  }

  zeroGrads(rec: CommandRecorder): void {
    for (const b of this.grads.buffers) rec.clear(b);
  }

  destroy(): void {
    this.dora?.destroy();
    this.params.destroy();
    this.grads.destroy();
    for (const acts of [...this.scratch.keys()]) this.releaseScratch(acts);
  }
}

/** A LoRA's buffers for one activation arena. */
interface LoraScratch {
  /** x A^T of each module, kept for the backward pass. */
  u: Map<string, TensorView>;
  /** du of each module (one layer's worth, reused by every layer); null until a backward pass. */
  du: Map<string, TensorView> | null;
  /** Dropped inputs by input width. */
  dropped: Map<number, GPUBuffer>;
  /** Every buffer above, released with the arena. */
  owned: GPUBuffer[];
}
