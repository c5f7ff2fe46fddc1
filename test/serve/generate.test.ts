import { describe, expect, it } from 'vitest';
import { memorySource } from '../../src/io/sources.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { paramSpecs } from '../../src/model/layout.js';
import { tinyModelFiles, type TinyModelOptions } from '../../src/model/tiny.js';
import { Lora, loraBase } from '../../src/methods/lora/index.js';
import { Generator, sampleToken } from '../../src/serve/generate.js';
import { ShapeError } from '../../src/errors.js';
import { compare, freshSeed, randn, rng, testGpu } from '../helpers.js';
import { forwardRef } from '../reference/model.js';

const MODELS: [string, TinyModelOptions][] = [
  ['llama', { architecture: 'llama', hiddenSize: 32, intermediateSize: 40, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositions: 64 }],
  ['gpt2', { architecture: 'gpt2', hiddenSize: 32, numLayers: 2, numHeads: 4, maxPositions: 64 }],
  ['qwen3 (q/k norms)', { architecture: 'qwen3', hiddenSize: 32, intermediateSize: 40, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 12, maxPositions: 64 }],
  ['llama (llama3 RoPE scaling)', { architecture: 'llama', hiddenSize: 32, intermediateSize: 40, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositions: 64, ropeTheta: 500000, ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 } }],
  ['gemma2 (soft caps, window 5 on layer 0)', { architecture: 'gemma2', hiddenSize: 32, intermediateSize: 40, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 8, attnSoftcap: 1.5, finalSoftcap: 2, slidingWindow: 5, maxPositions: 64 }],
  ['gemma3 (q/k norms, local RoPE base on the window-5 layer)', { architecture: 'gemma3', hiddenSize: 32, intermediateSize: 40, numLayers: 2, numHeads: 2, numKvHeads: 1, headDim: 16, slidingWindow: 5, slidingWindowPattern: 2, ropeLocalTheta: 100, maxPositions: 64 }],
  // Phi-4-mini's RoPE: 3/4 of each head rotating, LongRoPE's short factors and attention factor within its context of 20.
  ['phi3 (fused weights, partial rotation, LongRoPE)', { architecture: 'phi3', hiddenSize: 32, intermediateSize: 40, numLayers: 2, numHeads: 2, numKvHeads: 1, partialRotaryFactor: 0.75, maxPositions: 64, originalMaxPositions: 20, ropeScaling: { type: 'longrope', short_factor: [1, 1.3, 2.2, 3.5, 5, 9], long_factor: [1.1, 2, 4.5, 8, 16, 30] } }],
  ['mistral (sliding window 5, shorter than the sequence)', { architecture: 'mistral', hiddenSize: 32, intermediateSize: 40, numLayers: 2, numHeads: 4, numKvHeads: 2, slidingWindow: 5, maxPositions: 64 }],
];

async function refLastLogits(model: CausalLM, ids: number[]): Promise<Float64Array> {
  const c = model.config;
  const params = new Map<string, Float64Array>();
  for (const s of paramSpecs(c)) params.set(s.name, Float64Array.from(await model.gpu.readF32(model.params.view(s.name))));
  const T = ids.length;
  const { lnf } = forwardRef(c, params, { B: 1, S: T, ids: Uint32Array.from(ids), positions: Uint32Array.from(ids.keys()), segments: null });
  const head = params.get(c.tieWordEmbeddings ? 'embed' : 'lm_head')!;
  const H = c.hiddenSize;
  const cap = c.finalLogitSoftcap;
  return Float64Array.from({ length: c.vocabSize }, (_, v) => {
    let s = 0;
    for (let h = 0; h < H; h++) s += lnf[(T - 1) * H + h] * head[v * H + h];
    return cap === null ? s : cap * Math.tanh(s / cap);
  });
}

