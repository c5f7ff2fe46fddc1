/**
 * A 4-bit checkpoint in bitsandbytes' format (model/bitsandbytes.ts documents it), for timing the load
 * of a `*-bnb-4bit` upload without Python: each linear weight of an f32 model quantized by bitsandbytes'
 * rule (test/reference/bitsandbytes.ts: blocks of 64 over the flattened weight, NF4 codes), everything
 * else as it is.
 */
import { writeSafetensors, type CausalLM, type TensorToWrite } from '../src/index.js';
import { hfMappings } from '../src/model/layout.js';
import { LINEAR_WEIGHT } from '../src/model/linear-weights.js';
import { bnbQuantize4bitRef } from '../test/reference/bitsandbytes.js';

export async function bitsandbytesCheckpointFiles(model: CausalLM): Promise<Record<string, Uint8Array>> {
  if (model.quantized) throw new Error('bitsandbytesCheckpointFiles quantizes an f32 model');
  const tensors: Record<string, TensorToWrite> = {};
  for (const m of hfMappings(model.config)) {
    const data = await model.readHf(m.hfName);
    if (!m.parts.every((p) => LINEAR_WEIGHT.test(p)) || m.transpose) {
      tensors[m.hfName] = { dtype: 'F32', shape: m.hfShape, data };
      continue;
    }
    const q = bnbQuantize4bitRef(data, { codes: 'nf4', doubleQuant: false });
    const state = new TextEncoder().encode(JSON.stringify({ quant_type: 'nf4', blocksize: 64, dtype: 'float32', shape: m.hfShape }));
    tensors[m.hfName] = { dtype: 'U8', shape: [q.weight.length, 1], data: q.weight };
    tensors[`${m.hfName}.absmax`] = { dtype: 'F32', shape: [q.absmax.length], data: q.absmax as Float32Array };
    tensors[`${m.hfName}.quant_map`] = { dtype: 'F32', shape: [16], data: q.quantMap };
    tensors[`${m.hfName}.quant_state.bitsandbytes__nf4`] = { dtype: 'U8', shape: [state.length], data: state };
  }
  const config = {
    ...model.config.raw, torch_dtype: 'float32',
    quantization_config: { quant_method: 'bitsandbytes', load_in_4bit: true, bnb_4bit_quant_type: 'nf4', bnb_4bit_use_double_quant: false, bnb_4bit_quant_storage: 'uint8' },
  };
  return { 'config.json': new TextEncoder().encode(JSON.stringify(config)), 'model.safetensors': writeSafetensors(tensors) };
}
