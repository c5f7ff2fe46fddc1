/**
 * A fine-tuned model as a complete Hugging Face model folder: config.json, the weights with the method's
 * change merged into the base (LoRA's s B A, a sparse delta) as model.safetensors or, when large, shards
 * with an index as save_pretrained writes them, and the base's tokenizer and generation files: loadable by
 * transformers or by this engine with no method attached. Also a base loaded 4-bit as a 4-bit
 * checkpoint, which loads without re-quantizing.
 */
import { shardedSafetensors, type TensorToWrite } from '../io/safetensors.js';
import type { ModelSource } from '../io/sources.js';
import { hfMappings, partsToHf } from '../model/layout.js';
import { ShapeError } from '../errors.js';
import type { CausalLM } from '../model/causal-lm.js';
import { packedTensors } from '../model/quantized-weights.js';
import type { FineTuner } from './finetuner.js';

const TORCH_DTYPE = { F32: 'float32', BF16: 'bfloat16', F16: 'float16' } as const;

/** transformers' default max_shard_size ("5GB"). */
export const DEFAULT_MAX_SHARD_BYTES = 5e9;

/** The files of a model folder besides config and weights, copied from the base as they are. */
export const SIDE_FILES = [
  'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'added_tokens.json', 'vocab.json', 'merges.txt',
  'tokenizer.model', 'chat_template.jinja', 'chat_template.json', 'generation_config.json',
];

export interface ModelFolderOptions {
  /** Larger weights are split into shards of at most this many bytes, with an index. Default 5 GB. */
  maxShardBytes?: number;
}

/** The side files (tokenizer, generation config) the model's source holds. */
async function sideFiles(source: ModelSource | null): Promise<Record<string, Uint8Array>> {
  const out: Record<string, Uint8Array> = {};
  for (const name of source ? SIDE_FILES : []) {
    const file = await source!.open(name);
    if (file) out[name] = (await file.read(0, file.size)).slice();
  }
  return out;
}

/**
 * The merged model's files by name. Each weight is the base's plus the method's delta, added on the
 * host in f32, then stored in `dtype` (default F32). The base is read with the method unmerged, and the
 * method is left in its training state.
 */
export async function mergedModelFiles(ft: FineTuner, options: { dtype?: keyof typeof TORCH_DTYPE } & ModelFolderOptions = {}): Promise<Record<string, Uint8Array>> {
  const { gpu, model, method } = ft;
  const dtype = options.dtype ?? 'F32';
  if (method.setMerged) await gpu.run((rec) => method.setMerged!(rec, false));
  const tensors: Record<string, TensorToWrite> = {};
  try {
    for (const m of hfMappings(model.config)) {
      const parts = await Promise.all(m.parts.map(async (part) => {
        const base = await model.readParam(part);
        if (!method.deltaWeight) return base;
        const out = gpu.createBuffer(base.length * 4, undefined, 'merge delta');
        let weight: GPUBuffer | null = null;
        try {
          // The base as read (dequantized, widened), for a delta that depends on it: DoRA's.
          weight = gpu.upload(base, 'merge base');
          const rec = gpu.recorder();
          const changed = method.deltaWeight(rec, part, { buffer: out, offset: 0, size: base.length * 4 }, { buffer: weight, offset: 0, size: base.length * 4 });
          await rec.submit();
          if (!changed) return base;
          const delta = await gpu.readF32(out);
          return base.map((w, i) => w + delta[i]);
        } finally {
          gpu.destroyBuffer(out);
          if (weight) gpu.destroyBuffer(weight);
        }
      }));
      tensors[m.hfName] = { dtype, shape: m.hfShape, data: partsToHf(m, parts) };
    }
  } finally {
    if (method.readyToTrain) await gpu.run((rec) => method.readyToTrain!(rec));
  }
  // Dense weights: a 4-bit base's quantization_config does not describe this file.
  const { quantization_config: _, ...raw } = model.config.raw;
  const config = { ...raw, torch_dtype: TORCH_DTYPE[dtype] };
  return {
    ...(await sideFiles(model.source)),
    'config.json': new TextEncoder().encode(JSON.stringify(config, null, 2) + '\n'),
    ...shardedSafetensors(tensors, options.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES, { format: 'pt' }),
  };
}

/**
 * A model loaded with `quantize` as a 4-bit checkpoint (format in model/quantized-weights.ts): the packed
 * arrays as they are on the GPU, every other tensor in f32, and config.json with its
 * quantization_config. Loading it puts the arrays on the GPU with no quantization pass. Adapters are not
 * included (save them on their own).
 */
export async function quantizedModelFiles(model: CausalLM, options: ModelFolderOptions = {}): Promise<Record<string, Uint8Array>> {
  const q = model.quantized;
  if (!q) throw new ShapeError('this model holds no 4-bit weights: load it with quantize to save a 4-bit checkpoint');
  if (q.bitsandbytes) throw new ShapeError('this model\'s 4-bit weights are a bitsandbytes checkpoint\'s, in its layout: its files are already the 4-bit checkpoint (a merged model saves in full precision)');
  const spec = { format: q.format, groupSize: q.groupSize, doubleQuant: q.doubleQuant };
  const packed = packedTensors(model.config, spec);
  const replaced = new Set(packed.map((p) => p.hfName));
  const tensors: Record<string, TensorToWrite> = {};
  for (const m of hfMappings(model.config)) if (!replaced.has(m.hfName)) tensors[m.hfName] = { dtype: 'F32', shape: m.hfShape, data: await model.readHf(m.hfName) };
  for (const p of packed) {
    const arrays = await q.readPacked(p.part);
    for (const t of p.tensors) {
      const data = arrays[t.array]!;
      tensors[t.name] = data instanceof Uint32Array ? { dtype: 'U32', shape: t.shape, data } : { dtype: 'F32', shape: t.shape, data };
    }
  }
  const config = {
    ...model.config.raw, torch_dtype: 'float32',
    quantization_config: {
      quant_method: 'webgpu-finetune', format: spec.format,
      ...(spec.format === 'int4' ? { group_size: spec.groupSize } : {}), ...(q.zeroBias ? { zero_bias: q.zeroBias } : {}), ...(q.doubleQuant ? { double_quant: true } : {}),
    },
  };
  return {
    ...(await sideFiles(model.source)),
    'config.json': new TextEncoder().encode(JSON.stringify(config, null, 2) + '\n'),
    ...shardedSafetensors(tensors, options.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES, { format: 'webgpu-finetune-4bit' }),
  };
}
