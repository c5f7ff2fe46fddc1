import { describe, expect, it } from 'vitest';
import { successorRows, toBatchInput } from '../../src/data/tasks.js';
import { memorySource } from '../../src/io/sources.js';
import { readHeader, readTensorF32, writeSafetensors } from '../../src/io/safetensors.js';
import { bytesSource } from '../../src/io/bytes.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tinyModelFiles, type TinyModelOptions } from '../../src/model/tiny.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { FineTuner } from '../../src/train/finetuner.js';
import { Lora, peftAdapterFiles, readPeftAdapter } from '../../src/methods/lora/index.js';
import { compare, randn, rng, testGpu } from '../helpers.js';
import { mergedModelFiles } from '../../src/train/export.js';

const LLAMA: TinyModelOptions = { architecture: 'llama', seed: 31, hiddenSize: 32, intermediateSize: 48, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositions: 64, initStd: 0.2 };
const GPT2: TinyModelOptions = { architecture: 'gpt2', seed: 32, hiddenSize: 32, numLayers: 2, numHeads: 4, maxPositions: 64, initStd: 0.2 };

async function trained(files: Record<string, string | Uint8Array>, targetModules: string[]): Promise<FineTuner> {
  const ft = await FineTuner.create(await testGpu(), await openCheckpoint(memorySource(files)), { method: 'lora', lora: { rank: 4, alpha: 12, targetModules, seed: 3 }, optimizer: { lr: 1e-2 } });
  for (let s = 0; s < 3; s++) await ft.step(toBatchInput(successorRows(2, 6, 50 + s)));
  return ft;
}

const batch = toBatchInput(successorRows(2, 6, 99));
const json = (bytes: Uint8Array) => JSON.parse(new TextDecoder().decode(bytes));

