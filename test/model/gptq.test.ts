import { describe, expect, it } from 'vitest';
import { successorRows, toBatchInput } from '../../src/data/tasks.js';
import { dequantizeQ4, int4Layout, type Int4Weight } from '../../src/index.js';
import { readTensorF32, writeSafetensors, type TensorToWrite } from '../../src/io/safetensors.js';
import { memorySource } from '../../src/io/sources.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { gptqToInt4 } from '../../src/model/gptq.js';
import { hfMappings } from '../../src/model/layout.js';
import { LINEAR_WEIGHT } from '../../src/model/linear-weights.js';
import { tinyModelFiles, type TinyModelOptions } from '../../src/model/tiny.js';
import { Generator } from '../../src/serve/generate.js';
import { quantizedModelFiles } from '../../src/train/export.js';
import { FineTuner } from '../../src/train/finetuner.js';
import { compare, testGpu } from '../helpers.js';
import { dequantizeGptqRef, encodeGptq } from '../reference/gptq.js';

const LLAMA: TinyModelOptions = { architecture: 'llama', seed: 51, hiddenSize: 64, intermediateSize: 96, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositions: 64, initStd: 0.2 };
const QWEN2: TinyModelOptions = { ...LLAMA, architecture: 'qwen2', seed: 52 };
const GPT2: TinyModelOptions = { architecture: 'gpt2', seed: 53, hiddenSize: 32, numLayers: 2, numHeads: 4, maxPositions: 64, initStd: 0.2 };

type Files = Record<string, string | Uint8Array>;
interface GptqOptions { G: 32 | 64 | 128; sym: boolean; v2: boolean; gIdx: boolean; format?: 'omit' }

/**
 * A tiny model's linear weights encoded as a GPTQ checkpoint writes them (by the reference encoder), and
 * the same model with those weights decoded as GPTQ's kernels decode them, in f32: what loading the
 * GPTQ files must reproduce. One group is made all-positive, so its zero point is 0 (16 as a v1 file reads).
 */
async function gptqCheckpoint(files: Files, o: GptqOptions): Promise<{ gptq: Files; dense: Files }> {
  const ckpt = await openCheckpoint(memorySource(files));
  const gptq: Record<string, TensorToWrite> = {};
  const dense: Record<string, TensorToWrite> = {};
  for (const m of hfMappings(ckpt.config)) {
    const { file, info } = ckpt.tensors.get(m.hfName)!;
    const data = await readTensorF32(file, info);
    if (!m.parts.every((p) => LINEAR_WEIGHT.test(p))) {
      gptq[m.hfName] = dense[m.hfName] = { dtype: 'F32', shape: m.hfShape, data };
      continue;
    }
    // [N, K] = [out, in]; GPT-2's Conv1D stores [in, out].
    const [N, K] = m.transpose ? [m.hfShape[1], m.hfShape[0]] : m.hfShape;
    const w = m.transpose ? Float32Array.from({ length: N * K }, (_, i) => data[(i % K) * N + Math.floor(i / K)]) : data;
    for (let k = 0; k < Math.min(K, o.G); k++) w[k] = Math.abs(w[k]) + 0.01;
    const t = encodeGptq(w, N, K, o.G, o);
    const module = m.hfName.replace(/\.weight$/, '');
    gptq[`${module}.qweight`] = { dtype: 'I32', shape: [K / 8, N], data: t.qweight };
    gptq[`${module}.qzeros`] = { dtype: 'I32', shape: [Math.ceil(K / o.G), N / 8], data: t.qzeros };
    gptq[`${module}.scales`] = { dtype: 'F16', shape: [Math.ceil(K / o.G), N], data: t.scales };
    if (o.gIdx) gptq[`${module}.g_idx`] = { dtype: 'I32', shape: [K], data: t.gIdx };
    const decoded = dequantizeGptqRef(t);
    dense[m.hfName] = { dtype: 'F32', shape: m.hfShape, data: Float32Array.from({ length: N * K }, (_, i) => (m.transpose ? decoded[(i % N) * K + Math.floor(i / N)] : decoded[i])) };
  }
  const raw = JSON.parse(files['config.json'] as string);
  const quantization_config = {
    quant_method: 'gptq', bits: 4, group_size: o.G, desc_act: false, sym: o.sym, damp_percent: 0.01, true_sequential: true,
    ...(o.format === 'omit' ? {} : { checkpoint_format: o.v2 ? 'gptq_v2' : 'gptq' }),
  };
  return {
    gptq: { ...files, 'config.json': JSON.stringify({ ...raw, quantization_config }), 'model.safetensors': writeSafetensors(gptq, { format: 'pt' }) },
    dense: { ...files, 'model.safetensors': writeSafetensors(dense, { format: 'pt' }) },
  };
}

