/**
 * A device whose storage bindings are smaller than a model's tensors (requested with lowered limits):
 * the model is refused by the tensor's name and the limit before anything is allocated, and a model
 * stored so that every tensor fits loads and computes exactly what it computes on the full device.
 */
import { describe, expect, it } from 'vitest';
import { requestDevice } from '../../src/gpu/device.js';
import { memorySource } from '../../src/io/sources.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tinyModelFiles } from '../../src/model/tiny.js';
import { freshSeed, rng, testGpu } from '../helpers.js';

const LIMIT = 512 << 10;
// A 258-token vocabulary at width 512: the embedding is 528,384 bytes in f32, 264,192 in bf16.
const shape = { architecture: 'llama', hiddenSize: 512, intermediateSize: 256, numLayers: 1, numHeads: 8, numKvHeads: 4, maxPositions: 64, dtype: 'BF16' } as const;

describe('tensors larger than a storage binding', () => {
  it('are refused by name before anything is allocated; a model whose tensors fit gives the full device its losses', async () => {
    const small = await requestDevice({ label: 'small bindings', limits: { maxStorageBufferBindingSize: LIMIT, maxBufferSize: LIMIT } });
    try {
      expect(small.limits).toMatchObject({ maxStorageBufferBindingSize: LIMIT, maxBufferSize: LIMIT });
      const seed = freshSeed();
      const ckpt = await openCheckpoint(memorySource(tinyModelFiles({ ...shape, seed })));
      const before = small.memoryStats().currentBytes;
      // Trained in f32, the embedding does not fit.
      await expect(CausalLM.fromCheckpoint(small, ckpt, { trainable: () => true })).rejects.toMatchObject({
        code: 'buffer-too-large',
        message: expect.stringMatching(/tensor 'model.embed_tokens.weight' \(f32\) needs 528384 bytes but this device's maxStorageBufferBindingSize is 524288 bytes\. The embedding and LM head/),
      });
      expect(small.memoryStats().currentBytes).toBe(before);
      // Frozen and kept bf16, every tensor fits.
      const rand = rng(seed);
      const batch = { ids: Array.from({ length: 24 }, () => Math.floor(rand() * 258)), B: 2, S: 12 };
      const here = await CausalLM.fromCheckpoint(small, ckpt);
      const full = await CausalLM.fromCheckpoint(await testGpu(), ckpt);
      expect(await here.loss(batch)).toBe(await full.loss(batch));
      here.destroy();
      full.destroy();
      // The RoPE table covers every position the config allows.
      const settled = small.memoryStats().currentBytes; // the device's own placeholders and pools, made by the run above
      const long = await openCheckpoint(memorySource(tinyModelFiles({ ...shape, seed, maxPositions: 4096 })));
      await expect(CausalLM.fromCheckpoint(small, long)).rejects.toThrow(/the RoPE table needs 1048576 bytes but this device's maxStorageBufferBindingSize is 524288 bytes\. It holds cos and sin for every one of max_position_embeddings \(4096\)/);
      expect(small.memoryStats().currentBytes).toBe(settled);
    } finally {
      small.destroy();
    }
  });
});
