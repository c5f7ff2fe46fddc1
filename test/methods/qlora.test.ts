import { describe, expect, it } from 'vitest';
import { successorRows, toBatchInput } from '../../src/data/tasks.js';
import { memorySource } from '../../src/io/sources.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tinyModelFiles } from '../../src/model/tiny.js';
import { FineTuner } from '../../src/train/finetuner.js';
import { Lora } from '../../src/methods/lora/index.js';
import { compare, testGpu } from '../helpers.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { Generator } from '../../src/serve/generate.js';
import { mergedModelFiles } from '../../src/train/export.js';

// Linear layers of 128 x 128 and 128 x 320: whole NF4 blocks and int4 groups.
const files = tinyModelFiles({ architecture: 'llama', seed: 11, hiddenSize: 128, intermediateSize: 320, numLayers: 2, numHeads: 4, numKvHeads: 2, initStd: 0.2, maxPositions: 64 });

describe('QLoRA (LoRA on a 4-bit base)', () => {
  it.each([
    ['nf4', 'nf4'],
    ['int4', { format: 'int4', groupSize: 64 }],
  ] as const)('%s: frozen linears 4-bit, loaded a tensor at a time, close to the f32 base', async (format, quantize) => {
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(memorySource(files));
    const dense = await FineTuner.create(gpu, ckpt, { method: 'lora' });
    const before = gpu.memoryStats().currentBytes;
    gpu.resetPeakMemory();
    const q = await FineTuner.create(gpu, ckpt, { method: 'lora', quantize });
    try {
      expect(q.model.linearWeight('layers.1.down.weight').format).toBe(format);
      // 4 bits per weight plus a scale per block: about 0.14 of f32 (target at most 0.16).
      const ratio = q.model.linearWeightBytes / dense.model.linearWeightBytes;
      expect(ratio).toBeLessThan(0.16);
      expect(ratio).toBeGreaterThan(0.125);
      // Streaming: the load's peak is the loaded model plus at most one f32 linear weight (128 x 320).
      const loaded = gpu.memoryStats().currentBytes - before;
      expect(gpu.memoryStats().peakBytes - before - loaded).toBeLessThanOrEqual(128 * 320 * 4);
      // The 4-bit base computes nearly what the f32 one does (rounding a random model's weights to 4 bits
      // moves its loss by a few percent).
      const batch = toBatchInput(successorRows(2, 8, 3));
      const [lq, ld] = [(await q.evaluate(batch)).loss, (await dense.evaluate(batch)).loss];
      expect(Math.abs(lq - ld) / ld).toBeLessThan(0.1);
      expect(lq).not.toBe(ld);
      // A 4-bit weight reads back dequantized, and merging into it is refused.
      const w = await q.readTensor('model.layers.0.self_attn.q_proj.weight');
      const wd = await dense.readTensor('model.layers.0.self_attn.q_proj.weight');
      const err = Math.max(...w.map((v, i) => Math.abs(v - wd[i]))) / Math.max(...wd.map(Math.abs));
      expect(err).toBeGreaterThan(0);
      expect(err).toBeLessThan(0.2);
      expect(() => (q.method as Lora).setMerged(gpu.recorder(), true)).toThrow(new RegExp(`stored ${format}.*without quantize`));
      // Writing a 4-bit weight quantizes the values (through a staging buffer released after).
      const bytes = gpu.memoryStats().currentBytes;
      q.model.writeHf('model.layers.0.self_attn.q_proj.weight', wd);
      expect(Array.from(await q.readTensor('model.layers.0.self_attn.q_proj.weight'))).toEqual(Array.from(w));
      expect(gpu.memoryStats().currentBytes).toBe(bytes);
    } finally {
      q.destroy();
      dense.destroy();
    }
  });

  it('learns: fitting a batch goes as on an f32 base', async () => {
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(memorySource(tinyModelFiles({ architecture: 'llama', seed: 12, hiddenSize: 64, intermediateSize: 128, numLayers: 2, numHeads: 4, initStd: 0.2, maxPositions: 64 })));
    const batch = toBatchInput(successorRows(4, 8, 100));
    const final: Record<string, number> = {};
    for (const quantize of [undefined, 'nf4'] as const) {
      const ft = await FineTuner.create(gpu, ckpt, { method: 'lora', quantize, lora: { rank: 8, seed: 1 }, optimizer: { lr: 3e-2 } });
      try {
        const first = (await ft.step(batch)).loss;
        for (let s = 0; s < 14; s++) await ft.step(batch);
        final[quantize ?? 'f32'] = (await ft.evaluate(batch)).loss;
        expect(final[quantize ?? 'f32'], `${quantize ?? 'f32'}: ${first} -> ${final[quantize ?? 'f32']}`).toBeLessThan(0.5 * first);
      } finally {
        ft.destroy();
      }
    }
    expect(Math.abs(final.nf4 - final.f32) / final.f32, `f32 ${final.f32} nf4 ${final.nf4}`).toBeLessThan(0.5);
  });

  it('generates, and exports a merged model, from the 4-bit base as the dequantized f32 model does', async () => {
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(memorySource(files));
    const ft = await FineTuner.create(gpu, ckpt, { method: 'lora', quantize: 'nf4', lora: { rank: 4, targetModules: ['all-linear'] }, optimizer: { lr: 1e-2 } });
    for (let s = 0; s < 3; s++) await ft.step(toBatchInput(successorRows(2, 8, 40 + s)));
    // The same weights in f32: the dequantized base with the adapter merged in (what mergedModelFiles writes).
    const merged = await mergedModelFiles(ft);
    const dense = await CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource({ ...files, ...merged })));
    try {
      const prompt = Array.from({ length: 19 }, (_, i) => 40 + ((i * 7) % 50)); // a prefill of 19: tiled products
      const o = { maxNewTokens: 6, keepLogits: true };
      const [q, d] = [await new Generator(ft.model).generate(prompt, o), await new Generator(dense).generate(prompt, o)];
      expect(q.tokens).toEqual(d.tokens);
      for (let t = 0; t < q.logits!.length; t++) expect(compare(q.logits![t], d.logits![t]).rel, `step ${t}`).toBeLessThan(1e-4);
    } finally {
      dense.destroy();
      ft.destroy();
    }
  });

  it('refuses methods that train inside the base or train all of it, loading nothing', async () => {
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(memorySource(files));
    const before = gpu.memoryStats();
    await expect(FineTuner.create(gpu, ckpt, { method: 'sparse', quantize: 'nf4' })).rejects.toThrow(/trains inside the base weights.*drop quantize/);
    await expect(FineTuner.create(gpu, ckpt, { method: 'sparse+lora', quantize: 'nf4' })).rejects.toThrow(/trains inside the base weights/);
    await expect(FineTuner.create(gpu, ckpt, { method: 'full', quantize: 'int4' })).rejects.toThrow(/quantize makes the base 4-bit, and 'full' trains every linear weight, which a 4-bit base keeps frozen: drop quantize, or train with lora/);
    await expect(FineTuner.create(gpu, ckpt, { method: 'lora', quantize: 'fp4' as 'nf4' })).rejects.toThrow(/quantize must be 'int4' or 'nf4'/);
    await expect(FineTuner.create(gpu, ckpt, { method: 'lora', quantize: { format: 'int4', groupSize: 48 as 64 } })).rejects.toThrow(/group size must be one of 32, 64, 128/);
    const after = gpu.memoryStats();
    expect([after.currentBytes, after.buffers]).toEqual([before.currentBytes, before.buffers]);
  });
});
