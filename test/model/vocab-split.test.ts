/**
 * Tensors larger than a storage binding. On a device that keeps to small bindings (requestDevice's
 * `limits`), the embedding and LM head are stored in row pieces that each fit, and the model computes what
 * it computes with each in one binding: losses, every gradient, a training step, generation. Any other
 * tensor too large for a binding is refused by name before anything is allocated.
 */
import { describe, expect, it } from 'vitest';
import { requestDevice } from '../../src/gpu/device.js';
import { memorySource } from '../../src/io/sources.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tinyModelFiles, type TinyModelOptions } from '../../src/model/tiny.js';
import { Generator } from '../../src/serve/generate.js';
import { FineTuner } from '../../src/train/finetuner.js';
import { compare, freshSeed, IN_BROWSER, rng, testGpu } from '../helpers.js';

// A 258-token vocabulary at width 128: the embedding is 132,096 bytes in f32, 66,048 in bf16.
const shape: TinyModelOptions = { architecture: 'llama', hiddenSize: 128, intermediateSize: 96, numLayers: 1, numHeads: 4, numKvHeads: 2, maxPositions: 64, initStd: 0.2 };
const small = (binding: number, buffer = binding) => requestDevice({ label: `bindings of ${binding}`, limits: { maxStorageBufferBindingSize: binding, maxBufferSize: buffer } });
// AdamW with a large eps steps in proportion to the gradient: f32 rounding in the gradients stays that size in the
// weights, instead of being blown up where a gradient is near zero (the comparison is of the model, not of Adam).
const optimizer = { lr: 1e-2, eps: 1 };

// Chromium (the same kernels on the same SwiftShader) runs the tied head only.
describe.each(([
  ['an untied LM head', false],
  ['a tied one', true],
] as const).filter(([, tied]) => !IN_BROWSER || tied))('the embedding and %s larger than a binding (f32, trained)', (_name, tieWordEmbeddings) => {
  it('are stored in row pieces, and the losses, gradients, a training step and generation are those of the whole tensors', async () => {
    const gpu = await small(64 << 10);
    const seed = freshSeed();
    const rand = rng(seed);
    const files = tinyModelFiles({ ...shape, seed, tieWordEmbeddings });
    try {
      const [split, whole] = await Promise.all([gpu, await testGpu()].map(async (g) => CausalLM.fromCheckpoint(g, await openCheckpoint(memorySource(files)), { trainable: () => true })));
      // 64 KiB holds 128 rows of 128 floats: 128 + 128 + 2.
      expect(split.tables.get('embed')!.map((p) => [p.name, p.rows])).toEqual([['embed#0', 128], ['embed#1', 128], ['embed#2', 2]]);
      expect(whole.tables.get('embed')!.map((p) => p.name)).toEqual(['embed']);
      const batch = { ids: Array.from({ length: 24 }, () => Math.floor(rand() * 258)), B: 2, S: 12 };
      const [a, b] = [await split.loss(batch, true), await whole.loss(batch, true)];
      expect(Math.abs(a - b) / b, `seed ${seed}`).toBeLessThan(1e-6);
      for (const name of whole.hfNames) {
        const err = compare(await split.readHf(name, 'grads'), await whole.readHf(name, 'grads'));
        expect(err.rel, `seed ${seed} grad of ${name}`).toBeLessThan(1e-5);
      }
      split.destroy();
      whole.destroy();
      // Training: each piece is a tensor of the optimizer's; the trained weights come out whole.
      const [ftSplit, ftWhole] = await Promise.all([gpu, await testGpu()].map(async (g) => FineTuner.create(g, await openCheckpoint(memorySource(files)), { method: 'full', optimizer })));
      for (let s = 0; s < 2; s++) {
        const [x, y] = [await ftSplit.step(batch), await ftWhole.step(batch)];
        expect(Math.abs(x.loss - y.loss) / y.loss, `seed ${seed} step ${s}`).toBeLessThan(1e-5);
      }
      expect(compare(await ftSplit.model.readHf('model.embed_tokens.weight'), await ftWhole.model.readHf('model.embed_tokens.weight')).rel).toBeLessThan(1e-5);
      // Generation: the logits of a split head, piece by piece, are the whole head's.
      const prompt = batch.ids.slice(0, 7);
      const [g1, g2] = [new Generator(ftSplit.model), new Generator(ftWhole.model)];
      const [r1, r2] = [await g1.generate(prompt, { maxNewTokens: 4, keepLogits: true, stopTokens: [] }), await g2.generate(prompt, { maxNewTokens: 4, keepLogits: true, stopTokens: [] })];
      expect(r1.tokens).toEqual(r2.tokens);
      r1.logits!.forEach((l, i) => expect(compare(l, r2.logits![i]).rel, `step ${i}`).toBeLessThan(1e-5));
      g1.destroy();
      g2.destroy();
      ftSplit.destroy();
      ftWhole.destroy();
    } finally {
      gpu.destroy();
    }
  });
});

