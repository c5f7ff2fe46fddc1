import { describe, expect, it } from 'vitest';
import { successorRows, toBatchInput } from '../../src/data/tasks.js';
import { bytesSource } from '../../src/io/bytes.js';
import { readHeader, readIndexTensor, readTensorF32, writeSafetensors } from '../../src/io/safetensors.js';
import { memorySource } from '../../src/io/sources.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { openCheckpoint, type LoadProgress } from '../../src/model/checkpoint.js';
import type { QuantizeOption } from '../../src/model/quantized-weights.js';
import { tinyModelFiles, type TinyModelOptions } from '../../src/model/tiny.js';
import { mergedModelFiles, quantizedModelFiles } from '../../src/train/export.js';
import { FineTuner } from '../../src/train/finetuner.js';
import { testGpu } from '../helpers.js';

const LLAMA: TinyModelOptions = { architecture: 'llama', seed: 41, hiddenSize: 64, intermediateSize: 96, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositions: 64, initStd: 0.2 };
const GPT2: TinyModelOptions = { architecture: 'gpt2', seed: 42, hiddenSize: 32, numLayers: 2, numHeads: 4, maxPositions: 64, initStd: 0.2 };
const batch = toBatchInput(successorRows(2, 6, 77));

async function lossOf(model: CausalLM): Promise<number> {
  return model.loss(model.prepare(batch));
}