describe('PEFT LoRA adapters', () => {
  it.each<[string, TinyModelOptions, string[], string[]]>([
    ['llama', LLAMA, ['all-linear'], ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']],
    ['gpt2 (Conv1D, fan_in_fan_out)', GPT2, ['o', 'fc', 'proj'], ['c_fc', 'c_proj']],
    // Qwen3's q/k norms are not linear layers: all-linear adapts the same seven projections.
    ['qwen3 (q/k norms)', { ...LLAMA, architecture: 'qwen3', headDim: 12 }, ['all-linear'], ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']],
    // Gemma 3's norms (four per layer, and q/k) are not linear layers either.
    ['gemma3 (post and q/k norms)', { ...LLAMA, architecture: 'gemma3', headDim: 12, slidingWindowPattern: 2 }, ['all-linear'], ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']],
    // Phi-3's q, k, v are one qkv_proj and gate, up one gate_up_proj in Hugging Face: exported fused, as PEFT names them.
    ['phi3 (fused qkv_proj, gate_up_proj)', { ...LLAMA, architecture: 'phi3' }, ['all-linear'], ['down_proj', 'gate_up_proj', 'o_proj', 'qkv_proj']],
  ])('%s: exported as PEFT lays it out and as a merged model, each read back with the same outputs', async (_name, model, targets, peftTargets) => {
    const files = tinyModelFiles(model);
    const ft = await trained(files, targets);
    const out = await peftAdapterFiles(ft.method as Lora, { baseModel: 'org/tiny' });
    const config = json(out['adapter_config.json']);
    expect(config).toMatchObject({ peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 4, lora_alpha: 12, target_modules: peftTargets, fan_in_fan_out: model.architecture === 'gpt2', base_model_name_or_path: 'org/tiny', bias: 'none' });
    const header = await readHeader(bytesSource('adapter', out['adapter_model.safetensors']));
    expect(header.metadata).toEqual({ format: 'pt' });
    const first = model.architecture === 'gpt2' ? 'base_model.model.transformer.h.0.mlp.c_fc' : 'base_model.model.model.layers.0.mlp.down_proj';
    // A [r, in], B [out, r]: c_fc is 32 -> 128, down_proj 48 -> 32.
    expect(header.byName.get(`${first}.lora_A.weight`)!.shape).toEqual(model.architecture === 'gpt2' ? [4, 32] : [4, 48]);
    expect(header.byName.get(`${first}.lora_B.weight`)!.shape).toEqual(model.architecture === 'gpt2' ? [128, 4] : [32, 4]);

    const adapter = await readPeftAdapter({ config: out['adapter_config.json'], weights: out['adapter_model.safetensors'] }, ft.model.config);
    expect(adapter.options).toMatchObject({ rank: 4, alpha: 12 });
    const again = await FineTuner.create(ft.gpu, await openCheckpoint(memorySource(files)), { method: 'lora', lora: adapter.options });
    for (const [name, data] of adapter.tensors) again.writeTensor(name, data);
    for (const [name, data] of adapter.tensors) expect(Array.from(await again.readTensor(name))).toEqual(Array.from(data));
    expect((await again.evaluate(batch)).loss).toBe((await ft.evaluate(batch)).loss);
    again.destroy();
    // The merged model (the adapter folded into the weights, in Hugging Face's layout) loads back with the same outputs.
    const merged = await CausalLM.fromCheckpoint(ft.gpu, await openCheckpoint(memorySource({ ...files, ...(await mergedModelFiles(ft)) })));
    expect(compare(await merged.logits(batch), await ft.model.logits(batch)).rel).toBeLessThan(1e-5);
    merged.destroy();
    ft.destroy();
  });

  it('per-module ranks and alphas go out as rank_pattern and alpha_pattern and come back', async () => {
    const files = tinyModelFiles(LLAMA);
    const ckpt = await openCheckpoint(memorySource(files));
    const lora = { rank: 4, alpha: 12, targetModules: ['all-linear'], rankPattern: { down_proj: 2, 'layers\\.1\\.q': 6 }, alphaPattern: { o_proj: 3 }, seed: 3 };
    const ft = await FineTuner.create(await testGpu(), ckpt, { method: 'lora', lora, optimizer: { lr: 1e-2 } });
    for (let s = 0; s < 2; s++) await ft.step(toBatchInput(successorRows(2, 6, 60 + s)));
    const out = await peftAdapterFiles(ft.method as Lora);
    const config = json(out['adapter_config.json']);
    expect(config.rank_pattern).toEqual({ 'model.layers.0.mlp.down_proj': 2, 'model.layers.1.mlp.down_proj': 2, 'model.layers.1.self_attn.q_proj': 6 });
    expect(config.alpha_pattern).toEqual({ 'model.layers.0.self_attn.o_proj': 3, 'model.layers.1.self_attn.o_proj': 3 });
    const header = await readHeader(bytesSource('adapter', out['adapter_model.safetensors']));
    expect(header.byName.get('base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight')!.shape).toEqual([32, 6]);
    const adapter = await readPeftAdapter({ config: out['adapter_config.json'], weights: out['adapter_model.safetensors'] }, ckpt.config);
    const again = await FineTuner.create(ft.gpu, ckpt, { method: 'lora', lora: adapter.options });
    expect([...(again.method as Lora).modules].map(([m, d]) => [m, d.rank, d.scale])).toEqual([...(ft.method as Lora).modules].map(([m, d]) => [m, d.rank, d.scale]));
    for (const [name, data] of adapter.tensors) again.writeTensor(name, data);
    expect((await again.evaluate(batch)).loss).toBe((await ft.evaluate(batch)).loss);
    // Short keys, as people write them in Python, match the end of a module's path.
    const short = await readPeftAdapter({ config: JSON.stringify({ ...config, rank_pattern: { down_proj: 2, 'layers.1.self_attn.q_proj': 6 } }), weights: out['adapter_model.safetensors'] }, ckpt.config);
    expect(short.options.rankPattern).toEqual({ down_proj: 2, 'layers.1.self_attn.q_proj': 6 });
    await expect(readPeftAdapter({ config: JSON.stringify({ ...config, rank_pattern: { down_proj: 3 } }), weights: out['adapter_model.safetensors'] }, ckpt.config)).rejects.toThrow(/expected \[3,48\] \(r 3\)/);
    again.destroy();
    ft.destroy();
  });

  it('reads an adapter laid out by hand as PEFT saves one (q_proj and v_proj, r 2, alpha 16)', async () => {
    const files = tinyModelFiles(LLAMA);
    const rand = rng(5);
    const tensors: Parameters<typeof writeSafetensors>[0] = {};
    for (let l = 0; l < 2; l++) {
      for (const [p, out] of [['q_proj', 32], ['v_proj', 16]] as const) {
        tensors[`base_model.model.model.layers.${l}.self_attn.${p}.lora_A.weight`] = { dtype: 'F32', shape: [2, 32], data: randn(64, rand) };
        tensors[`base_model.model.model.layers.${l}.self_attn.${p}.lora_B.weight`] = { dtype: 'F32', shape: [out, 2], data: randn(out * 2, rand) };
      }
    }
    const config = JSON.stringify({ peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 2, lora_alpha: 16, lora_dropout: 0.05, target_modules: ['q_proj', 'v_proj'], bias: 'none', use_rslora: false, rank_pattern: {}, alpha_pattern: {} });
    const ckpt = await openCheckpoint(memorySource(files));
    const adapter = await readPeftAdapter({ config, weights: writeSafetensors(tensors, { format: 'pt' }) }, ckpt.config);
    expect(adapter.options).toEqual({ rank: 2, alpha: 16, dropout: 0.05, targetModules: ['q', 'v'] });
    const ft = await FineTuner.create(await testGpu(), ckpt, { method: 'lora', lora: adapter.options });
    for (const [name, data] of adapter.tensors) ft.writeTensor(name, data);
    expect((ft.method as Lora).scale).toBe(8);
    expect(Array.from(await ft.readTensor('base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight'))).toEqual(Array.from(tensors['base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight'].data as Float32Array));
    ft.destroy();
  });

  it.each([
    ['q and v (a rank-8 c_attn with zero rows for k)', ['q', 'v', 'o'], false],
    ['q, k and v with rslora', ['q', 'k', 'v'], true],
  ] as const)('gpt2: adapters on %s go out as one block-diagonal c_attn adapter and come back with the same logits', async (_name, targetModules, rslora) => {
    const files = tinyModelFiles(GPT2);
    const ckpt = await openCheckpoint(memorySource(files));
    const ft = await FineTuner.create(await testGpu(), ckpt, { method: 'lora', lora: { rank: 4, alpha: 12, rslora, targetModules: [...targetModules], seed: 3 }, optimizer: { lr: 1e-2 } });
    for (let s = 0; s < 3; s++) await ft.step(toBatchInput(successorRows(2, 6, 50 + s)));
    const out = await peftAdapterFiles(ft.method as Lora);
    const config = json(out['adapter_config.json']);
    const fusedRank = 4 * targetModules.filter((m) => m !== 'o').length;
    const fusedAlpha = rslora ? 6 * Math.sqrt(fusedRank) : 3 * fusedRank; // the parts' scale, 12 / sqrt(4) or 12 / 4
    expect(config.target_modules).toEqual((targetModules as readonly string[]).includes('o') ? ['c_attn', 'c_proj'] : ['c_attn']);
    expect(config.rank_pattern).toEqual({ 'transformer.h.0.attn.c_attn': fusedRank, 'transformer.h.1.attn.c_attn': fusedRank });
    expect(config.alpha_pattern).toEqual({ 'transformer.h.0.attn.c_attn': fusedAlpha, 'transformer.h.1.attn.c_attn': fusedAlpha });
    const header = await readHeader(bytesSource('adapter', out['adapter_model.safetensors']));
    expect(header.byName.get('base_model.model.transformer.h.1.attn.c_attn.lora_A.weight')!.shape).toEqual([fusedRank, 32]);
    expect(header.byName.get('base_model.model.transformer.h.1.attn.c_attn.lora_B.weight')!.shape).toEqual([96, fusedRank]);

    const adapter = await readPeftAdapter({ config: out['adapter_config.json'], weights: out['adapter_model.safetensors'] }, ckpt.config);
    expect(adapter.options.targetModules).toEqual((targetModules as readonly string[]).includes('o') ? ['o', 'q', 'k', 'v'] : ['q', 'k', 'v']);
    const again = await FineTuner.create(ft.gpu, ckpt, { method: 'lora', lora: adapter.options });
    for (const [name, data] of adapter.tensors) again.writeTensor(name, data);
    const [a, b] = [(await again.evaluate(batch)).loss, (await ft.evaluate(batch)).loss];
    expect(Math.abs(a - b) / b).toBeLessThan(1e-6);
    again.destroy();
    ft.destroy();
  });

  it('gpt2: q, k and v of different ranks and alphas go out as one c_attn adapter (each block rescaled to its scale) and come back the same', async () => {
    const files = tinyModelFiles(GPT2);
    const ckpt = await openCheckpoint(memorySource(files));
    const lora = { rank: 4, alpha: 8, targetModules: ['q', 'k', 'v'], rankPattern: { 'layers\\.\\d+\\.q': 2, 'layers\\.\\d+\\.v': 6 }, alphaPattern: { 'layers\\.\\d+\\.v': 3 }, seed: 4 };
    const ft = await FineTuner.create(await testGpu(), ckpt, { method: 'lora', lora, optimizer: { lr: 1e-2 } });
    for (let s = 0; s < 3; s++) await ft.step(toBatchInput(successorRows(2, 6, 60 + s)));
    const out = await peftAdapterFiles(ft.method as Lora);
    const config = json(out['adapter_config.json']);
    expect(config.rank_pattern['transformer.h.0.attn.c_attn']).toBe(12);
    expect(config.alpha_pattern['transformer.h.0.attn.c_attn']).toBe(48); // q's scale 8 / 2 = 4, times rank 12
    const adapter = await readPeftAdapter({ config: out['adapter_config.json'], weights: out['adapter_model.safetensors'] }, ckpt.config);
    const again = await FineTuner.create(ft.gpu, ckpt, { method: 'lora', lora: adapter.options });
    for (const [name, data] of adapter.tensors) again.writeTensor(name, data);
    const [a, b] = [(await again.evaluate(batch)).loss, (await ft.evaluate(batch)).loss];
    expect(Math.abs(a - b) / b).toBeLessThan(1e-6);
    again.destroy();
    ft.destroy();
  });

  it('gpt2: reads a c_attn adapter laid out by hand as PEFT saves one: the merged weight is W + s (B A)^T', async () => {
    const files = tinyModelFiles(GPT2);
    const rand = rng(8);
    const tensors: Parameters<typeof writeSafetensors>[0] = {};
    for (let l = 0; l < 2; l++) {
      tensors[`base_model.model.transformer.h.${l}.attn.c_attn.lora_A.weight`] = { dtype: 'F32', shape: [3, 32], data: randn(96, rand) };
      tensors[`base_model.model.transformer.h.${l}.attn.c_attn.lora_B.weight`] = { dtype: 'F32', shape: [96, 3], data: randn(288, rand) };
    }
    const config = JSON.stringify({ peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 3, lora_alpha: 6, target_modules: ['c_attn'], fan_in_fan_out: true, bias: 'none' });
    const ckpt = await openCheckpoint(memorySource(files));
    const adapter = await readPeftAdapter({ config, weights: writeSafetensors(tensors, { format: 'pt' }) }, ckpt.config);
    const ft = await FineTuner.create(await testGpu(), ckpt, { method: 'lora', lora: adapter.options });
    for (const [name, data] of adapter.tensors) ft.writeTensor(name, data);
    const merged = await mergedModelFiles(ft);
    const header = await readHeader(bytesSource('merged', merged['model.safetensors']));
    const base = await readHeader(bytesSource('base', files['model.safetensors'] as Uint8Array));
    const name = 'transformer.h.1.attn.c_attn.weight';
    const got = await readTensorF32(bytesSource('merged', merged['model.safetensors']), header.byName.get(name)!);
    const w = await readTensorF32(bytesSource('base', files['model.safetensors'] as Uint8Array), base.byName.get(name)!);
    const A = tensors['base_model.model.transformer.h.1.attn.c_attn.lora_A.weight'].data as Float32Array;
    const B = tensors['base_model.model.transformer.h.1.attn.c_attn.lora_B.weight'].data as Float32Array;
    // Conv1D stores [in, out]; PEFT's delta for it is s (B A)^T, s = 6 / 3.
    const ref = new Float64Array(32 * 96);
    for (let i = 0; i < 32; i++) for (let o = 0; o < 96; o++) {
      let d = 0;
      for (let r = 0; r < 3; r++) d += B[o * 3 + r] * A[r * 32 + i];
      ref[i * 96 + o] = w[i * 96 + o] + 2 * d;
    }
    expect(compare(got, ref).rel).toBeLessThan(1e-6);
    ft.destroy();
  });

  it('refuses what it cannot represent, naming the option or tensor', async () => {
    const files = tinyModelFiles(LLAMA);
    const ckpt = await openCheckpoint(memorySource(files));
    const ft = await trained(files, ['q', 'v']);
    const good = await peftAdapterFiles(ft.method as Lora);
    ft.destroy();
    const withConfig = (patch: object) => readPeftAdapter({ config: JSON.stringify({ ...json(good['adapter_config.json']), ...patch }), weights: good['adapter_model.safetensors'] }, ckpt.config);
    const rs = await withConfig({ use_rslora: true });
    expect(rs.options).toMatchObject({ rank: 4, alpha: 12, rslora: true });
    const rsFt = await FineTuner.create(await testGpu(), ckpt, { method: 'lora', lora: rs.options });
    expect((rsFt.method as Lora).scale).toBe(6); // alpha / sqrt(r)
    expect(json((await peftAdapterFiles(rsFt.method as Lora))['adapter_config.json'])).toMatchObject({ r: 4, lora_alpha: 12, use_rslora: true });
    rsFt.destroy();
    await expect(withConfig({ rank_pattern: { q_proj: 8 } })).rejects.toThrow(/lora_A\.weight' is \[4,32\], expected \[8,32\] \(r 8\)|is \[4,32\], expected \[8,32\] \(r 8\)/);
    await expect(withConfig({ rank_pattern: { '(': 8 } })).rejects.toThrow(/not a valid regular expression/);
    // A DoRA file must hold every module's magnitude.
    await expect(withConfig({ use_dora: true })).rejects.toThrow(/has no lora_magnitude_vector \(use_dora is true\)/);
    await expect(withConfig({ init_lora_weights: 'pissa_niter_4' })).rejects.toMatchObject({ name: 'UnsupportedAdapterError', field: 'init_lora_weights', message: expect.stringMatching(/cannot repeat exactly.*path_initial_model_for_weight_conversion/) });
    await expect(withConfig({ init_lora_weights: 'corda' })).rejects.toThrow(/cannot repeat exactly/);
    await expect(withConfig({ peft_type: 'SHIRA' })).rejects.toThrow(/not LORA/);
    await expect(withConfig({ r: 3 })).rejects.toThrow(/is \[4,32\], expected \[3,32\] \(r 3\)/);
    await expect(withConfig({ r: 0 })).rejects.toThrow(/r must be a positive integer/);
    const names = (await readHeader(bytesSource('adapter', good['adapter_model.safetensors']))).tensors.map((t) => t.name);
    // A file adapting q in layer 0 only, and one whose module the model lacks.
    const sub: Parameters<typeof writeSafetensors>[0] = {};
    for (const n of names.filter((n) => n.includes('layers.0.'))) sub[n] = { dtype: 'F32', shape: n.includes('lora_A') ? [4, 32] : [n.includes('v_proj') ? 16 : 32, 4], data: new Float32Array(n.includes('lora_A') ? 128 : n.includes('v_proj') ? 64 : 128) };
    await expect(readPeftAdapter({ config: good['adapter_config.json'], weights: writeSafetensors(sub) }, ckpt.config)).rejects.toThrow(/adapts 'q' in some layers but not in 'layers\.1\.q'/);
    sub['base_model.model.model.layers.7.self_attn.q_proj.lora_A.weight'] = { dtype: 'F32', shape: [4, 32], data: new Float32Array(128) };
    await expect(readPeftAdapter({ config: good['adapter_config.json'], weights: writeSafetensors(sub) }, ckpt.config)).rejects.toThrow(/'model\.layers\.7\.self_attn\.q_proj' is not a linear layer/);
  });
});
