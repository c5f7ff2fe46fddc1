/**
 * A trained sparse change in other files: the sparse delta file, PEFT's SHiRA and Super-Tuning adapters
 * (their exact layouts, checked by hand), and the merged Hugging Face model, each read back into a model that must behave as
 * the trained one; files for another base, or beyond SHiRA's rules, are refused before anything changes.
 */
import { describe, expect, it } from 'vitest';
import { successorRows, toBatchInput } from '../../src/data/tasks.js';
import { ModelMismatchError, ShapeError } from '../../src/errors.js';
import { readHeader, readIndexTensor, readTensorF32 } from '../../src/io/safetensors.js';
import { bytesSource } from '../../src/io/bytes.js';
import { memorySource } from '../../src/io/sources.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tinyModelFiles, type TinyModelOptions } from '../../src/model/tiny.js';
import { randomMask, readShiraAdapter, readSparseDelta, readSupertuningAdapter, shiraAdapterFiles, sparseDeltaFile, SparseFineTuning, supertuningAdapterFiles, type Granularity, type SparseMask } from '../../src/methods/sparse/index.js';
import type { SparseLora } from '../../src/methods/sparse-lora/index.js';
import { methodDefinition } from '../../src/methods/registry.js';
import type { MethodName } from '../../src/methods/registry.js';
import { mergedModelFiles } from '../../src/train/export.js';
import { FineTuner, type FineTuneOptions } from '../../src/train/finetuner.js';
import { compare, testGpu } from '../helpers.js';

const LLAMA: TinyModelOptions = { architecture: 'llama', seed: 21, hiddenSize: 32, intermediateSize: 48, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositions: 64, initStd: 0.2 };
const GPT2: TinyModelOptions = { architecture: 'gpt2', seed: 22, hiddenSize: 32, numLayers: 2, numHeads: 4, maxPositions: 64, initStd: 0.2 };

async function fineTune(files: Record<string, string | Uint8Array>, options: FineTuneOptions, steps = 3): Promise<FineTuner> {
  const ft = await FineTuner.create(await testGpu(), await openCheckpoint(memorySource(files)), { optimizer: { lr: 1e-2 }, ...options });
  for (let s = 0; s < steps; s++) await ft.step(toBatchInput(successorRows(2, 6, 30 + s)));
  return ft;
}

async function losses(model: CausalLM): Promise<Float32Array> {
  const rec = model.gpu.recorder();
  const acts = model.record(rec, model.prepare(toBatchInput(successorRows(2, 6, 99))));
  await rec.submit();
  const out = await model.gpu.readF32(acts.losses);
  acts.unpin();
  return out;
}

async function weights(model: CausalLM, mask: SparseMask): Promise<Map<string, Float32Array>> {
  return new Map(await Promise.all([...mask.entries.keys()].map(async (m) => [m, await model.readParam(`${m}.weight`)] as const)));
}

/** A fresh sparse fine-tuner on the same base with a delta's mask, the delta applied. */
async function applied(files: Record<string, string | Uint8Array>, delta: { mask: SparseMask; deltas: Map<string, Float32Array> }): Promise<FineTuner> {
  const ft = await FineTuner.create(await testGpu(), await openCheckpoint(memorySource(files)), { method: 'sparse', sparse: { mask: delta.mask } });
  (ft.method as SparseFineTuning).applyDeltas(delta.deltas);
  return ft;
}