describe('GPTQ checkpoints', () => {
  it('a hand-worked example: words, scales and v1 zero points decode as computed by hand', async () => {
    const gpu = await testGpu();
    // One group of 32 rows (K = 32) and 8 columns. Column 0: rows 0..7 hold codes 0..7 (word 0x76543210),
    // scale 0.5 (f16 0x3800), stored zero 7, so zero 8 in a v1 file: W[0, k] = 0.5 (k - 8).
    // Column 1: every code 15, scale 1 (0x3c00), stored zero 15, which a v1 reader takes as 16: W = -1.
    const [K, N, G] = [32, 8, 32];
    const qweight = new Uint32Array((K / 8) * N);
    qweight[0] = 0x76543210;
    for (let r = 0; r < K / 8; r++) qweight[r * N + 1] = 0xffffffff;
    const qzeros = new Uint32Array([0x000000f7]);
    const scales = new Uint16Array(N);
    scales[0] = 0x3800;
    scales[1] = 0x3c00;
    const packed = gptqToInt4(qweight, qzeros, scales, { K, N, G, first: 0, count: 2, zeroBias: 1 });
    expect(packed.qweight[0]).toBe(0x76543210);
    expect(packed.scales[0]).toBe(0x3800);
    expect(packed.scales[1]).toBe(0x3c00);
    expect([packed.zeros[0], packed.zeros[1]]).toEqual([7, 15]);
    const layout = int4Layout(2, K, G, 1);
    const weight: Int4Weight = { format: 'int4', layout, qweight: gpu.upload(packed.qweight), scales: gpu.upload(packed.scales), zeros: gpu.upload(packed.zeros) };
    const out = gpu.createBuffer(2 * K * 4);
    await gpu.run((rec) => dequantizeQ4(rec, { weight, out }));
    const w = await gpu.readF32(out);
    expect([...w.slice(0, 8)]).toEqual([-4, -3.5, -3, -2.5, -2, -1.5, -1, -0.5]);
    expect([...w.slice(8, 32)]).toEqual(new Array(24).fill(-4)); // code 0 - zero 8, times 0.5
    expect([...w.slice(K, 2 * K)]).toEqual(new Array(K).fill(-1));
  });

  it.each<[string, TinyModelOptions, GptqOptions]>([
    ['llama, v1 (no checkpoint_format), symmetric, groups of 32, g_idx', LLAMA, { G: 32, sym: true, v2: false, gIdx: true, format: 'omit' }],
    ['llama, v1, asymmetric, groups of 64 (a partial last group)', LLAMA, { G: 64, sym: false, v2: false, gIdx: false }],
    ['qwen2 (biases), gptq_v2, asymmetric, groups of 32', QWEN2, { G: 32, sym: false, v2: true, gIdx: true }],
    ['gpt2 (Conv1D, fused c_attn split in three), v1, asymmetric, groups of 32', GPT2, { G: 32, sym: false, v2: false, gIdx: true }],
  ])('%s: loads onto int4 weights with the logits of the decoded model', async (_name, options, o) => {
    const gpu = await testGpu();
    const { gptq, dense } = await gptqCheckpoint(tinyModelFiles(options), o);
    const ckpt = await openCheckpoint(memorySource(gptq));
    expect(ckpt.config.quantization).toEqual({ format: 'int4', groupSize: o.G, zeroBias: o.v2 ? 0 : 1, packing: 'gptq' });
    const model = await CausalLM.fromCheckpoint(gpu, ckpt);
    const reference = await CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource(dense)));
    try {
      expect(model.linearWeight('layers.1.o.weight').format).toBe('int4');
      expect(model.linearWeightBytes).toBeLessThan(0.2 * reference.linearWeightBytes);
      const prompt = Array.from({ length: 19 }, (_, i) => 40 + ((i * 7) % 50));
      const g = { maxNewTokens: 5, keepLogits: true };
      const [q, d] = [await new Generator(model).generate(prompt, g), await new Generator(reference).generate(prompt, g)];
      expect(q.tokens).toEqual(d.tokens);
      for (let t = 0; t < q.logits!.length; t++) expect(compare(q.logits![t], d.logits![t]).rel, `step ${t}`).toBeLessThan(1e-4);
    } finally {
      reference.destroy();
      model.destroy();
    }
  });

  it('LoRA trains on a GPTQ base, which saves as a 4-bit checkpoint of this engine and loads back the same', async () => {
    const gpu = await testGpu();
    const { gptq } = await gptqCheckpoint(tinyModelFiles(LLAMA), { G: 32, sym: false, v2: false, gIdx: true });
    const batch = toBatchInput(successorRows(2, 8, 61));
    const ft = await FineTuner.create(gpu, await openCheckpoint(memorySource(gptq)), { method: 'lora', lora: { rank: 4, targetModules: ['all-linear'] }, optimizer: { lr: 1e-2 } });
    try {
      const first = (await ft.evaluate(batch)).loss;
      for (let s = 0; s < 8; s++) await ft.step(batch);
      expect((await ft.evaluate(batch)).loss).toBeLessThan(0.8 * first);
      const saved = await quantizedModelFiles(ft.model);
      expect(JSON.parse(new TextDecoder().decode(saved['config.json'])).quantization_config).toEqual({ quant_method: 'webgpu-finetune', format: 'int4', group_size: 32, zero_bias: 1 });
      const again = await CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource({ ...gptq, ...saved })));
      const base = await CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource(gptq)));
      try {
        expect(await again.quantized!.readPacked('layers.0.gate.weight')).toEqual(await base.quantized!.readPacked('layers.0.gate.weight'));
        expect(await again.loss(batch)).toBe(await base.loss(batch));
      } finally {
        again.destroy();
        base.destroy();
      }
    } finally {
      ft.destroy();
    }
  });

  it('refuses what it cannot run, by name, and leaves nothing allocated', async () => {
    const gpu = await testGpu();
    const files = tinyModelFiles(LLAMA);
    const { gptq } = await gptqCheckpoint(files, { G: 32, sym: true, v2: false, gIdx: true });
    const raw = JSON.parse(gptq['config.json'] as string);
    const withConfig = (patch: object) => openCheckpoint(memorySource({ ...gptq, 'config.json': JSON.stringify({ ...raw, quantization_config: { ...raw.quantization_config, ...patch } }) }));
    await expect(withConfig({ desc_act: true })).rejects.toThrow(/act-order \(desc_act true\)/);
    await expect(withConfig({ bits: 8 })).rejects.toThrow(/has 8-bit weights/);
    await expect(withConfig({ group_size: -1 })).rejects.toThrow(/has group size -1/);
    await expect(withConfig({ checkpoint_format: 'marlin' })).rejects.toThrow(/checkpoint_format 'marlin'/);
    await expect(withConfig({ lm_head: true })).rejects.toThrow(/quantizes the LM head/);
    await expect(withConfig({ dynamic: { '.*\\.1\\..*': { bits: 8 } } })).rejects.toThrow(/per-module overrides/);

    // Tensors: act-order rows, scales that are not f16, a missing array, a wrong shape.
    const ckpt = await openCheckpoint(memorySource(gptq));
    const tensors: Record<string, TensorToWrite> = {};
    for (const [name, { file, info }] of ckpt.tensors) {
      const bytes = new Uint8Array(await file.read(info.begin, info.end - info.begin));
      tensors[name] = info.dtype === 'I32' ? { dtype: 'I32', shape: info.shape, data: new Int32Array(bytes.slice().buffer) } : { dtype: 'F32', shape: info.shape, data: await readTensorF32(file, info) };
      if (info.dtype === 'F16') tensors[name] = { dtype: 'F16', shape: info.shape, data: await readTensorF32(file, info) };
    }
    const broken = (edit: (t: Record<string, TensorToWrite>) => void) => {
      const t = { ...tensors };
      edit(t);
      return openCheckpoint(memorySource({ ...gptq, 'model.safetensors': writeSafetensors(t) }));
    };
    const q = 'model.layers.1.mlp.up_proj';
    const shuffled = Int32Array.from(tensors[`${q}.g_idx`].data as Int32Array).reverse();
    const before = gpu.memoryStats().currentBytes;
    await expect(CausalLM.fromCheckpoint(gpu, await broken((t) => (t[`${q}.g_idx`] = { dtype: 'I32', shape: [64], data: shuffled })))).rejects.toThrow(/act-order weights are not supported/);
    expect(gpu.memoryStats().currentBytes).toBe(before);
    await expect(broken((t) => (t[`${q}.scales`] = { ...t[`${q}.scales`], dtype: 'F32' } as TensorToWrite))).rejects.toThrow(/scales' is F32; it must be F16/);
    await expect(broken((t) => delete t[`${q}.qzeros`])).rejects.toThrow(/missing 1 tensor.*up_proj\.qzeros/);
    await expect(broken((t) => (t[`${q}.qweight`] = { dtype: 'I32', shape: [96, 8], data: new Int32Array(96 * 8) }))).rejects.toThrow(/up_proj\.qweight' has shape \[96,8\] but config.json implies \[8,96\]/);
  });
});
