/**
 * A fine-tuned model as a plain Hugging Face model: config.json and model.safetensors with the method's
 * change merged into the base weights (LoRA's s B A, a sparse delta), loadable by transformers or by
 * this engine with no method attached. Tokenizer files are the base's and are copied by the caller.
 */
import { writeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import { hfMappings, partsToHf } from '../model/layout.js';
import type { FineTuner } from './finetuner.js';

const TORCH_DTYPE = { F32: 'float32', BF16: 'bfloat16', F16: 'float16' } as const;

/**
 * The merged model's files by name. Each weight is the base's plus the method's delta, added on the
 * host in f32, then stored in `dtype` (default F32). The base is read with the method unmerged, and the
 * method is left in its training state.
 */
export async function mergedModelFiles(ft: FineTuner, options: { dtype?: keyof typeof TORCH_DTYPE } = {}): Promise<Record<string, Uint8Array>> {
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
        try {
          const rec = gpu.recorder();
          const changed = method.deltaWeight(rec, part, { buffer: out, offset: 0, size: base.length * 4 });
          await rec.submit();
          if (!changed) return base;
          const delta = await gpu.readF32(out);
          return base.map((w, i) => w + delta[i]);
        } finally {
          gpu.destroyBuffer(out);
        }
      }));
      tensors[m.hfName] = { dtype, shape: m.hfShape, data: partsToHf(m, parts) };
    }
  } finally {
    if (method.readyToTrain) await gpu.run((rec) => method.readyToTrain!(rec));
  }
  const config = { ...model.config.raw, torch_dtype: TORCH_DTYPE[dtype] };
  return {
    'config.json': new TextEncoder().encode(JSON.stringify(config, null, 2) + '\n'),
    'model.safetensors': writeSafetensors(tensors, { format: 'pt' }),
  };
}