describe.each(MODELS)('generation with a KV cache: %s', (_name, options) => {
  it('every step matches the float64 model recomputed over the whole sequence', async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const model = await CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource(tinyModelFiles({ ...options, seed, initStd: 0.3 }))));
    const gen = new Generator(model);
    try {
      const prompt = Array.from({ length: 7 }, () => Math.floor(rand() * 256));
      const out = await gen.generate(prompt, { maxNewTokens: 6, keepLogits: true, stopTokens: [] });
      expect(out.tokens).toHaveLength(6);
      for (let i = 0; i < out.tokens.length; i++) {
        const ref = await refLastLogits(model, [...prompt, ...out.tokens.slice(0, i)]);
        expect(compare(out.logits![i], ref).rel, `seed ${seed} step ${i}`).toBeLessThan(1e-3);
        const best = ref.indexOf(Math.max(...ref));
        expect(out.tokens[i], `seed ${seed} step ${i}`).toBe(best);
      }
      // A second run reuses the cache and gives the same tokens.
      expect((await gen.generate(prompt, { maxNewTokens: 6, stopTokens: [] })).tokens).toEqual(out.tokens);
    } finally {
      gen.destroy();
      model.destroy();
    }
  });
});

describe('generation on a LongRoPE model', () => {
  it('stops at the pre-training context, past which LongRoPE would rotate the whole sequence with its long factors', async () => {
    const options = MODELS.find(([name]) => name.startsWith('phi3'))![1];
    const model = await CausalLM.fromCheckpoint(await testGpu(), await openCheckpoint(memorySource(tinyModelFiles(options))));
    const gen = new Generator(model);
    try {
      await expect(gen.generate(new Array(15).fill(7), { maxNewTokens: 6 })).rejects.toThrow(/21 tokens pass the 20-token pre-training context of this model's LongRoPE/);
      expect((await gen.generate(new Array(15).fill(7), { maxNewTokens: 5, stopTokens: [] })).tokens).toHaveLength(5);
    } finally {
      gen.destroy();
      model.destroy();
    }
  });
});

describe.each(MODELS)('batched generation: %s', (_name, options) => {
  it('prompts of different lengths give what each gives alone, sampled and greedy, stopping on their own', async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const model = await CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource(tinyModelFiles({ ...options, seed, initStd: 0.3 }))));
    const gen = new Generator(model);
    try {
      const prompts = [3, 11, 1, 7].map((n) => Array.from({ length: n }, () => Math.floor(rand() * 256)));
      for (const sampling of [{}, { temperature: 0.8, topK: 20 }]) {
        const opts = { ...sampling, maxNewTokens: 6, stopTokens: [], keepLogits: true };
        // Sequence b of a batch samples with seed + b.
        const alone = [];
        for (let b = 0; b < prompts.length; b++) alone.push(await gen.generate(prompts[b], { ...opts, seed: 5 + b }));
        const seen: [number, number][] = [];
        const batch = await gen.generateBatch(prompts, { ...opts, seed: 5, onToken: (t, b) => seen.push([t, b]) });
        for (let b = 0; b < prompts.length; b++) {
          expect(batch[b].tokens, `seed ${seed} sequence ${b}`).toEqual(alone[b].tokens);
          for (let i = 0; i < 6; i++) expect(compare(batch[b].logits![i], alone[b].logits![i]).rel, `seed ${seed} sequence ${b} step ${i}`).toBeLessThan(1e-4);
        }
        expect(seen).toHaveLength(4 * 6);
      }
      // A sequence that meets its stop token ends there while the others go on.
      const firstOfSecond = (await gen.generate(prompts[1], { maxNewTokens: 1, stopTokens: [] })).tokens[0];
      const stopped = await gen.generateBatch(prompts, { maxNewTokens: 5, stopTokens: [firstOfSecond] });
      expect(stopped[1]).toMatchObject({ tokens: [firstOfSecond], stoppedBy: 'stop-token' });
      for (const r of stopped) expect(r.tokens.length === 5 || r.stoppedBy === 'stop-token').toBe(true);
    } finally {
      gen.destroy();
      model.destroy();
    }
  });
});

