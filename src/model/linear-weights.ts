/**
 * Typed weights of linear layers. A trainable weight is an f32 master; a frozen one may stay 16-bit
 * (bf16 or f16, packed two per u32) and is read packed by the matmul for both products a frozen linear
 * needs (y = x W^T and dx = dy W), so a 16-bit checkpoint under LoRA costs half the memory and is never
 * widened. A frozen one may also be 4-bit (int4 or NF4, ./quantized-weights.ts), read by the fused
 * 4-bit products.
 */
import { ShapeError } from '../errors.js';
import type { BufferLike, TensorView } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { matmul } from '../kernels/matmul.js';
import { matmulQ4 } from '../kernels/q4-matmul.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../io/safetensors.js';
import type { WeightFormat } from '../kernels/matmul.js';
import type { Q4Weight } from '../kernels/q4-matmul.js';
import type { Checkpoint } from './checkpoint.js';
import type { ModelConfig } from './config.js';
import { hfMappings, type HfMapping } from './layout.js';
import type { QuantFormat } from './quantized-weights.js';

export type { WeightFormat };

/** A linear weight as the products read it: f32 or packed 16-bit in a view, or 4-bit packed arrays. */
export type LinearWeight = DenseWeight | { format: QuantFormat; q4: Q4Weight };

export interface DenseWeight {
  view: TensorView;
  format: WeightFormat;
}

export function isDense(w: LinearWeight): w is DenseWeight {
  return 'view' in w;
}

/** y [M, N] = x [M, K] W^T for a weight [N, K] in whatever format it is stored (no bias, no term). */
export function linearProduct(rec: CommandRecorder, w: LinearWeight, { x, y, M, N, K }: { x: BufferLike; y: BufferLike; M: number; N: number; K: number }): void {
  if (isDense(w)) matmul(rec, { a: x, b: w.view, bFormat: w.format, c: y, M, N, K, transB: true });
  else matmulQ4(rec, { x, weight: w.q4, y, M });
}

export type HalfFormat = Exclude<WeightFormat, 'f32'>;

/** Engine names of linear-layer weights (the matmul's B operand). */
export const LINEAR_WEIGHT = /^layers\.\d+\.(q|k|v|o|gate|up|down|fc|proj)\.weight$/;

/** The Hugging Face tensors that are linear weights of the decoder blocks (a fused one whole, its parts listed). */
export function linearMappings(config: ModelConfig): HfMapping[] {
  return hfMappings(config).filter((m) => m.parts.every((p) => LINEAR_WEIGHT.test(p)));
}

/**
 * The frozen weights to keep 16-bit: with `baseDtype` given, every frozen linear weight, token embedding
 * and LM head in that format ('f32' keeps none); by default each in its checkpoint's dtype (BF16 stays
 * bf16, F16 stays f16). The embedding needs an even hidden size (rows of whole packed words).
 */
export function halfWeightFormats(ckpt: Checkpoint, trainable: (name: string) => boolean, baseDtype?: WeightFormat): Map<string, HalfFormat> {
  const out = new Map<string, HalfFormat>();
  for (const m of hfMappings(ckpt.config)) {
    const dtype = ckpt.tensors.get(m.hfName)?.info.dtype;
    const format = baseDtype ?? (dtype === 'BF16' ? 'bf16' : dtype === 'F16' ? 'f16' : 'f32');
    if (format === 'f32') continue;
    // Frozen linear weights, and the frozen token embedding and LM head (read by the gather and the
    // logits matmul in 16-bit too); learned positions stay f32.
    const table = (part: string) => (part === 'embed' || part === 'lm_head') && ckpt.config.hiddenSize % 2 === 0;
    for (const part of m.parts) if ((LINEAR_WEIGHT.test(part) || table(part)) && !trainable(part)) out.set(part, format);
  }
  return out;
}

/**
 * 16-bit values of `data` (rounded to nearest even), padded to whole 4-byte words. A finite value the
 * format cannot hold (f16 ends at 65504) is an error rather than a silent infinity.
 */
export function encodeHalves(data: Float32Array, format: HalfFormat, name = 'weight'): Uint16Array {
  const bits = format === 'bf16' ? f32ToBf16(data) : f32ToF16(data);
  for (let i = 0; i < bits.length; i++) {
    const exponentAllOnes = format === 'bf16' ? (bits[i] & 0x7f80) === 0x7f80 : (bits[i] & 0x7c00) === 0x7c00;
    if (exponentAllOnes && Number.isFinite(data[i])) {
      throw new ShapeError(`'${name}' holds ${data[i]}, beyond the range of ${format}: store this base as 'f32' or 'bf16'`);
    }
  }
  if (bits.length % 2 === 0) return bits;
  const padded = new Uint16Array(bits.length + 1);
  padded.set(bits);
  return padded;
}

/** The f32 values of `length` packed 16-bit elements. */
export function decodeHalves(bytes: ArrayBuffer, length: number, format: HalfFormat): Float32Array {
  const bits = new Uint16Array(bytes, 0, length);
  return format === 'bf16' ? bf16ToF32(bits) : f16ToF32(bits);
}
