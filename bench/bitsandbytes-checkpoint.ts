/**
 * A 4-bit checkpoint in bitsandbytes' format (model/bitsandbytes.ts documents it), made from a model the
 * engine quantized to NF4 as it loaded, for timing the load of a `*-bnb-4bit` upload without Python:
 * the engine's NF4 codes follow bitsandbytes' rule, and with every in-width a multiple of 64 its
 * per-row blocks are bitsandbytes' flat ones, so only the bytes move (nibbles swapped).
 */
import { NF4_CODES, writeSafetensors, type CausalLM, type TensorToWrite } from '../src/index.js';
import { hfMappings } from '../src/model/layout.js';
import { LINEAR_WEIGHT } from '../src/model/linear-weights.js';

export async function bitsandbytesCheckpointFiles(model: CausalLM): Promise<Record<string, Uint8Array>> {
  const q = model.quantized;
  if (!q || q.format !== 'nf4' || q.doubleQuant) throw new Error('bitsandbytesCheckpointFiles takes a model loaded with quantize: \'nf4\'');
  const tensors: Record<string, TensorToWrite> = {};
  for (const m of hfMappings(model.config)) {
    if (!m.parts.every((p) => LINEAR_WEIGHT.test(p)) || m.parts.length !== 1) {
      tensors[m.hfName] = { dtype: 'F32', shape: m.hfShape, data: await model.readHf(m.hfName) };
      continue;
    }
    const weight = q.get(m.parts[0]);
    if (weight.format !== 'nf4') throw new Error('unreachable: an NF4 model holds NF4 weights');
    const { layout } = weight;
    if (layout.K % 64) throw new Error(`${m.hfName}: in-width ${layout.K} is not a multiple of 64`);
    const packed = await q.readPacked(m.parts[0]);
    const words = new Uint8Array((packed.qweight as Uint32Array).buffer);
    const codes = words.map((b) => ((b & 15) << 4) | (b >> 4));
    const state = new TextEncoder().encode(JSON.stringify({ quant_type: 'nf4', blocksize: 64, dtype: 'float32', shape: [layout.N, layout.K] }));
    tensors[m.hfName] = { dtype: 'U8', shape: [codes.length, 1], data: codes };
    tensors[`${m.hfName}.quant_state.bitsandbytes__nf4`] = { dtype: 'U8', shape: [state.length], data: state };
    tensors[`${m.hfName}.absmax`] = { dtype: 'F32', shape: [layout.blocks], data: packed.absmax as Float32Array };
    tensors[`${m.hfName}.quant_map`] = { dtype: 'F32', shape: [16], data: new Float32Array(NF4_CODES) };
  }
  const config = {
    ...model.config.raw, torch_dtype: 'float32',
    quantization_config: { quant_method: 'bitsandbytes', load_in_4bit: true, bnb_4bit_quant_type: 'nf4', bnb_4bit_use_double_quant: false, bnb_4bit_quant_storage: 'uint8' },
  };
  return { 'config.json': new TextEncoder().encode(JSON.stringify(config)), 'model.safetensors': writeSafetensors(tensors) };
}
