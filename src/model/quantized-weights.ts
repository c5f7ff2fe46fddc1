/**
 * Frozen linear weights stored 4-bit, the base of QLoRA: group-wise int4 or NF4 (formats documented in
 * shaders/int4.wgsl and shaders/nf4.wgsl). Each weight is quantized on the GPU as it is written, through
 * one f32 staging buffer, so loading streams tensor by tensor and peaks near one f32 tensor above the
 * quantized model. The transformer reads them with the fused 4-bit products (x·dequant(W)ᵀ forward and
 * dy·dequant(W) backward); nothing else ever widens them in GPU memory.
 */
import { ShapeError } from '../errors.js';
import type { Gpu } from '../gpu/gpu.js';
import { INT4_GROUP_SIZES, int4Bytes, int4Layout, quantizeInt4, type Int4GroupSize } from '../kernels/int4.js';
import { nf4Bytes, nf4Layout, quantizeNf4 } from '../kernels/nf4.js';
import { dequantizeQ4, type Q4Weight } from '../kernels/q4-matmul.js';

export type QuantFormat = 'int4' | 'nf4';
export const QUANT_FORMATS: readonly QuantFormat[] = ['int4', 'nf4'];

/** How to quantize a frozen base: a format, or int4 with its group size along K (default 64). */
export type QuantizeOption = QuantFormat | { format: 'int4'; groupSize?: Int4GroupSize } | { format: 'nf4' };

export function checkQuantizeOption(q: QuantizeOption): { format: QuantFormat; groupSize: Int4GroupSize } {
  const format = typeof q === 'string' ? q : q?.format;
  if (!QUANT_FORMATS.includes(format)) throw new ShapeError(`quantize must be ${QUANT_FORMATS.map((f) => `'${f}'`).join(' or ')}, got '${String(format).slice(0, 40)}'`);
  const groupSize = (typeof q === 'object' && 'groupSize' in q ? q.groupSize : undefined) ?? 64;
  if (!INT4_GROUP_SIZES.includes(groupSize)) throw new ShapeError(`int4 group size must be one of ${INT4_GROUP_SIZES.join(', ')}, got ${groupSize}`);
  return { format, groupSize };
}

export class QuantizedWeights {
  private readonly weights = new Map<string, Q4Weight>();
  private readonly buffers: GPUBuffer[] = [];
  private staging: GPUBuffer | null = null;
  readonly format: QuantFormat;

  /** Allocates the packed arrays of each weight, by engine name with its shape [out, in]. */
  constructor(
    private readonly gpu: Gpu,
    shapes: Map<string, [number, number]>,
    option: QuantizeOption,
  ) {
    const { format, groupSize } = checkQuantizeOption(option);
    this.format = format;
    const buffer = (bytes: number, label: string) => {
      const b = gpu.createBuffer(bytes, undefined, label);
      this.buffers.push(b);
      return b;
    };
    try {
      for (const [name, [N, K]] of shapes) {
        if (format === 'nf4') {
          const layout = nf4Layout(N, K);
          const bytes = nf4Bytes(layout);
          this.weights.set(name, { format, layout, qweight: buffer(bytes.qweight, `${name} nf4 codes`), absmax: buffer(bytes.absmax, `${name} nf4 absmax`) });
        } else {
          const layout = int4Layout(N, K, groupSize);
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
    if (data.length !== w.layout.N * w.layout.K) throw new RangeError(`'${name}' needs ${w.layout.N * w.layout.K} values, got ${data.length}`);
    if (!this.staging || this.staging.size < data.byteLength) {
      this.releaseStaging();
      this.staging = this.gpu.createBuffer(data.byteLength, undefined, 'quantization staging');
    }
    this.gpu.write(this.staging, data);
    const rec = this.gpu.recorder();
    if (w.format === 'nf4') quantizeNf4(rec, { w: this.staging, out: w });
    else quantizeInt4(rec, { w: this.staging, out: w });
    void rec.submit();
  }

  releaseStaging(): void {
    if (this.staging) this.gpu.destroyBuffer(this.staging);
    this.staging = null;
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
