/**
 * Frozen linear weights stored 4-bit, the base of QLoRA: group-wise int4 or NF4 (formats documented in
 * shaders/int4.wgsl and shaders/nf4.wgsl). Each weight is quantized on the GPU as it is written, through
 * one f32 staging buffer, so loading streams tensor by tensor and peaks near one f32 tensor above the
 * quantized model. The transformer reads them with the fused 4-bit products (x·dequant(W)ᵀ forward and
 * dy·dequant(W) backward); nothing else ever widens them in GPU memory.
 *
 * A 4-bit checkpoint (quantizedModelFiles) stores the packed arrays as they are on the GPU, so it loads
 * with no quantization pass: config.json gains "quantization_config": {"quant_method":
 * "webgpu-finetune", "format": "nf4" | "int4", "group_size": G} (with "double_quant": true for
 * double-quantized NF4, "zero_bias": 1 for int4 from GPTQ), and each linear weight `<module>.weight`
 * is replaced by `<module>.qweight` (U32 [out, ceil(in / 8)]) with `<module>.absmax` (NF4: F32
 * [out, ceil(in / 64)], or U32 [words] double-quantized) or `<module>.scales` (U32
 * [out, ceil(ceil(in / G) / 2)]) and `<module>.zeros` (U32 [out, ceil(ceil(in / G) / 8)]) (int4), in the
 * layouts the shaders document, rows in [out, in] order (GPT-2's Conv1D weights transposed). GPTQ
 * checkpoints load too (model/gptq.ts). A weight Hugging Face fuses (GPT-2's c_attn) stores each
 * part under `<module>.<part>` (q, k, v). Every other tensor stays as in a Hugging Face checkpoint.
 */
import { ShapeError } from '../errors.js';
import type { Gpu } from '../gpu/gpu.js';
import { checkOptionKeys } from '../util/options.js';
import { INT4_GROUP_SIZES, int4Bytes, int4Layout, quantizeInt4, type Int4GroupSize, type Int4ZeroBias } from '../kernels/int4.js';
import { nf4Bytes, nf4Layout, nf4Quantizable, quantizeNf4, type Nf4Codes, type Nf4LayoutOptions } from '../kernels/nf4.js';
import { dequantizeQ4, type Q4Weight } from '../kernels/q4-matmul.js';
import type { ModelConfig, StoredQuantization } from './config.js';
import { bitsandbytesModules } from './bitsandbytes.js';
import { gptqModules } from './gptq.js';
import { paramSpecs } from './layout.js';
import { linearMappings } from './linear-weights.js';

export type QuantFormat = 'int4' | 'nf4';
export const QUANT_FORMATS: readonly QuantFormat[] = ['int4', 'nf4'];

/**
 * How to quantize a frozen base: a format, int4 with its group size along K (default 64), or NF4 with
 * double quantization of its absmax (QLoRA's: 8 bits per block instead of 32).
 */
export type QuantizeOption = QuantFormat | { format: 'int4'; groupSize?: Int4GroupSize } | { format: 'nf4'; doubleQuant?: boolean };

export interface ResolvedQuantization {
  format: QuantFormat;
  groupSize: Int4GroupSize;
  zeroBias: Int4ZeroBias;
  doubleQuant: boolean;
  /** A bitsandbytes checkpoint's NF4 or FP4, in its layout (model/bitsandbytes.ts); null otherwise. */
  bitsandbytes: Nf4Codes | null;
}

/** A user's quantize option has only keys it knows, and no group size NF4 would ignore. */
export function checkQuantizeOptionKeys(q: QuantizeOption | undefined): void {
  if (typeof q !== 'object' || q === null) return;
  checkOptionKeys('quantize', q, ['format', 'groupSize', 'doubleQuant']);
  if (q.format === 'nf4' && 'groupSize' in q && q.groupSize !== undefined) throw new ShapeError('groupSize applies to int4; NF4 always quantizes blocks of 64 values');
}