describe('a frozen bf16 embedding larger than a binding, under LoRA', () => {
  it('is stored in 16-bit row pieces and gives the losses of the whole table', async () => {
    // The binding alone is lowered: the device's uniform buffer (64 KiB) must still fit one buffer.
    const gpu = await small(32 << 10, 64 << 10);
    const seed = freshSeed();
    const rand = rng(seed);
    const files = tinyModelFiles({ ...shape, seed, dtype: 'BF16' });
    try {
      const options = { method: 'lora' as const, lora: { rank: 4, targetModules: ['all-linear'], seed: 3 }, optimizer };
      const [split, whole] = await Promise.all([gpu, await testGpu()].map(async (g) => FineTuner.create(g, await openCheckpoint(memorySource(files)), options)));
      // 32 KiB holds 128 rows of 128 bf16 values.
      expect(split.model.tables.get('lm_head')!.map((p) => p.rows)).toEqual([128, 128, 2]);
      const batch = { ids: Array.from({ length: 24 }, () => Math.floor(rand() * 258)), B: 2, S: 12 };
      for (let s = 0; s < 2; s++) {
        const [x, y] = [await split.step(batch), await whole.step(batch)];
        expect(Math.abs(x.loss - y.loss) / y.loss, `seed ${seed} step ${s}`).toBeLessThan(1e-5);
      }
      split.destroy();
      whole.destroy();
    } finally {
      gpu.destroy();
    }
  });
});

describe('tensors that cannot be split', () => {
  it('are refused by name and limit before anything is allocated', async () => {
    const gpu = await small(64 << 10);
    try {
      const before = gpu.memoryStats().currentBytes;
      // A 256-wide f32 projection is 256 KiB; the RoPE table of 4096 positions, 512 KiB.
      const wide = await openCheckpoint(memorySource(tinyModelFiles({ ...shape, hiddenSize: 256, numHeads: 8, numKvHeads: 8 })));
      await expect(CausalLM.fromCheckpoint(gpu, wide, { trainable: () => true })).rejects.toMatchObject({
        code: 'buffer-too-large',
        message: expect.stringMatching(/tensor 'model.layers.0.self_attn.q_proj.weight' \(f32\) needs 262144 bytes but this device's maxStorageBufferBindingSize is 65536 bytes/),
      });
      const long = await openCheckpoint(memorySource(tinyModelFiles({ ...shape, maxPositions: 4096 })));
      await expect(CausalLM.fromCheckpoint(gpu, long)).rejects.toThrow(/the RoPE table needs 524288 bytes but this device's maxStorageBufferBindingSize is 65536 bytes\. It holds cos and sin for every one of max_position_embeddings \(4096\)/);
      expect(gpu.memoryStats().currentBytes).toBe(before);
    } finally {
      gpu.destroy();
    }
  });
});
