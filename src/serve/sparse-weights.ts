/**
 * Sparse adapters served inside a base's own weights, one at a time. A resident sparse adapter keeps,
 * per module, its indices, its trained values and the base's values there, each in an arena of its own
 * (a kernel reads one and writes another). Switching scatters the base's values back where the active
 * adapter was, then the next one's values in, so the base returns bit for bit. On a 16-bit base the
 * weights hold the values rounded, as in training.
 */
import { ShapeError } from '../errors.js';
import type { TensorView } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { elementwise } from '../kernels/elementwise.js';
import type { WeightFormat } from '../kernels/matmul.js';
import { sparseGather, sparseScatter } from '../kernels/sparse.js';
import { Arena, bindingLimit, planArena } from '../model/arena.js';
import type { CausalLM } from '../model/causal-lm.js';
import { isDense } from '../model/linear-weights.js';
import type { LinearShape } from '../methods/targets.js';
import type { SparseAdapter } from './adapters.js';

export interface ResidentSparse {
  /** Each module with its value count (the host arrays may leave memory while these stay). */
  readonly modules: [string, number][];
  readonly idx: Arena;
  readonly values: Arena;
  readonly originals: Arena;
  readonly bytes: number;
}

/** The layout of each of a sparse adapter's three arenas. */
function layout(a: SparseAdapter, limit: number) {
  return planArena([...a.modules].map(([m, d]) => ({ name: m, length: d.indices.length })), limit);
}

/** GPU bytes of a resident sparse adapter, as its arenas allocate them. */
export function sparseAdapterBytes(a: SparseAdapter): number {
  return 3 * layout(a, Infinity).bufferBytes.reduce((n, b) => n + Math.max(b, 256), 0);
}

export function destroyResidentSparse(s: ResidentSparse): void {
  for (const a of [s.idx, s.values, s.originals]) a.destroy();
}

export class SparseWeights {
  /** The adapter whose values are in the weights now, or null (the base's own). */
  active: ResidentSparse | null = null;

  constructor(
    private readonly model: CausalLM,
    /** Every linear layer's shape, by module. */
    private readonly shapes: ReadonlyMap<string, LinearShape>,
  ) {}

  /** A weight a sparse adapter writes into: dense (f32 or 16-bit), or a ShapeError. */
  weight(module: string): { view: TensorView; format: WeightFormat; size: number } {
    const w = this.model.linearWeight(`${module}.weight`);
    if (!isDense(w)) throw new ShapeError(`a sparse adapter changes the weights in place, and '${module}' is stored ${w.format}: serve sparse adapters from a base loaded without quantize`);
    const s = this.shapes.get(module)!;
    return { view: w.view, format: w.format, size: s.out * s.in };
  }

  /**
   * Indices and delta uploaded; then, with the base's own values in the weights (the active adapter
   * taken out and put back around it), the base's values gathered and the trained values made from them.
   */
  upload(id: string, a: SparseAdapter): ResidentSparse {
    const gpu = this.model.gpu;
    const plan = layout(a, bindingLimit(gpu).bytes);
    const made: Arena[] = [];
    try {
      for (const part of ['indices', 'values', 'originals']) made.push(new Arena(gpu, plan, `sparse adapter ${id} ${part}`));
      const [idx, values, originals] = made;
      for (const [m, d] of a.modules) {
        gpu.write(idx.view(m), d.indices);
        gpu.write(values.view(m), d.delta);
      }
      const rec = gpu.recorder();
      if (this.active) this.scatter(rec, this.active, 'originals');
      for (const [m, d] of a.modules) {
        const w = this.weight(m);
        sparseGather(rec, { indices: idx.view(m), nnz: d.indices.length, values: originals.view(m), weight: w.view, weightSize: w.size, weightFormat: w.format });
        elementwise(rec, { op: 'axpy', y: values.view(m), x: originals.view(m), n: d.indices.length, s0: 1 });
      }
      if (this.active) this.scatter(rec, this.active, 'values');
      void rec.submit();
      return { modules: [...a.modules].map(([m, d]) => [m, d.indices.length]), idx, values, originals, bytes: sparseAdapterBytes(a) };
    } catch (e) {
      for (const arena of made) arena.destroy();
      throw e;
    }
  }

  /** Put `next`'s values into the weights (null: the base's), after writing the base's back where the active one was. */
  switchTo(next: ResidentSparse | null): void {
    if (this.active === next) return;
    const rec = this.model.gpu.recorder();
    if (this.active) this.scatter(rec, this.active, 'originals');
    if (next) this.scatter(rec, next, 'values');
    void rec.submit();
    this.active = next;
  }

  private scatter(rec: CommandRecorder, s: ResidentSparse, which: 'values' | 'originals'): void {
    for (const [m, nnz] of s.modules) {
      const w = this.weight(m);
      sparseScatter(rec, { indices: s.idx.view(m), nnz, values: s[which].view(m), weight: w.view, weightSize: w.size, weightFormat: w.format });
    }
  }
}
