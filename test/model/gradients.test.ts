import { describe, expect, it } from 'vitest';
import { memorySource } from '../../src/io/sources.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { paramSpecs } from '../../src/model/layout.js';
import { tinyModelFiles, type TinyModelOptions } from '../../src/model/tiny.js';
import { compare, freshSeed, rng, testGpu } from '../helpers.js';
import { modelLossAndGrads } from '../reference/model.js';

const MODELS: [string, TinyModelOptions][] = [
  ['llama (GQA)', { architecture: 'llama', hiddenSize: 32, intermediateSize: 40, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositions: 32 }],
  ['qwen2 (qkv bias, tied head)', { architecture: 'qwen2', hiddenSize: 24, intermediateSize: 36, numLayers: 2, numHeads: 2, numKvHeads: 1, tieWordEmbeddings: true, maxPositions: 32 }],
  ['gpt2', { architecture: 'gpt2', hiddenSize: 32, numLayers: 2, numHeads: 4, maxPositions: 32 }],
];

describe.each(MODELS)('whole-model loss and gradients: %s', (_name, options) => {
  it.each([false, true])('match the float64 reference (packed with a loss mask: %s)', async (packed) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    // Larger weights than a fresh init, so attention and the MLP are far from linear.
    const ckpt = await openCheckpoint(memorySource(tinyModelFiles({ ...options, seed, initStd: 0.2 })));
    const model = await CausalLM.fromCheckpoint(gpu, ckpt, { trainable: () => true });
    try {
      const [B, S] = [2, 11];
      const ids = Array.from({ length: B * S }, () => Math.floor(rand() * 256));
      const batch = model.prepare({
        ids, B, S,
        segments: packed ? Array.from({ length: B * S }, (_, t) => (t % S < 4 ? 0 : 1) + 2 * Math.floor(t / S)) : undefined,
        lossMask: packed ? Array.from({ length: B * S }, (_, t) => (t % 3 === 0 ? 0 : 1)) : undefined,
      });
      const loss = await model.loss(batch, true);
      const params = new Map<string, Float64Array>();
      for (const s of paramSpecs(ckpt.config)) params.set(s.name, Float64Array.from(await gpu.readF32(model.params.view(s.name))));
      const ref = modelLossAndGrads(ckpt.config, params, batch);
      expect(Math.abs(loss - ref.loss) / ref.loss, `seed ${seed} loss ${loss} vs ${ref.loss}`).toBeLessThan(1e-4);
      let globalScale = 0;
      for (const g of ref.grads.values()) for (const v of g) globalScale = Math.max(globalScale, Math.abs(v));
      for (const s of paramSpecs(ckpt.config)) {
        const want = ref.grads.get(s.name)!;
        const err = compare(await gpu.readF32(model.gradView(s.name)!), want);
        if (want.every((v) => Math.abs(v) < 1e-12 * globalScale)) {
          // Analytically zero (GPT-2's key bias: softmax ignores a shift shared by all of a query's scores).
          expect(err.maxAbs / globalScale, `seed ${seed} ${s.name} should be ~0`).toBeLessThan(1e-5);
          continue;
        }
        expect(err.rel, `seed ${seed} grad of ${s.name} (max abs ${err.maxAbs})`).toBeLessThan(1e-3);
      }
    } finally {
      model.destroy();
    }
  });
});