/** A quantize option resolved, or a checkpoint's stored quantization (which may carry a zero bias). */
export function checkQuantizeOption(q: QuantizeOption | StoredQuantization): ResolvedQuantization {
  const format = typeof q === 'string' ? q : q?.format;
  if (!QUANT_FORMATS.includes(format)) throw new ShapeError(`quantize must be ${QUANT_FORMATS.map((f) => `'${f}'`).join(' or ')}, got '${String(format).slice(0, 40)}'`);
  const groupSize = (typeof q === 'object' && 'groupSize' in q ? q.groupSize : undefined) ?? 64;
  if (!INT4_GROUP_SIZES.includes(groupSize)) throw new ShapeError(`int4 group size must be one of ${INT4_GROUP_SIZES.join(', ')}, got ${groupSize}`);
  const zeroBias = typeof q === 'object' && 'zeroBias' in q ? q.zeroBias : 0;
  const doubleQuant = typeof q === 'object' && 'doubleQuant' in q ? q.doubleQuant ?? false : false;
  if (typeof doubleQuant !== 'boolean') throw new ShapeError(`doubleQuant must be true or false, got '${String(doubleQuant).slice(0, 40)}'`);
  if (doubleQuant && format !== 'nf4') throw new ShapeError('double quantization applies to nf4 (its absmax); int4 stores f16 scales');
  const bitsandbytes = typeof q === 'object' && 'packing' in q && q.packing === 'bitsandbytes' ? q.codes ?? 'nf4' : null;
  return { format, groupSize, zeroBias, doubleQuant, bitsandbytes };
}

/** The NF4 layout options of a weight stored this way (a bitsandbytes part carries its place in the whole). */
export function nf4Options(q: ResolvedQuantization, part?: QuantizedPart): Nf4LayoutOptions {
  if (q.bitsandbytes && !part?.bitsandbytes) throw new Error(`unreachable: a bitsandbytes weight's layout comes with its part ('${part?.part}')`);
  return { doubleQuant: q.doubleQuant, ...(q.bitsandbytes ? { bitsandbytes: part!.bitsandbytes } : {}) };
}

/** A packed array of a 4-bit checkpoint: its tensor name, which array it is, shape and dtype. */
export interface PackedTensorSpec {
  name: string;
  array: 'qweight' | 'absmax' | 'scales' | 'zeros';
  shape: number[];
  dtype: 'U32' | 'F32';
}

/** Every linear weight of a 4-bit checkpoint: the Hugging Face weight it replaces, its engine part and its packed tensors. */
export function packedTensors(config: ModelConfig, q: { format: QuantFormat; groupSize: number; doubleQuant?: boolean }): { hfName: string; part: string; tensors: PackedTensorSpec[] }[] {
  const shapes = new Map(paramSpecs(config).map((s) => [s.name, s.shape]));
  const out: { hfName: string; part: string; tensors: PackedTensorSpec[] }[] = [];
  for (const m of linearMappings(config)) {
    const module = m.hfName.replace(/\.weight$/, '');
    for (const part of m.parts) {
      const [N, K] = shapes.get(part)!;
      const prefix = m.parts.length === 1 ? module : `${module}.${part.split('.')[2]}`;
      const spec = (array: PackedTensorSpec['array'], cols: number, dtype: PackedTensorSpec['dtype'] = 'U32'): PackedTensorSpec => ({ name: `${prefix}.${array}`, array, shape: [N, cols], dtype });
      if (q.format === 'nf4') {
        const l = nf4Layout(N, K, { doubleQuant: q.doubleQuant });
        // Double-quantized, absmax is one array of words for the whole weight.
        const absmax: PackedTensorSpec = l.doubleQuant ? { name: `${prefix}.absmax`, array: 'absmax', shape: [l.absmaxWords], dtype: 'U32' } : spec('absmax', l.blocksPerRow, 'F32');
        out.push({ hfName: m.hfName, part, tensors: [spec('qweight', l.wordsPerRow), absmax] });
      } else {
        const l = int4Layout(N, K, q.groupSize);
        out.push({ hfName: m.hfName, part, tensors: [spec('qweight', l.wordsPerRow), spec('scales', l.scaleWordsPerRow), spec('zeros', l.zeroWordsPerRow)] });
      }
    }
  }
  return out;
}

type PackedArrays = Partial<Record<PackedTensorSpec['array'], Uint32Array | Float32Array>>;

