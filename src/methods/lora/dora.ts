/**
 * DoRA (Liu et al., weight-decomposed low-rank adaptation; PEFT's use_dora, peft/tuners/lora/dora.py):
 * each adapted weight is split into a magnitude m [out] and a direction W + s B A, so
 *   y = m / n ⊙ (x W^T + s (x A^T) B^T) + b,   n_j = ‖W_j + s (B A)_j‖,
 * with n treated as a constant in the backward pass (the paper's section 4.3, as PEFT detaches it): the
 * layer's gradients flow through dy ⊙ m / n, and dm = Σ_tokens dy ⊙ z / n. m starts at n (PEFT's
 * update_layer), so an attached adapter changes nothing. The layer applies the scale through the
 * outputScale hook; n is recomputed every pass from the products A W^T and A A^T, which run the base
 * layer's own product, so f32, 16-bit and 4-bit bases (QDoRA) are one path. Merging writes
 * m / n ⊙ (W + s B A) into an f32 base and keeps n for unmerging, as PEFT's merge does.
 */
import type { TensorView } from '../../gpu/buffers.js';
import type { Gpu } from '../../gpu/gpu.js';
import type { CommandRecorder } from '../../gpu/recorder.js';
import { columnSumSquares, doraNorm, doraRowRescale, identityChunk } from '../../kernels/dora.js';
import { matmul } from '../../kernels/matmul.js';
import type { Activations } from '../../model/activations.js';
import type { Arena } from '../../model/arena.js';
import { linearProduct, type LinearWeight } from '../../model/linear-weights.js';
import type { ColumnScale } from '../method.js';
import type { LoraModuleSpec } from './config.js';

/** Rows of the identity pushed through a weight's product at a time when measuring its row norms. */
const IDENTITY_ROWS = 256;

export class Dora {
  /** ‖W_j‖² of each module's base weight, measured once. */
  private readonly weightSquares = new Map<string, GPUBuffer>();
  /** This pass's n and m / n per module (a pass's backward reads what its forward wrote). */
  private readonly norms = new Map<string, GPUBuffer>();
  private readonly scales = new Map<string, GPUBuffer>();
  /** n at merge time, which unmerging divides back out. */
  private readonly mergedNorms = new Map<string, GPUBuffer>();
  /** A W^T and A A^T of the module being scaled, sized for the largest. */
  private readonly P: GPUBuffer;
  private readonly G: GPUBuffer;
  /** Per training arena: each module's unscaled output z (for dm) and the shared dz. */
  private readonly saved = new Map<Activations, Map<string, GPUBuffer>>();

  constructor(
    private readonly gpu: Gpu,
    private readonly modules: Map<string, LoraModuleSpec>,
    private readonly params: Arena,
    private readonly grads: Arena,
    private readonly baseLinear: (name: string) => LinearWeight,
  ) {
    const specs = [...modules.values()];
    const maxR = Math.max(...specs.map((d) => d.rank));
    const maxOut = Math.max(...specs.map((d) => d.out));
    const made: GPUBuffer[] = [];
    const buffer = (bytes: number, label: string) => {
      const b = gpu.createBuffer(bytes, undefined, label);
      made.push(b);
      return b;
    };
    try {
      this.P = buffer(maxR * maxOut * 4, 'dora A W^T');
      this.G = buffer(maxR * maxR * 4, 'dora A A^T');
      for (const [name, d] of modules) {
        this.weightSquares.set(name, buffer(d.out * 4, `dora ‖W‖² ${name}`));
        this.norms.set(name, buffer(d.out * 4, `dora n ${name}`));
        this.scales.set(name, buffer(d.out * 4, `dora m/n ${name}`));
        this.mergedNorms.set(name, buffer(d.out * 4, `dora merged n ${name}`));
      }
    } catch (e) {
      for (const b of made) gpu.destroyBuffer(b);
      throw e;
    }
  }

  /**
   * Measures ‖W_j‖² of every base weight (through its product, over chunks of the identity) and sets
   * m = ‖W + s B A‖ for the adapter as it now is (B = 0 at a fresh start: m = ‖W‖).
   */
  initialize(): void {
    this.measure([...this.modules.keys()], true);
  }

  /** Measures ‖W_j‖² again for modules whose base weight changed (m stays as trained). */
  baseWritten(modules: string[]): void {
    this.measure(modules.filter((name) => this.modules.has(name)), false);
  }

  private measure(names: string[], setMagnitude: boolean): void {
    if (!names.length) return;
    const rec = this.gpu.recorder();
    const specs = names.map((name) => this.modules.get(name)!);
    const rows = Math.min(IDENTITY_ROWS, Math.max(...specs.map((d) => d.in)));
    const eye = this.gpu.createBuffer(rows * Math.max(...specs.map((d) => d.in)) * 4, undefined, 'dora identity');
    const out = this.gpu.createBuffer(rows * Math.max(...specs.map((d) => d.out)) * 4, undefined, 'dora identity product');
    try {
      for (const name of names) {
        const d = this.modules.get(name)!;
        const w = this.baseLinear(`${name}.weight`);
        rec.clear(this.weightSquares.get(name)!);
        for (let offset = 0; offset < d.in; offset += rows) {
          const M = Math.min(rows, d.in - offset);
          identityChunk(rec, { x: eye, rows: M, cols: d.in, offset });
          linearProduct(rec, w, { x: eye, y: out, M, N: d.out, K: d.in });
          columnSumSquares(rec, { x: out, sums: this.weightSquares.get(name)!, rows: M, cols: d.out });
        }
        if (setMagnitude) this.columnNorm(rec, name, d, true);
      }
      void rec.submit(); // untimed: resolves at once; errors surface at the next device call
    } finally {
      // Destroying right after submitting is safe: WebGPU keeps a buffer until submitted work using it ran.
      this.gpu.destroyBuffer(eye);
      this.gpu.destroyBuffer(out);
    }
  }

