import { describe, expect, it } from 'vitest';
import { successorRows, toBatchInput } from '../../src/data/tasks.js';
import { bytesSource } from '../../src/io/bytes.js';
import { readHeader, shardedSafetensors, SHARD_INDEX } from '../../src/io/safetensors.js';
import { memorySource } from '../../src/io/sources.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tinyModelFiles } from '../../src/model/tiny.js';
import { Generator } from '../../src/serve/generate.js';
import { mergedModelFiles, quantizedModelFiles } from '../../src/train/export.js';
import { FineTuner } from '../../src/train/finetuner.js';
import { compare, testGpu } from '../helpers.js';

const files = tinyModelFiles({ architecture: 'qwen2', seed: 71, hiddenSize: 64, intermediateSize: 96, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositions: 64, initStd: 0.2 });
const withGeneration = { ...files, 'generation_config.json': JSON.stringify({ bos_token_id: 1, eos_token_id: 2, do_sample: false }) };

describe('model folders', () => {
  it('shards as save_pretrained does: in order, a tensor over the limit alone, an index naming every tensor', () => {
    const t = (n: number) => ({ dtype: 'F32' as const, shape: [n], data: new Float32Array(n).fill(n) });
    const out = shardedSafetensors({ a: t(10), b: t(10), big: t(100), c: t(5) }, 100);
    const index = JSON.parse(new TextDecoder().decode(out[SHARD_INDEX]));
    expect(index).toEqual({
      metadata: { total_size: 500 },
      weight_map: { a: 'model-00001-of-00003.safetensors', b: 'model-00001-of-00003.safetensors', big: 'model-00002-of-00003.safetensors', c: 'model-00003-of-00003.safetensors' },
    });
    expect(Object.keys(shardedSafetensors({ a: t(10) }, 100))).toEqual(['model.safetensors']);
    expect(() => shardedSafetensors({ a: t(10) }, 0)).toThrow(RangeError);
  });

  it('a merged LoRA model is a complete folder on its own: shards with an index, the tokenizer and generation files, the same logits', async () => {
    const gpu = await testGpu();
    const ft = await FineTuner.create(gpu, await openCheckpoint(memorySource(withGeneration)), { method: 'lora', lora: { rank: 4, targetModules: ['all-linear'] }, optimizer: { lr: 1e-2 } });
    try {
      for (let s = 0; s < 3; s++) await ft.step(toBatchInput(successorRows(2, 8, 30 + s)));
      const folder = await mergedModelFiles(ft, { maxShardBytes: 64 << 10 });
      const shards = Object.keys(folder).filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f));
      expect(shards.length).toBeGreaterThan(2);
      expect(folder['model.safetensors']).toBeUndefined();
      for (const f of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) expect(new TextDecoder().decode(folder[f]), f).toBe(withGeneration[f as keyof typeof withGeneration]);
      const index = JSON.parse(new TextDecoder().decode(folder[SHARD_INDEX]));
      let total = 0;
      for (const shard of shards) {
        const header = await readHeader(bytesSource(shard, folder[shard]));
        for (const t of header.tensors) {
          expect(index.weight_map[t.name]).toBe(shard);
          total += t.end - t.begin;
        }
      }
      expect(index.metadata.total_size).toBe(total);

      // Nothing of the base is needed to load it.
      const merged = await CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource(folder)));
      try {
        const prompt = Array.from({ length: 12 }, (_, i) => 35 + i);
        const g = { maxNewTokens: 4, keepLogits: true };
        const [a, b] = [await new Generator(ft.model).generate(prompt, g), await new Generator(merged).generate(prompt, g)];
        expect(b.tokens).toEqual(a.tokens);
        for (let t = 0; t < a.logits!.length; t++) expect(compare(b.logits![t], a.logits![t]).rel, `step ${t}`).toBeLessThan(1e-4);
      } finally {
        merged.destroy();
      }
    } finally {
      ft.destroy();
    }
  });

  it('a 4-bit checkpoint is a complete folder too, sharded when asked', async () => {
    const gpu = await testGpu();
    const model = await CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource(withGeneration)), { quantize: 'nf4' });
    try {
      const folder = await quantizedModelFiles(model, { maxShardBytes: 32 << 10 });
      expect(folder[SHARD_INDEX]).toBeDefined();
      expect(new TextDecoder().decode(folder['tokenizer.json'])).toBe(files['tokenizer.json']);
      const again = await CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource(folder)));
      const batch = toBatchInput(successorRows(2, 8, 5));
      expect(await again.loss(batch)).toBe(await model.loss(batch));
      again.destroy();
    } finally {
      model.destroy();
    }
  });
});
