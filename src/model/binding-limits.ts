/**
 * Every tensor a kernel binds whole must fit one storage binding and one buffer: the device's
 * maxStorageBufferBindingSize (128 MiB by default, 1 to 4 GiB on desktop GPUs) and maxBufferSize. The
 * embedding and LM head, a model's largest tensors, are stored in row pieces when they do not fit
 * (causal-lm.ts, tablePieces); any other tensor that does not fit is refused here, from the shapes,
 * before anything is allocated, naming the Hugging Face tensor, how it would be stored and the limit.
 */
import { BufferTooLargeError } from '../errors.js';
import type { Gpu } from '../gpu/gpu.js';
import { bindingLimit } from './arena.js';
import { int4Bytes, int4Layout } from '../kernels/int4.js';
import { nf4Bytes, nf4Layout } from '../kernels/nf4.js';
import type { ModelConfig } from './config.js';
import { hfMappings, paramSpecs, size } from './layout.js';
import { nf4Options, type QuantizedPart, type ResolvedQuantization } from './quantized-weights.js';

/** How the model stores its weights: 16-bit frozen ones, and 4-bit ones with their format. */
export interface WeightStorage {
  half: ReadonlySet<string>;
  quantized: ReadonlyMap<string, [number, number]>;
  quantize: ResolvedQuantization | null;
  /** A stored checkpoint's quantized parts, with their layouts (null when quantized as it loads). */
  parts?: ReadonlyMap<string, QuantizedPart> | null;
  /** Tensors stored in row pieces that each fit (the embedding and LM head when one binding cannot hold them). */
  split: ReadonlySet<string>;
}

/** Throws BufferTooLargeError for the first tensor of the model that cannot be bound whole on `gpu`. */
export function checkBindingLimits(gpu: Gpu, config: ModelConfig, storage: WeightStorage): void {
  const limit = bindingLimit(gpu);
  const hfName = new Map(hfMappings(config).flatMap((m) => m.parts.map((p) => [p, m.hfName] as const)));
  const refuse = (what: string, bytes: number, advice: string) => {
    if (bytes > limit.bytes) throw new BufferTooLargeError(what, bytes, limit.bytes, limit.name, advice);
  };
  for (const spec of paramSpecs(config)) {
    if (storage.split.has(spec.name)) continue;
    const name = `tensor '${hfName.get(spec.name) ?? spec.name}'`;
    const advice = 'A device with larger storage bindings runs this model (desktop GPUs offer 1 to 4 GiB).';
    const q = storage.quantized.get(spec.name);
    if (q && storage.quantize) {
      const { format, groupSize, zeroBias } = storage.quantize;
      const arrays = format === 'nf4' ? nf4Bytes(nf4Layout(q[0], q[1], nf4Options(storage.quantize, storage.parts?.get(spec.name)))) : int4Bytes(int4Layout(q[0], q[1], groupSize, zeroBias));
      for (const [array, bytes] of Object.entries(arrays)) if (array !== 'total') refuse(`${name} (${format}, its ${array})`, bytes, advice);
    } else if (storage.half.has(spec.name)) refuse(`${name} (stored 16-bit)`, Math.ceil(size(spec.shape) / 2) * 4, advice);
    else refuse(`${name} (f32)`, size(spec.shape) * 4, advice);
  }
  if (config.ropeTheta !== null) {
    refuse('the RoPE table', config.maxPositions * config.rotaryDim * 4, `It holds cos and sin for every one of max_position_embeddings (${config.maxPositions}) positions: a config with fewer positions, or a device with larger storage bindings, runs this model.`);
  }
}