  /** n = ‖W + s B A‖ of a module into its norm buffer, and m / n into its scale (initializing: m = n). */
  private columnNorm(rec: CommandRecorder, name: string, d: LoraModuleSpec, initialize = false): void {
    const A = this.params.view(`${name}.lora_A`);
    linearProduct(rec, this.baseLinear(`${name}.weight`), { x: A, y: this.P, M: d.rank, N: d.out, K: d.in });
    matmul(rec, { a: A, b: A, c: this.G, M: d.rank, N: d.rank, K: d.in, transB: true });
    const magnitude = this.params.view(`${name}.lora_magnitude`);
    doraNorm(rec, {
      weightSquares: this.weightSquares.get(name)!, P: this.P, G: this.G, B: this.params.view(`${name}.lora_B`),
      magnitude, norm: this.norms.get(name)!, scale: initialize ? null : this.scales.get(name)!,
      N: d.out, R: d.rank, s: d.scale,
    });
    // Copied rather than written in place: m shares the adapter's buffer with the B the kernel reads.
    if (initialize) rec.copy(this.norms.get(name)!, magnitude);
  }

  /** The layer's column scale m / n: computed in the forward pass, read again (with dz and dm) in the backward. */
  outputScale(rec: CommandRecorder, acts: Activations, name: string, phase: 'forward' | 'backward'): ColumnScale {
    const d = this.modules.get(name)!;
    if (phase === 'forward') this.columnNorm(rec, name, d);
    const scale = this.scales.get(name)!;
    if (!acts.grad) return { scale };
    const bufs = this.arenaBuffers(acts);
    const saved = bufs.get(name)!;
    if (phase === 'forward') return { scale, saved };
    return { scale, saved, dz: bufs.get('dz')!, scaleGrad: this.grads.view(`${name}.lora_magnitude`), scaleGradDivisor: this.norms.get(name)! };
  }

  private arenaBuffers(acts: Activations): Map<string, GPUBuffer> {
    let m = this.saved.get(acts);
    if (!m) {
      const made = new Map<string, GPUBuffer>();
      m = made;
      this.saved.set(acts, made);
      acts.onDestroy(() => this.release(acts));
      try {
        for (const [name, d] of this.modules) made.set(name, this.gpu.createBuffer(acts.T * d.out * 4, undefined, `dora z ${name}`));
        made.set('dz', this.gpu.createBuffer(acts.T * Math.max(...[...this.modules.values()].map((d) => d.out)) * 4, undefined, 'dora dz'));
      } catch (e) {
        this.release(acts);
        throw e;
      }
    }
    return m;
  }

  private release(acts: Activations): void {
    for (const b of this.saved.get(acts)?.values() ?? []) this.gpu.destroyBuffer(b);
    this.saved.delete(acts);
  }

  /** After W += s B A: W = m / ‖W‖ ⊙ W per row, the norm kept for unmerging. */
  merge(rec: CommandRecorder, name: string, w: TensorView): void {
    const d = this.modules.get(name)!;
    doraRowRescale(rec, 'merge', { w, magnitude: this.params.view(`${name}.lora_magnitude`), norm: this.mergedNorms.get(name)!, rows: d.out, cols: d.in });
  }

  /** Before W -= s B A: W = n / m ⊙ W per row, n as merged. */
  unmerge(rec: CommandRecorder, name: string, w: TensorView): void {
    const d = this.modules.get(name)!;
    doraRowRescale(rec, 'unmerge', { w, magnitude: this.params.view(`${name}.lora_magnitude`), norm: this.mergedNorms.get(name)!, rows: d.out, cols: d.in });
  }

  /**
   * `out` holds s B A; it becomes the merged weight minus the base: m / n ⊙ (W + s B A) - W, from the
   * base W, or from the merged weight W' when `merged`.
   */
  delta(rec: CommandRecorder, name: string, out: TensorView, base: TensorView, merged: boolean): void {
    const d = this.modules.get(name)!;
    doraRowRescale(rec, merged ? 'merged delta' : 'delta', { w: out, magnitude: this.params.view(`${name}.lora_magnitude`), norm: this.mergedNorms.get(name)!, base, rows: d.out, cols: d.in });
  }

  destroy(): void {
    for (const map of [this.weightSquares, this.norms, this.scales, this.mergedNorms]) for (const b of map.values()) this.gpu.destroyBuffer(b);
    this.gpu.destroyBuffer(this.P);
    this.gpu.destroyBuffer(this.G);
    for (const acts of [...this.saved.keys()]) this.release(acts);
  }
}