describe('generation with LoRA', () => {
  it('gives the same tokens with the adapter unmerged and merged', async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const model = await CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource(tinyModelFiles({ ...MODELS[0][1], seed, initStd: 0.3 }))));
    const lora = new Lora(gpu, model.config, { rank: 4, targetModules: ['q', 'v', 'down'], seed }, loraBase(model));
    for (const name of lora.names) if (name.endsWith('lora_B')) gpu.write(lora.params.view(name), randn(lora.params.view(name).size / 4, rng(seed), 0.3));
    model.transformer.hooks = lora;
    const gen = new Generator(model);
    try {
      const prompt = [104, 101, 108, 108, 111];
      const base = await (async () => {
        model.transformer.hooks = null;
        const r = await gen.generate(prompt, { maxNewTokens: 8, stopTokens: [], keepLogits: true });
        model.transformer.hooks = lora;
        return r;
      })();
      const unmerged = await gen.generate(prompt, { maxNewTokens: 8, stopTokens: [], keepLogits: true });
      const rec = gpu.recorder();
      lora.setMerged(rec, true);
      await rec.submit();
      const merged = await gen.generate(prompt, { maxNewTokens: 8, stopTokens: [], keepLogits: true });
      expect(merged.tokens).toEqual(unmerged.tokens);
      for (let i = 0; i < 8; i++) expect(compare(merged.logits![i], unmerged.logits![i]).rel, `seed ${seed}`).toBeLessThan(1e-4);
      expect(compare(unmerged.logits![0], base.logits![0]).maxAbs).toBeGreaterThan(1e-3); // the adapter matters
    } finally {
      gen.destroy();
      lora.destroy();
      model.destroy();
    }
  });
});

describe('sampling and stopping', () => {
  const logits = Float32Array.from([0.5, 2.0, -1.0, 1.5, 0.0]);

  it('greedy, top-k 1 and a tiny top-p all pick the argmax', () => {
    const r = rng(1);
    expect(sampleToken(logits, {}, r)).toBe(1);
    expect(sampleToken(logits, { temperature: 1, topK: 1 }, r)).toBe(1);
    expect(sampleToken(logits, { temperature: 1, topP: 0.01 }, r)).toBe(1);
  });

  it('samples in proportion to softmax(logits / T), reproducibly from a seed', () => {
    const counts = new Array(5).fill(0);
    const r = rng(2);
    const n = 20000;
    for (let i = 0; i < n; i++) counts[sampleToken(logits, { temperature: 0.7 }, r)]++;
    const p = Array.from(logits, (l) => Math.exp(l / 0.7));
    const z = p.reduce((a, b) => a + b, 0);
    p.forEach((pi, i) => expect(Math.abs(counts[i] / n - pi / z)).toBeLessThan(0.015));
    const draw = (seed: number) => {
      const rs = rng(seed);
      return Array.from({ length: 20 }, () => sampleToken(logits, { temperature: 1 }, rs));
    };
    expect(draw(3)).toEqual(draw(3));
    expect(draw(3)).not.toEqual(draw(4));
    // top-k 2 never leaves the two best tokens
    for (let i = 0; i < 200; i++) expect([1, 3]).toContain(sampleToken(logits, { temperature: 5, topK: 2 }, r));
  });

  it('stops at a stop token and refuses bad prompts', async () => {
    const gpu = await testGpu();
    const model = await CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource(tinyModelFiles({ ...MODELS[1][1], seed: 4 }))));
    const gen = new Generator(model);
    try {
      const first = (await gen.generate([1, 2, 3], { maxNewTokens: 1, stopTokens: [] })).tokens[0];
      const r = await gen.generate([1, 2, 3], { maxNewTokens: 10, stopTokens: [first] });
      expect(r).toMatchObject({ tokens: [first], stoppedBy: 'stop-token' });
      // Prompts of other lengths in the same padded bucket allocate nothing new.
      await gen.generate([1, 2, 3, 4, 5, 6], { maxNewTokens: 2, stopTokens: [] });
      const buffers = gpu.memoryStats().buffers;
      await gen.generate([7, 8, 9, 10, 11], { maxNewTokens: 3, stopTokens: [] });
      expect(gpu.memoryStats().buffers).toBe(buffers);
      await expect(gen.generate([], { maxNewTokens: 2 })).rejects.toThrow(ShapeError);
      await expect(gen.generate([1], { maxNewTokens: 100 })).rejects.toThrow(/exceed/);
      await expect(gen.generate([999], { maxNewTokens: 1 })).rejects.toThrow(/vocabulary/);
    } finally {
      gen.destroy();
      model.destroy();
    }
  });
});
