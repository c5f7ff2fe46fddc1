import { describe, expect, it } from 'vitest';
import { successorRows, toBatchInput } from '../../src/data/tasks.js';
import { memorySource } from '../../src/io/sources.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tinyModelFiles } from '../../src/model/tiny.js';
import { FineTuner } from '../../src/train/finetuner.js';
import { Lora } from '../../src/methods/lora/index.js';
import { randn, rng, testGpu } from '../helpers.js';

const files = tinyModelFiles({ architecture: 'llama', seed: 5, hiddenSize: 32, intermediateSize: 48, numLayers: 2, numHeads: 4, numKvHeads: 2, initStd: 0.2, maxPositions: 64 });

// PEFT's four adapter tests run for LoRA with every other method in shared.test.ts.
describe('LoRA', () => {
  it('applies dropout only in training steps: evaluation is deterministic and matches dropout 0', async () => {
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(memorySource(files));
    const make = (dropout: number) => FineTuner.create(gpu, ckpt, { method: 'lora', lora: { rank: 4, targetModules: ['q', 'v', 'up'], dropout, seed: 1 } });
    const [withDropout, without] = [await make(0.5), await make(0)];
    for (const ft of [withDropout, without]) {
      for (const name of (ft.method as Lora).names) if (name.endsWith('lora_B')) gpu.write((ft.method as Lora).params.view(name), randn((ft.method as Lora).params.view(name).size / 4, rng(8), 0.3));
    }
    const batch = toBatchInput(successorRows(2, 4, 5));
    const a = await withDropout.evaluate(batch);
    expect((await withDropout.evaluate(batch)).loss).toBe(a.loss);
    expect(a.loss).toBe((await without.evaluate(batch)).loss);
    // In a training step the mask changes the loss.
    expect((await withDropout.step(batch)).loss).not.toBe((await without.step(batch)).loss);
    withDropout.destroy();
    without.destroy();
  });

  it('reads and writes adapter tensors by their PEFT names, base tensors by HF names', async () => {
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(memorySource(files));
    const ft = await FineTuner.create(gpu, ckpt, { method: 'lora', lora: { rank: 4, targetModules: ['q_proj', 'down_proj'] } });
    const lora = (ft.method as Lora);
    expect(lora.peftName('layers.1.q.lora_A')).toBe('base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight');
    expect(lora.peftName('layers.0.down.lora_B')).toBe('base_model.model.model.layers.0.mlp.down_proj.lora_B.weight');
    const name = 'base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight';
    const b = randn(32 * 4, rng(2)); // [out 32, r 4]
    ft.writeTensor(name, b);
    expect(Array.from(await ft.readTensor(name))).toEqual(Array.from(b));
    expect(await ft.readTensor('model.layers.1.self_attn.q_proj.weight')).toHaveLength(32 * 32);
    expect(() => ft.writeTensor(name, new Float32Array(3))).toThrow(/needs 128 values/);
    expect(() => ft.writeTensor('model.layers.9.mlp.up_proj.weight', new Float32Array(3))).toThrow(/not a tensor/);
    ft.destroy();
  });

  it('names GPT-2 adapters as PEFT does; q, k and v (one fused c_attn there) have no PEFT name', async () => {
    const gpu = await testGpu();
    const config = (await openCheckpoint(memorySource(tinyModelFiles({ architecture: 'gpt2', hiddenSize: 16, numLayers: 2, numHeads: 2 })))).config;
    const lora = new Lora(gpu, config, { rank: 2, targetModules: ['q', 'o', 'fc', 'proj'] });
    expect(lora.peftName('layers.1.o.lora_A')).toBe('base_model.model.transformer.h.1.attn.c_proj.lora_A.weight');
    expect(lora.peftName('layers.0.fc.lora_B')).toBe('base_model.model.transformer.h.0.mlp.c_fc.lora_B.weight');
    expect(lora.peftName('layers.0.proj.lora_A')).toBe('base_model.model.transformer.h.0.mlp.c_proj.lora_A.weight');
    expect(lora.peftName('layers.0.q.lora_A')).toBeNull();
    expect(lora.fromPeftName('base_model.model.transformer.h.1.attn.c_proj.lora_A.weight')).toBe('layers.1.o.lora_A');
    lora.destroy();
  });

  it('rejects target modules the architecture does not have', async () => {
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(memorySource(files));
    const before = gpu.memoryStats();
    await expect(FineTuner.create(gpu, ckpt, { method: 'lora', lora: { rank: 4, targetModules: ['c_attn'] } })).rejects.toThrow(/'c_attn' do not exist/);
    await expect(FineTuner.create(gpu, ckpt, { method: 'lora', lora: { rank: 0 } })).rejects.toThrow(/rank must be a positive integer/);
    // A rank above a layer's smaller side, alone or through a pattern, is refused before anything loads.
    const { hiddenSize: H } = ckpt.config;
    await expect(FineTuner.create(gpu, ckpt, { method: 'lora', lora: { rank: H + 1, targetModules: ['q'] } })).rejects.toThrow(new RegExp(`LoRA rank ${H + 1} exceeds what 'layers\\.0\\.q' \\(\\d+x${H}\\) can hold: at most \\d+`));
    await expect(FineTuner.create(gpu, ckpt, { method: 'lora', lora: { rank: 2, rankPattern: { v: 10 * H } } })).rejects.toThrow(/LoRA rank \d+ exceeds what 'layers\.0\.v'/);
    const after = gpu.memoryStats();
    expect([after.currentBytes, after.buffers]).toEqual([before.currentBytes, before.buffers]); // nothing was loaded or left allocated
  });

  it('keeps a 16-bit checkpoint 16-bit under LoRA: half the linear-weight bytes, refusing to merge into it', async () => {
    const gpu = await testGpu();
    const bf16 = await openCheckpoint(memorySource(tinyModelFiles({ architecture: 'llama', seed: 7, hiddenSize: 32, numLayers: 2, numHeads: 4, dtype: 'BF16' })));
    const packed = await FineTuner.create(gpu, bf16, { method: 'lora' });
    const widened = await FineTuner.create(gpu, bf16, { method: 'lora', baseDtype: 'f32' });
    const full = await FineTuner.create(gpu, bf16, { method: 'full' });
    expect(packed.model.packed).not.toBeNull();
    expect(packed.model.linearWeightBytes / widened.model.linearWeightBytes).toBe(0.5);
    expect(full.model.packed).toBeNull(); // trained weights are f32 masters
    // Both read back the checkpoint's values exactly (bf16 values are exact in f32 too).
    const name = 'model.layers.1.mlp.down_proj.weight';
    expect(Array.from(await packed.readTensor(name))).toEqual(Array.from(await widened.readTensor(name)));
    const batch = toBatchInput(successorRows(2, 4, 3));
    expect((await packed.evaluate(batch)).loss).toBeCloseTo((await widened.evaluate(batch)).loss, 5);
    expect(() => (packed.method as Lora).setMerged(gpu.recorder(), true)).toThrow(/stored as bf16.*baseDtype 'f32'/);
    expect((packed.method as Lora).merged).toBe(false);
    for (const ft of [packed, widened, full]) ft.destroy();
  });

  it('refuses to store a base in f16 when its values exceed the format, leaving nothing allocated', async () => {
    const gpu = await testGpu();
    const big = await openCheckpoint(memorySource(tinyModelFiles({ architecture: 'llama', seed: 8, hiddenSize: 32, numLayers: 1, numHeads: 4, initStd: 1e5 })));
    const before = gpu.memoryStats();
    await expect(FineTuner.create(gpu, big, { method: 'lora', baseDtype: 'f16' })).rejects.toThrow(/beyond the range of f16/);
    expect(gpu.memoryStats().currentBytes).toBe(before.currentBytes);
  });
});