/** An engine weight a quantized module becomes; a bitsandbytes part carries its NF4 layout's options. */
export interface QuantizedPart {
  part: string;
  bitsandbytes?: Nf4LayoutOptions['bitsandbytes'];
}

/**
 * One Hugging Face linear weight of a 4-bit checkpoint, in whichever packing the file uses: the tensors
 * that replace it (shape null: any, checked by toParts), and how they become the engine's packed weights
 * (one per part). Words are read as u32 (U32 or I32 in the file), bytes (U8) as they are, everything else
 * as f32.
 */
export interface QuantizedModule {
  hfName: string;
  parts: QuantizedPart[];
  tensors: { name: string; array: string; shape: number[] | null; dtype: 'U32' | 'U8' | 'F32' | 'F16'; optional?: boolean }[];
  toParts(arrays: Record<string, Uint32Array | Uint8Array | Float32Array>): { part: string; arrays: PackedArrays }[];
}

/** The quantized modules of a 4-bit checkpoint. */
export function quantizedModules(config: ModelConfig, q: StoredQuantization): QuantizedModule[] {
  if (q.packing === 'gptq') return gptqModules(config, q);
  if (q.packing === 'bitsandbytes') return bitsandbytesModules(config, q);
  return packedTensors(config, q).map((p) => ({ hfName: p.hfName, parts: [{ part: p.part }], tensors: p.tensors, toParts: (arrays) => [{ part: p.part, arrays: arrays as PackedArrays }] }));
}

export class QuantizedWeights {
  private readonly weights = new Map<string, Q4Weight>();
  private readonly buffers: GPUBuffer[] = [];
  private staging: GPUBuffer | null = null;
  readonly format: QuantFormat;
  readonly groupSize: Int4GroupSize;
  readonly zeroBias: Int4ZeroBias;
  readonly doubleQuant: boolean;
  /** Loaded from a bitsandbytes checkpoint, in its layout (NF4 or FP4 codes); null otherwise. */
  readonly bitsandbytes: Nf4Codes | null;
  /** Double quantization's f32 absmax between its passes, kept with the staging buffer. */
  private dqScratch: GPUBuffer | null = null;

  /**
   * Allocates the packed arrays of each weight, by engine name with its shape [out, in]; `parts` are a
   * stored checkpoint's (their layouts may differ by part).
   */
  constructor(
    private readonly gpu: Gpu,
    shapes: Map<string, [number, number]>,
    option: QuantizeOption | StoredQuantization,
    parts: Map<string, QuantizedPart> = new Map(),
  ) {
    const resolved = checkQuantizeOption(option);
    const { format, groupSize, zeroBias, doubleQuant } = resolved;
    this.format = format;
    this.groupSize = groupSize;
    this.zeroBias = zeroBias;
    this.doubleQuant = doubleQuant;
    this.bitsandbytes = resolved.bitsandbytes;
    const buffer = (bytes: number, label: string) => {
      const b = gpu.createBuffer(bytes, undefined, label);
      this.buffers.push(b);
      return b;
    };
    try {
      for (const [name, [N, K]] of shapes) {
        if (format === 'nf4') {
          const layout = nf4Layout(N, K, nf4Options(resolved, parts.get(name)));
          const bytes = nf4Bytes(layout);
          this.weights.set(name, { format, layout, qweight: buffer(bytes.qweight, `${name} nf4 codes`), absmax: buffer(bytes.absmax, `${name} nf4 absmax`) });
        } else {
          const layout = int4Layout(N, K, groupSize, zeroBias);
          const bytes = int4Bytes(layout);
          this.weights.set(name, {
            format, layout,
            qweight: buffer(bytes.qweight, `${name} int4 codes`), scales: buffer(bytes.scales, `${name} int4 scales`), zeros: buffer(bytes.zeros, `${name} int4 zeros`),
          });
        }
      }
    } catch (e) {
      this.destroy();
      throw e;
    }
  }

  has(name: string): boolean {
    return this.weights.has(name);
  }

  /** The quantized weights by engine name ('layers.0.q.weight'), in model order. */
  get names(): string[] {
    return [...this.weights.keys()];
  }