describe('the sparse delta file', () => {
  it.each<[string, TinyModelOptions, Granularity]>([
    ['llama, elements', LLAMA, 'element'],
    ['gpt2 (fused, transposed c_attn), 16x16 blocks', GPT2, 16],
  ])('round-trips a trained delta: %s', async (_name, options, granularity) => {
    const files = tinyModelFiles(options);
    const trained = await fineTune(files, { method: 'sparse', sparse: { selection: 'random', density: 0.2, granularity } });
    const method = trained.method as SparseFineTuning;
    const bytes = await sparseDeltaFile(method, trained.model.config);
    const delta = await readSparseDelta(bytes, trained.model.config);
    expect(delta.mask.granularity).toBe(granularity);
    for (const [m, e] of method.mask.entries) expect(Array.from(delta.mask.entries.get(m)!.indices), m).toEqual(Array.from(e.indices));
    const want = await method.deltas();
    for (const [m, d] of want) expect(Array.from(delta.deltas.get(m)!), m).toEqual(Array.from(d));
    const copy = await applied(files, delta);
    // originals + (values - originals) in f32: the trained weights to the last bit or within one rounding.
    const [a, b] = [await weights(trained.model, method.mask), await weights(copy.model, method.mask)];
    for (const [m, w] of a) expect(compare(b.get(m)!, w).maxAbs, m).toBeLessThan(1e-6);
    expect(compare(await losses(copy.model), await losses(trained.model)).rel).toBeLessThan(1e-5);
    // Removing it restores the base bit for bit.
    const base = await CausalLM.fromCheckpoint(copy.gpu, await openCheckpoint(memorySource(files)));
    await copy.gpu.run((rec) => copy.method.setMerged!(rec, false));
    const [restored, original] = [await weights(copy.model, method.mask), await weights(base, method.mask)];
    for (const [m, w] of original) expect(Array.from(restored.get(m)!), m).toEqual(Array.from(w));
    for (const x of [trained, copy, base]) x.destroy();
  });

  it('is refused by another base, and a delta whose sizes do not fit changes nothing', async () => {
    const files = tinyModelFiles(LLAMA);
    const trained = await fineTune(files, { method: 'sparse', sparse: { selection: 'random', density: 0.2 } });
    const delta = await readSparseDelta(await sparseDeltaFile(trained.method as SparseFineTuning, trained.model.config), trained.model.config);
    const other = tinyModelFiles({ ...LLAMA, seed: 23 }); // same shapes, other weights
    await expect(FineTuner.create(trained.gpu, await openCheckpoint(memorySource(other)), { method: 'sparse', sparse: { mask: delta.mask } })).rejects.toThrow(ModelMismatchError);
    const copy = await FineTuner.create(trained.gpu, await openCheckpoint(memorySource(files)), { method: 'sparse', sparse: { mask: delta.mask } });
    const before = await weights(copy.model, delta.mask);
    const [first] = delta.deltas.keys();
    const bad = new Map(delta.deltas);
    bad.set(first, new Float32Array(3));
    expect(() => (copy.method as SparseFineTuning).applyDeltas(bad)).toThrow(ShapeError);
    const after = await weights(copy.model, delta.mask);
    for (const [m, w] of before) expect(Array.from(after.get(m)!), m).toEqual(Array.from(w));
    trained.destroy();
    copy.destroy();
  });
});