describe('4-bit checkpoints', () => {
  it.each<[string, TinyModelOptions, QuantizeOption]>([
    ['llama, nf4', LLAMA, 'nf4'],
    ['llama, int4 groups of 32', LLAMA, { format: 'int4', groupSize: 32 }],
    ['llama, nf4 with its absmax double-quantized', LLAMA, { format: 'nf4', doubleQuant: true }],
    ['gpt2 (fused c_attn, Conv1D), nf4', GPT2, 'nf4'],
  ])('%s: saved as packed, loaded without re-quantizing, the same model', async (_name, options, quantize) => {
    const gpu = await testGpu();
    const files = tinyModelFiles(options);
    const quantized = await CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource(files)), { quantize });
    const saved = await quantizedModelFiles(quantized);
    const format = typeof quantize === 'string' ? quantize : quantize.format;
    const config = JSON.parse(new TextDecoder().decode(saved['config.json']));
    const doubleQuant = typeof quantize === 'object' && 'doubleQuant' in quantize && quantize.doubleQuant;
    expect(config.quantization_config).toEqual({ quant_method: 'webgpu-finetune', format, ...(format === 'int4' ? { group_size: 32 } : {}), ...(doubleQuant ? { double_quant: true } : {}) });
    const header = await readHeader(bytesSource('model.safetensors', saved['model.safetensors']));
    const q = options.architecture === 'gpt2' ? 'transformer.h.0.attn.c_attn.q' : 'model.layers.0.self_attn.q_proj';
    expect(header.byName.get(`${q}.qweight`)).toMatchObject({ dtype: 'U32', shape: [options.hiddenSize!, options.hiddenSize! / 8] });
    expect(header.byName.has(options.architecture === 'gpt2' ? 'transformer.h.0.attn.c_attn.weight' : 'model.layers.0.self_attn.q_proj.weight')).toBe(false);
    // Other tensors stay as Hugging Face names them.
    expect(header.byName.has(options.architecture === 'gpt2' ? 'transformer.wte.weight' : 'model.embed_tokens.weight')).toBe(true);

    const ckpt = await openCheckpoint(memorySource({ ...files, ...saved }));
    expect(ckpt.config.quantization).toEqual({ format, groupSize: format === 'int4' ? 32 : 64, zeroBias: 0, packing: 'webgpu-finetune', ...(doubleQuant ? { doubleQuant } : {}) });
    if (doubleQuant) expect(header.byName.get(`${q}.absmax`)).toMatchObject({ dtype: 'U32', shape: [Math.ceil(64 / 4) + 1 + 1] });
    const progress: LoadProgress[] = [];
    const loaded = await CausalLM.fromCheckpoint(gpu, ckpt, { onProgress: (p) => progress.push(p) });
    // Progress counts every tensor of the file, packed arrays included.
    expect(progress.at(-1)).toMatchObject({ loaded: ckpt.tensors.size, total: ckpt.tensors.size });
    expect(progress.at(-1)!.bytesLoaded).toBe(progress.at(-1)!.bytesTotal);
    try {
      expect(loaded.linearWeight('layers.1.o.weight').format).toBe(format);
      expect(loaded.linearWeightBytes).toBe(quantized.linearWeightBytes);
      // The same packed words, so the same outputs, bit for bit.
      expect(await loaded.quantized!.readPacked('layers.0.k.weight')).toEqual(await quantized.quantized!.readPacked('layers.0.k.weight'));
      expect(await lossOf(loaded)).toBe(await lossOf(quantized));
      // LoRA trains on it as on the quantized-at-load base; a merged export is a plain dense model again.
      const ft = await FineTuner.create(gpu, ckpt, { method: 'lora', lora: { rank: 2 }, optimizer: { lr: 1e-2 } });
      for (let s = 0; s < 2; s++) await ft.step(batch);
      const merged = await mergedModelFiles(ft);
      expect(JSON.parse(new TextDecoder().decode(merged['config.json'])).quantization_config).toBeUndefined();
      const dense = await CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource({ ...files, ...merged })));
      expect(dense.quantized).toBeNull();
      expect(Math.abs((await lossOf(dense)) - (await ft.evaluate(batch)).loss)).toBeLessThan(1e-4);
      dense.destroy();
      ft.destroy();
    } finally {
      loaded.destroy();
      quantized.destroy();
    }
  });

  it('refuses what does not fit: other schemes, a changed format, training the 4-bit weights, bad arrays', async () => {
    const gpu = await testGpu();
    const files = tinyModelFiles(LLAMA);
    const base = await CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource(files)), { quantize: 'nf4' });
    const saved = await quantizedModelFiles(base);
    await expect(quantizedModelFiles(await CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource(files))))).rejects.toThrow(/holds no 4-bit weights/);
    base.destroy();
    const config = JSON.parse(new TextDecoder().decode(saved['config.json']));
    const withConfig = (patch: object) => openCheckpoint(memorySource({ ...files, ...saved, 'config.json': JSON.stringify({ ...config, ...patch }) }));
    await expect(withConfig({ quantization_config: { quant_method: 'awq', bits: 4 } })).rejects.toThrow(/quant_method 'awq' is not supported/);
    await expect(withConfig({ quantization_config: { quant_method: 'webgpu-finetune', format: 'nf4', zero_bias: 1 } })).rejects.toThrow(/zero_bias must be 0 for nf4/);
    await expect(withConfig({ quantization_config: { quant_method: 'webgpu-finetune', format: 'fp4' } })).rejects.toThrow(/format must be 'nf4' or 'int4'/);
    // Declared int4 while the file holds NF4 arrays: the expected tensors are missing.
    await expect(withConfig({ quantization_config: { quant_method: 'webgpu-finetune', format: 'int4', group_size: 64 } })).rejects.toThrow(/missing .* tensor/);
    const ckpt = await openCheckpoint(memorySource({ ...files, ...saved }));
    await expect(CausalLM.fromCheckpoint(gpu, ckpt, { quantize: 'int4' })).rejects.toThrow(/already nf4; quantize cannot change it/);
    await expect(CausalLM.fromCheckpoint(gpu, ckpt, { quantize: { format: 'nf4', doubleQuant: true } })).rejects.toThrow(/already nf4; quantize cannot change it/);
    await expect(CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource(files)), { quantize: { format: 'int4', doubleQuant: true } as QuantizeOption })).rejects.toThrow(/double quantization applies to nf4/);
    await expect(FineTuner.create(gpu, ckpt, { method: 'full' })).rejects.toThrow(/this checkpoint is 4-bit, and 'full' trains every linear weight, which a 4-bit base keeps frozen: train with lora/);
    await expect(FineTuner.create(gpu, ckpt, { method: 'sparse' })).rejects.toThrow(/trains inside the base weights/);
    // Packed words stored as floats are refused by dtype.
    const source = bytesSource('model.safetensors', saved['model.safetensors']);
    const tensors: Parameters<typeof writeSafetensors>[0] = {};
    for (const t of (await readHeader(source)).tensors) {
      if (t.dtype !== 'U32') tensors[t.name] = { dtype: 'F32', shape: t.shape, data: await readTensorF32(source, t) };
      else {
        const words = await readIndexTensor(source, t);
        tensors[t.name] = t.name.endsWith('.qweight') ? { dtype: 'F32', shape: t.shape, data: new Float32Array(words.buffer, words.byteOffset, words.length) } : { dtype: 'U32', shape: t.shape, data: words };
      }
    }
    await expect(openCheckpoint(memorySource({ ...files, ...saved, 'model.safetensors': writeSafetensors(tensors) }))).rejects.toThrow(/packed 4-bit words must be U32/);
  });
});