  get(name: string): Q4Weight {
    const w = this.weights.get(name);
    if (!w) throw new Error(`'${name}' is not a quantized weight`);
    return w;
  }

  /** Bytes of every packed array. */
  get bytes(): number {
    return this.buffers.reduce((n, b) => n + b.size, 0);
  }

  /**
   * Quantize f32 values [out, in] into a weight. The staging buffer is reused by the next write (the
   * queue orders it after this quantization) until releaseStaging().
   */
  write(name: string, data: Float32Array): void {
    const w = this.get(name);
    if (w.format === 'nf4' && !nf4Quantizable(w.layout)) {
      throw new ShapeError(`'${name}' holds a bitsandbytes checkpoint's 4-bit codes, which load as stored and are never quantized here: rewriting the base weight needs an unquantized base (or quantize: 'nf4' at load)`);
    }
    if (data.length !== w.layout.N * w.layout.K) throw new RangeError(`'${name}' needs ${w.layout.N * w.layout.K} values, got ${data.length}`);
    if (!this.staging || this.staging.size < data.byteLength) {
      this.releaseStaging();
      this.staging = this.gpu.createBuffer(data.byteLength, undefined, 'quantization staging');
    }
    this.gpu.write(this.staging, data);
    if (w.format === 'nf4' && w.layout.doubleQuant && (!this.dqScratch || this.dqScratch.size < w.layout.N * w.layout.blocksPerRow * 4)) {
      if (this.dqScratch) this.gpu.destroyBuffer(this.dqScratch);
      this.dqScratch = this.gpu.createBuffer(w.layout.N * w.layout.blocksPerRow * 4, undefined, 'double quantization scratch');
    }
    const rec = this.gpu.recorder();
    if (w.format === 'nf4') quantizeNf4(rec, { w: this.staging, out: w, scratch: this.dqScratch ?? undefined });
    else quantizeInt4(rec, { w: this.staging, out: w });
    void rec.submit();
  }

  /** Write a weight's packed arrays as a 4-bit checkpoint holds them (no quantization pass). */
  writePacked(name: string, arrays: PackedArrays): void {
    const w = this.get(name);
    const targets = this.arrays(w);
    for (const [array, buffer] of Object.entries(targets)) {
      const data = arrays[array as PackedTensorSpec['array']];
      if (!data || data.byteLength !== buffer.size) throw new RangeError(`'${name}' needs its ${array} array of ${buffer.size} bytes`);
    }
    for (const [array, buffer] of Object.entries(targets)) this.gpu.write(buffer, arrays[array as PackedTensorSpec['array']]!);
  }

  /** A weight's packed arrays as on the GPU (absmax as f32 unless double-quantized, the rest as u32 words). */
  async readPacked(name: string): Promise<PackedArrays> {
    const out: PackedArrays = {};
    for (const [array, buffer] of Object.entries(this.arrays(this.get(name)))) {
      out[array as PackedTensorSpec['array']] = array === 'absmax' && !this.doubleQuant ? await this.gpu.readF32(buffer) : await this.gpu.readU32(buffer);
    }
    return out;
  }

  private arrays(w: Q4Weight): Record<string, GPUBuffer> {
    return (w.format === 'nf4' ? { qweight: w.qweight, absmax: w.absmax } : { qweight: w.qweight, scales: w.scales, zeros: w.zeros }) as Record<string, GPUBuffer>;
  }

  releaseStaging(): void {
    for (const b of [this.staging, this.dqScratch]) if (b) this.gpu.destroyBuffer(b);
    this.staging = null;
    this.dqScratch = null;
  }

  /** The dequantized f32 values [out, in]. */
  async read(name: string): Promise<Float32Array> {
    const w = this.get(name);
    const out = this.gpu.createBuffer(w.layout.N * w.layout.K * 4, undefined, `${name} dequantized`);
    try {
      await this.gpu.run((rec) => dequantizeQ4(rec, { weight: w, out }));
      return await this.gpu.readF32(out);
    } finally {
      this.gpu.destroyBuffer(out);
    }
  }

  destroy(): void {
    this.releaseStaging();
    for (const b of this.buffers.splice(0)) this.gpu.destroyBuffer(b);
    this.weights.clear();
  }
}
