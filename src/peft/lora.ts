/**
 * LoRA (Hu et al.; Hugging Face PEFT conventions): for each targeted linear layer, y += s * (x A^T) B^T
 * with A [r, in], B [out, r], s = alpha / r; A starts kaiming-uniform (bound 1 / sqrt(in), PEFT's
 * kaiming_uniform_(a=sqrt(5))) and B at zero, so an attached adapter leaves the model's output unchanged.
 * Merging adds s * B A into the base weight (then the adapter path is skipped); unmerging subtracts it.
 */
import { ShapeError } from '../errors.js';
import type { TensorView } from '../gpu/buffers.js';
import type { Gpu } from '../gpu/gpu.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { elementwise } from '../kernels/elementwise.js';
import { matmul, type LowRankTerm } from '../kernels/matmul.js';
import { Arena, arenaLimit, planArena } from '../model/arena.js';
import type { ModelConfig } from '../model/config.js';
import { hfMappings, paramSpecs } from '../model/layout.js';
import type { Activations, LinearAdapter } from '../model/transformer.js';
import { hash32, rng } from '../util/random.js';

export interface LoraOptions {
  rank: number;
  /** Scale numerator: s = alpha / rank. Default 2 * rank. */
  alpha?: number;
  /**
   * Linear layers to adapt, by engine name (q, k, v, o, gate, up, down, fc, proj) or Hugging Face module
   * name (q_proj, ..., down_proj). Default q and v, PEFT's default for Llama.
   */
  targetModules?: string[];
  /** Dropout on the adapter's input while training (PEFT's lora_dropout). Default 0. */
  dropout?: number;
  seed?: number;
  /**
   * Fuse the adapter's path into the base layer's matmul (its store adds s (x A^T) B^T, and du A in
   * backward) rather than running it as a separate pass over the output. Default true.
   */
  fused?: boolean;
}

const ALIASES: Record<string, string> = {
  q_proj: 'q', k_proj: 'k', v_proj: 'v', o_proj: 'o', gate_proj: 'gate', up_proj: 'up', down_proj: 'down', c_fc: 'fc', out_proj: 'o',
};

export class Lora implements LinearAdapter {
  readonly params: Arena;
  readonly grads: Arena;
  readonly scale: number;
  readonly modules: Map<string, { out: number; in: number }>;
  readonly fused: boolean;
  merged = false;
  /** Dropout applies only while true (set by the trainer around training passes). */
  training = false;
  /** Training passes so far: each draws new dropout masks from it, so resuming restores it (exact resume). */
  round = 0;
  private readonly moduleIndex = new Map<string, number>();
  /**
   * Engine module -> Hugging Face module path (layers.0.q -> model.layers.0.self_attn.q_proj), from the
   * model's weight mappings. Only weights that map one to one: GPT-2's q, k and v are one fused c_attn
   * in Hugging Face, so separate adapters on them have no PEFT name.
   */
  private readonly hfModules: Map<string, string>;
  /** Per activation arena: x A^T of every module, the shared gradient scratch and dropped inputs. */
  private readonly scratch = new Map<Activations, Map<string, GPUBuffer>>();

  constructor(
    private readonly gpu: Gpu,
    readonly config: ModelConfig,
    readonly options: LoraOptions,
  ) {
    const r = options.rank;
    this.modules = Lora.check(config, options);
    this.scale = (options.alpha ?? 2 * r) / r;
    this.fused = options.fused ?? true;
    [...this.modules.keys()].forEach((name, i) => this.moduleIndex.set(name, i));
    const weight = (n: string) => n.endsWith('.weight');
    const module = (n: string) => n.slice(0, -'.weight'.length);
    this.hfModules = new Map(
      hfMappings(config)
        .filter((m) => m.parts.length === 1 && weight(m.parts[0]) && weight(m.hfName))
        .map((m) => [module(m.parts[0]), module(m.hfName)]),
    );
    const tensors = [...this.modules].flatMap(([name, d]) => [
      { name: `${name}.lora_A`, length: r * d.in },
      { name: `${name}.lora_B`, length: d.out * r },
    ]);
    const layout = planArena(tensors, arenaLimit(gpu));
    this.params = new Arena(gpu, layout, 'lora');
    try {
      this.grads = new Arena(gpu, layout, 'lora grads');
    } catch (e) {
      this.params.destroy();
      throw e;
    }
    const rand = rng(options.seed ?? 0);
    for (const [name, d] of this.modules) {
      const bound = 1 / Math.sqrt(d.in);
      gpu.write(this.params.view(`${name}.lora_A`), Float32Array.from({ length: r * d.in }, () => (2 * rand() - 1) * bound));
      gpu.write(this.params.view(`${name}.lora_B`), new Float32Array(d.out * r));
    }
  }