describe("PEFT's SHiRA adapter", () => {
  it('writes the layout PEFT reads (by hand) and reads back to the same trained model', async () => {
    const files = tinyModelFiles(LLAMA);
    const config = (await openCheckpoint(memorySource(files))).config;
    const mask = randomMask(config, { loraRank: 1, seed: 4 });
    const trained = await fineTune(files, { method: 'sparse', sparse: { mask } });
    const method = trained.method as SparseFineTuning;
    const out = await shiraAdapterFiles(method, config, { baseModel: 'tiny-llama' });
    const adapterConfig = JSON.parse(new TextDecoder().decode(out['adapter_config.json']));
    expect(adapterConfig).toMatchObject({ peft_type: 'SHIRA', task_type: 'CAUSAL_LM', r: 1, mask_type: 'random', fan_in_fan_out: false, base_model_name_or_path: 'tiny-llama' });
    expect(adapterConfig.target_modules).toEqual(['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
    const source = bytesSource('adapter', out['adapter_model.safetensors']);
    const header = await readHeader(source);
    expect(header.metadata).toEqual({ format: 'pt' });
    // layers.0.k is k_proj [16, 32]: r (16 + 32) = 48 elements, indices [2, 48] int32 (rows, then columns), row-major.
    const indices = header.byName.get('base_model.model.model.layers.0.self_attn.k_proj.shira_indices')!;
    const weight = header.byName.get('base_model.model.model.layers.0.self_attn.k_proj.shira_weight')!;
    expect([indices.dtype, indices.shape, weight.dtype, weight.shape]).toEqual(['I32', [2, 48], 'F32', [48]]);
    const pairs = await readIndexTensor(source, indices);
    const flat = Array.from({ length: 48 }, (_, i) => pairs[i] * 32 + pairs[48 + i]);
    expect(flat).toEqual(Array.from(mask.entries.get('layers.0.k')!.indices));
    const deltas = await method.deltas();
    expect(Array.from(await readTensorF32(source, weight))).toEqual(Array.from(deltas.get('layers.0.k')!));
    // Back in: the same mask, the same deltas, the same model.
    const back = await readShiraAdapter({ config: out['adapter_config.json'], weights: out['adapter_model.safetensors'] }, config);
    for (const [m, d] of deltas) expect(Array.from(back.deltas.get(m)!), m).toEqual(Array.from(d));
    const copy = await applied(files, back);
    expect(compare(await losses(copy.model), await losses(trained.model)).rel).toBeLessThan(1e-5);
    trained.destroy();
    copy.destroy();
  });

  it("refuses masks beyond SHiRA's rules and options it does not apply", async () => {
    const llama = await fineTune(tinyModelFiles(LLAMA), { method: 'sparse', sparse: { selection: 'random', density: 0.1 } }, 0);
    await expect(shiraAdapterFiles(llama.method as SparseFineTuning, llama.model.config)).rejects.toThrow(/loraRank/);
    const gpt2 = await fineTune(tinyModelFiles(GPT2), { method: 'sparse', sparse: { selection: 'random', loraRank: 1 } }, 0);
    await expect(shiraAdapterFiles(gpt2.method as SparseFineTuning, gpt2.model.config)).rejects.toThrow(/no SHiRA form/);
    const good = await shiraAdapterFiles((await fineTune(tinyModelFiles(LLAMA), { method: 'sparse', sparse: { selection: 'random', loraRank: 1 } }, 0)).method as SparseFineTuning, llama.model.config);
    const withOption = new TextDecoder().decode(good['adapter_config.json']).replace('"fan_in_fan_out": false', '"fan_in_fan_out": true');
    await expect(readShiraAdapter({ config: withOption, weights: good['adapter_model.safetensors'] }, llama.model.config)).rejects.toThrow(/fan_in_fan_out/);
    llama.destroy();
    gpt2.destroy();
  });
});

describe('the merged Hugging Face model', () => {
  it.each<[MethodName, Partial<FineTuneOptions>]>([
    ['sparse', { sparse: { selection: 'random', density: 0.2 } }],
    ['lora', { lora: { rank: 2, targetModules: ['all-linear'] } }],
    ['sparse+lora', { 'sparse+lora': { sparse: { selection: 'random', density: 0.2 }, lora: { rank: 2 } } }],
  ])('%s: loads with no method attached and gives the trained outputs', async (method, options) => {
    const files = tinyModelFiles(LLAMA);
    const trained = await fineTune(files, { method, ...options });
    const want = await losses(trained.model);
    const merged = await mergedModelFiles(trained);
    expect(JSON.parse(new TextDecoder().decode(merged['config.json'])).torch_dtype).toBe('float32');
    const model = await CausalLM.fromCheckpoint(trained.gpu, await openCheckpoint(memorySource({ ...files, ...merged })));
    expect(compare(await losses(model), want).rel).toBeLessThan(1e-5);
    // Exporting left the method training as before.
    expect(compare(await losses(trained.model), want).rel).toBe(0);
    model.destroy();
    trained.destroy();
  });
});

describe("PEFT's Super-Tuning adapter", () => {
  it('holds a global-budget block mask as PEFT sizes it (by hand), padded with zeros, and reads back to the trained model', async () => {
    const files = tinyModelFiles(LLAMA);
    const ft = await fineTune(files, { method: 'sparse', sparse: { selection: 'random', density: 0.05, budget: 'global', granularity: 16, targetModules: ['q', 'down'] } });
    try {
      const sparse = ft.method as SparseFineTuning;
      const adapter = await supertuningAdapterFiles(sparse, ft.model.config);
      const config = JSON.parse(new TextDecoder().decode(adapter['adapter_config.json']));
      expect(config).toMatchObject({ peft_type: 'SUPERTUNING', target_modules: ['down_proj', 'q_proj'], r: null, lora_alpha: null, save_precomputed_indices: true });
      expect(config.sparsity).toBeGreaterThanOrEqual(0);
      expect(config.sparsity).toBeLessThan(1);
      const source = bytesSource('a', adapter['adapter_model.safetensors']);
      const header = await readHeader(source);
      const deltas = await sparse.deltas();
      for (const layer of [0, 1]) {
        for (const [module, path, shape] of [['q', 'self_attn.q_proj', [32, 32]], ['down', 'mlp.down_proj', [32, 48]]] as const) {
          const name = `base_model.model.model.layers.${layer}.${path}`;
          const [it, vt] = [header.byName.get(`${name}.supertuning_indices`)!, header.byName.get(`${name}.supertuning_values`)!];
          // PEFT's update_layer: int(numel * (1 - sparsity)) entries in every module.
          const n = Math.trunc(shape[0] * shape[1] * (1 - config.sparsity));
          expect([it.dtype, it.shape, vt.dtype, vt.shape]).toEqual(['I32', [n], 'F32', [n]]);
          const indices = await readIndexTensor(source, it);
          const values = await readTensorF32(source, vt);
          expect(new Set(indices).size).toBe(n);
          // The mask's elements carry their deltas; the rest is zero padding.
          const engine = `layers.${layer}.${module}`;
          const at = new Map(Array.from(indices, (f, i) => [f, values[i]]));
          const mine = sparse.mask.entries.has(engine) ? Array.from(sparse.mask.valueIndices(engine)) : [];
          mine.forEach((f, i) => expect(at.get(f), `${engine}[${f}]`).toBe(deltas.get(engine)![i]));
          const inMask = new Set(mine);
          indices.forEach((f, i) => inMask.has(f) || expect(values[i], `${engine} padding at ${f}`).toBe(0));
        }
      }
      const read = await readSupertuningAdapter({ config: adapter['adapter_config.json'], weights: adapter['adapter_model.safetensors'] }, ft.model.config);
      expect(read.lora).toBeNull();
      const again = await applied(files, read.delta);
      try {
        expect(compare(await losses(again.model), await losses(ft.model)).rel).toBeLessThan(1e-5);
      } finally {
        again.destroy();
      }
    } finally {
      ft.destroy();
    }
  });

  it("refuses GPT-2's Conv1D layers and what it does not apply; GPT-2's sparse+LoRA exports its LoRA as PEFT's LoRA files", async () => {
    const gpt2 = await fineTune(tinyModelFiles(GPT2), { method: 'sparse+lora', 'sparse+lora': { sparse: { selection: 'random', density: 0.05 }, lora: { rank: 2 } } }, 1);
    try {
      const { sparse, lora } = gpt2.method as SparseLora;
      await expect(supertuningAdapterFiles(sparse, gpt2.model.config, { lora })).rejects.toThrow(/Conv1D layers have no SUPERTUNING form/);
      const exported = (await methodDefinition('sparse+lora').exportFiles!(gpt2.method, gpt2.model.config, {}))!;
      expect(JSON.parse(new TextDecoder().decode(exported['adapter_config.json'])).peft_type).toBe('LORA');
    } finally {
      gpt2.destroy();
    }
    const files = tinyModelFiles(LLAMA);
    const ft = await fineTune(files, { method: 'sparse', sparse: { selection: 'random', density: 0.05, targetModules: ['q'] } }, 1);
    try {
      const adapter = await supertuningAdapterFiles(ft.method as SparseFineTuning, ft.model.config);
      const config = JSON.parse(new TextDecoder().decode(adapter['adapter_config.json']));
      const withConfig = (change: object) => readSupertuningAdapter({ config: JSON.stringify({ ...config, ...change }), weights: adapter['adapter_model.safetensors'] }, ft.model.config);
      await expect(withConfig({ save_precomputed_indices: false })).rejects.toMatchObject({ name: 'UnsupportedAdapterError', field: 'save_precomputed_indices' });
      await expect(withConfig({ modules_to_save: ['lm_head'] })).rejects.toThrow(/modules_to_save/);
      await expect(withConfig({ peft_type: 'SHIRA' })).rejects.toThrow(/not SUPERTUNING/);
      const config2 = (await openCheckpoint(memorySource(tinyModelFiles({ ...LLAMA, hiddenSize: 16, numHeads: 2, numKvHeads: 1 })))).config;
      await expect(readSupertuningAdapter({ config: adapter['adapter_config.json'], weights: adapter['adapter_model.safetensors'] }, config2)).rejects.toThrow(/outside the 16x16 weight/);
    } finally {
      ft.destroy();
    }
  });
});
