/**
 * Every tensor a kernel binds whole must fit one storage binding and one buffer: the device's
 * maxStorageBufferBindingSize (128 MiB by default, 1 to 4 GiB on desktop GPUs) and maxBufferSize.
 * Checked from the shapes before anything is allocated, naming the Hugging Face tensor, how it would be
 * stored and the limit, so a model too large for the device fails at once and leaves it as it was.
 */
import { BufferTooLargeError } from '../errors.js';
import type { Gpu } from '../gpu/gpu.js';
import { int4Bytes, int4Layout } from '../kernels/int4.js';
import { nf4Bytes, nf4Layout } from '../kernels/nf4.js';
import type { ModelConfig } from './config.js';
import { hfMappings, paramSpecs, size } from './layout.js';
import type { ResolvedQuantization } from './quantized-weights.js';

/** How the model stores its weights: 16-bit frozen ones, and 4-bit ones with their format. */
export interface WeightStorage {
  half: ReadonlySet<string>;
  quantized: ReadonlyMap<string, [number, number]>;
  quantize: ResolvedQuantization | null;
}

/** The largest binding the device allows, and the limit that sets it. */
export function bindingLimit(gpu: Gpu): { bytes: number; name: string } {
  const { maxBufferSize, maxStorageBufferBindingSize } = gpu.limits;
  return maxStorageBufferBindingSize <= maxBufferSize
    ? { bytes: maxStorageBufferBindingSize, name: 'maxStorageBufferBindingSize' }
    : { bytes: maxBufferSize, name: 'maxBufferSize' };
}

/** Throws BufferTooLargeError for the first tensor of the model that cannot be bound whole on `gpu`. */
export function checkBindingLimits(gpu: Gpu, config: ModelConfig, storage: WeightStorage): void {
  const limit = bindingLimit(gpu);
  const hfName = new Map(hfMappings(config).flatMap((m) => m.parts.map((p) => [p, m.hfName] as const)));
  const refuse = (what: string, bytes: number, advice: string) => {
    if (bytes > limit.bytes) throw new BufferTooLargeError(what, bytes, limit.bytes, limit.name, advice);
  };
  const vocabulary = `The embedding and LM head (vocabulary x hidden) are a model's largest tensors: a device with larger storage bindings runs it (desktop GPUs offer 1 to 4 GiB), and splitting them along the vocabulary is not implemented yet.`;
  for (const spec of paramSpecs(config)) {
    const name = `tensor '${hfName.get(spec.name) ?? spec.name}'`;
    const advice = spec.name === 'embed' || spec.name === 'lm_head' ? vocabulary : 'A device with larger storage bindings runs this model.';
    const q = storage.quantized.get(spec.name);
    if (q && storage.quantize) {
      const { format, groupSize, zeroBias, doubleQuant } = storage.quantize;
      const arrays = format === 'nf4' ? nf4Bytes(nf4Layout(q[0], q[1], { doubleQuant })) : int4Bytes(int4Layout(q[0], q[1], groupSize, zeroBias));
      for (const [array, bytes] of Object.entries(arrays)) if (array !== 'total') refuse(`${name} (${format}, its ${array})`, bytes, advice);
    } else if (storage.half.has(spec.name)) refuse(`${name} (stored 16-bit)`, Math.ceil(size(spec.shape) / 2) * 4, advice);
    else refuse(`${name} (f32)`, size(spec.shape) * 4, advice);
  }
  if (config.ropeTheta !== null) {
    refuse('the RoPE table', config.maxPositions * config.rotaryDim * 4, `It holds cos and sin for every one of max_position_embeddings (${config.maxPositions}) positions: a config with fewer positions, or a device with larger storage bindings, runs this model.`);
  }
}