  /**
   * Validates options against a model config without allocating anything (so a bad rank or target fails
   * before a model is loaded) and returns the adapted modules with their shapes.
   */
  static check(config: ModelConfig, options: LoraOptions): Map<string, { out: number; in: number }> {
    const r = options.rank;
    if (!Number.isInteger(r) || r < 1) throw new ShapeError(`LoRA rank must be a positive integer, got ${r}`);
    const p = options.dropout ?? 0;
    if (!(p >= 0 && p < 1)) throw new ShapeError(`LoRA dropout must be in [0, 1), got ${p}`);
    if (options.alpha !== undefined && !(Number.isFinite(options.alpha) && options.alpha > 0)) throw new ShapeError(`LoRA alpha must be a positive number, got ${options.alpha}`);
    const targets = new Set((options.targetModules ?? ['q', 'v']).map((m) => ALIASES[m] ?? m));
    const modules = new Map<string, { out: number; in: number }>();
    for (const spec of paramSpecs(config)) {
      const m = /^(layers\.\d+\.(\w+))\.weight$/.exec(spec.name);
      if (m && targets.has(m[2])) modules.set(m[1], { out: spec.shape[0], in: spec.shape[1] });
    }
    const found = new Set([...modules.keys()].map((k) => k.split('.')[2]));
    const missing = [...targets].filter((t) => !found.has(t));
    if (missing.length) throw new ShapeError(`LoRA target modules ${missing.map((m) => `'${m}'`).join(', ')} do not exist in ${config.architecture}`);
    return modules;
  }

  get names(): string[] {
    return [...this.params.layout.slots.keys()];
  }

  /**
   * PEFT's name for an adapter tensor, e.g. layers.0.q.lora_A -> base_model.model.model.layers.0.
   * self_attn.q_proj.lora_A.weight (shapes as PEFT: A [r, in], B [out, r]); null when PEFT has none.
   */
  peftName(name: string): string | null {
    const m = /^(layers\.\d+\.\w+)\.(lora_[AB])$/.exec(name);
    const hf = m && this.hfModules.get(m[1]);
    return hf ? `base_model.model.${hf}.${m![2]}.weight` : null;
  }

  /** The engine name of a PEFT tensor name (inverse of peftName), or null. */
  fromPeftName(peft: string): string | null {
    return this.names.find((n) => this.peftName(n) === peft) ?? null;
  }

  /** A new dropout mask for every module: call once per training forward/backward pair. */
  beginStep(): void {
    this.round++;
  }

  /** The dropout mask seed of a module in the current step (the same in forward and backward). */
  dropoutSeed(name: string): number {
    return hash32(Math.imul((this.options.seed ?? 0) + 1, 0x9e3779b1) ^ Math.imul(this.round, 0x85ebca6b) ^ this.moduleIndex.get(name)!);
  }

  private get dropoutActive(): boolean {
    return this.training && (this.options.dropout ?? 0) > 0;
  }

  /** dropout(x) with this module's mask for the current step, in a per-shape buffer shared by the modules of that input width. */
  private droppedInput(rec: CommandRecorder, acts: Activations, name: string, x: TensorView, inDim: number): GPUBuffer {
    const bufs = this.buffers(acts);
    const key = `xd:${inDim}`;
    let xd = bufs.get(key);
    if (!xd) bufs.set(key, (xd = this.gpu.createBuffer(acts.T * inDim * 4, undefined, `lora ${key}`)));
    elementwise(rec, { op: 'dropout', y: xd, x, n: acts.T * inDim, dropout: { p: this.options.dropout!, seed: this.dropoutSeed(name) } });
    return xd;
  }

  has(name: string): boolean {
    return !this.merged && this.modules.has(name);
  }

  /** Per-shape buffers: x A^T for every module (kept for backward) and one shared gradient scratch. */
  private buffers(acts: Activations): Map<string, GPUBuffer> {
    let m = this.scratch.get(acts);
    if (!m) {
      const made = new Map<string, GPUBuffer>();
      m = made;
      this.scratch.set(acts, made);
      // Released with the arena, when the model's activation cache evicts its shape.
      acts.onDestroy(() => this.releaseScratch(acts));
      try {
        for (const name of this.modules.keys()) made.set(name, this.gpu.createBuffer(acts.T * this.options.rank * 4, undefined, `lora u ${name}`));
        made.set('du', this.gpu.createBuffer(acts.T * this.options.rank * 4, undefined, 'lora du'));
      } catch (e) {
        this.releaseScratch(acts); // no half-made set stays cached for the next step to trip on
        throw e;
      }
    }
    return m;
  }

  private releaseScratch(acts: Activations): void {
    for (const b of this.scratch.get(acts)?.values() ?? []) this.gpu.destroyBuffer(b);
    this.scratch.delete(acts);
  }

  /** Records u = x' A^T (x' = dropout(x) while training) and returns the term s u B^T the layer adds. */
  forward(rec: CommandRecorder, acts: Activations, name: string, x: TensorView, _outDim: number, inDim: number): LowRankTerm {
    const r = this.options.rank;
    const u = this.buffers(acts).get(name)!;
    const input = this.dropoutActive ? this.droppedInput(rec, acts, name, x, inDim) : x;
    matmul(rec, { a: input, b: this.params.view(`${name}.lora_A`), c: u, M: acts.T, N: r, K: inDim, transB: true });
    return { u, v: this.params.view(`${name}.lora_B`), rank: r, transV: true, scale: this.scale };
  }

  /**
   * Records dB += s dy^T u, du = s dy B and dA += du^T x', and returns the term mask(du A) the layer adds
   * to dx, where x' = dropout(x) with its mask regenerated from the same seed rather than stored.
   */
  backward(rec: CommandRecorder, acts: Activations, name: string, x: TensorView, dy: TensorView, outDim: number, inDim: number): LowRankTerm {
    const r = this.options.rank;
    const T = acts.T;
    const bufs = this.buffers(acts);
    const u = bufs.get(name)!;
    const du = bufs.get('du')!;
    matmul(rec, { a: dy, b: u, c: this.grads.view(`${name}.lora_B`), M: outDim, N: r, K: T, transA: true, alpha: this.scale, accumulate: true });
    matmul(rec, { a: dy, b: this.params.view(`${name}.lora_B`), c: du, M: T, N: r, K: outDim, alpha: this.scale });
    const dropout = this.dropoutActive ? { p: this.options.dropout!, seed: this.dropoutSeed(name) } : undefined;
    const input = dropout ? this.droppedInput(rec, acts, name, x, inDim) : x;
    matmul(rec, { a: du, b: input, c: this.grads.view(`${name}.lora_A`), M: r, N: inDim, K: T, transA: true, accumulate: true });
    return { u: du, v: this.params.view(`${name}.lora_A`), rank: r, dropout };
  }

  /** Fold s * B A into the base weights (param(name) gives each base weight) or take it back out. */
  setMerged(rec: CommandRecorder, merged: boolean, baseWeight: (name: string) => TensorView): void {
    if (merged === this.merged) return;
    for (const [name, d] of this.modules) {
      matmul(rec, {
        a: this.params.view(`${name}.lora_B`), b: this.params.view(`${name}.lora_A`), c: baseWeight(`${name}.weight`),
        M: d.out, N: d.in, K: this.options.rank, alpha: merged ? this.scale : -this.scale, accumulate: true,
      });
    }
    this.merged = merged;
  }

  zeroGrads(rec: CommandRecorder): void {
    for (const b of this.grads.buffers) rec.clear(b);
  }

  destroy(): void {
    this.params.destroy();
    this.grads.destroy();
    for (const acts of [...this.scratch.keys()]) this.releaseScratch(acts);
  }
}
