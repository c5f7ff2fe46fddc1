/**
 * Ten thousand tiny adapters resident at once over the shipped base: every one addressable, a random
 * handful spot-checked in one batch against each attached alone.
 */
import { describe, expect, it, vi } from 'vitest';
import { Lora } from '../../src/methods/lora/layer.js';
import { linearModules } from '../../src/methods/targets.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { shippedModel } from '../../src/model/shipped.js';
import { AdapterCache } from '../../src/serve/adapter-cache.js';
import { AdapterPool } from '../../src/serve/adapter-pool.js';
import type { LoraAdapter } from '../../src/serve/adapters.js';
import { Generator } from '../../src/serve/generate.js';
import { compare, freshSeed, randn, rng, testGpu } from '../helpers.js';

const COUNT = 10_000;
const RANK = 2;
const TARGETS = ['q', 'v'];

describe('adapter cache at scale', () => {
  it(`holds ${COUNT} rank-${RANK} adapters resident on the shipped base, each one addressable and serving its own outputs`, async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const ckpt = await openCheckpoint(shippedModel());
    const served = await CausalLM.fromCheckpoint(gpu, ckpt);
    const alone = await CausalLM.fromCheckpoint(gpu, ckpt);
    const shapes = linearModules(served.config, TARGETS, 'test');
    const adapter = (i: number): LoraAdapter => {
      const rand = rng(seed * 7919 + i);
      return { kind: 'lora', modules: new Map([...shapes].map(([name, s]) => [name, { rank: RANK, scale: 2, A: randn(RANK * s.in, rand).map((v) => v * 0.2), B: randn(s.out * RANK, rand).map((v) => v * 0.2) }])) };
    };
    const capacity = AdapterCache.capacity(served.config, gpu.limits, { rank: RANK, targetModules: TARGETS, gpuBudgetBytes: 256 * 2 ** 20 });
    expect(capacity.adapters).toBeGreaterThanOrEqual(COUNT);
    const cache = new AdapterCache(served, { gpuBudgetBytes: 256 * 2 ** 20 });
    for (let i = 0; i < COUNT; i++) cache.add(`user-${i}`, adapter(i));
    expect(cache.residentCount).toBe(COUNT);
    expect(cache.gpuBytes).toBeLessThanOrEqual(256 * 2 ** 20);
    const writes = vi.spyOn(AdapterPool.prototype, 'write');
    for (let i = 0; i < COUNT; i++) cache.select(`user-${i}`);
    expect(writes, 'switching uploads nothing').not.toHaveBeenCalled();
    writes.mockRestore();
    expect(cache.residentCount).toBe(COUNT);

    const rand = rng(seed);
    const picks = Array.from({ length: 8 }, () => Math.floor(rand() * COUNT));
    const prompts = picks.map(() => Array.from({ length: 4 + Math.floor(rand() * 6) }, () => Math.floor(rand() * 256)));
    const options = { maxNewTokens: 4, keepLogits: true, stopTokens: [] as number[] };
    const got = await new Generator(served, { adapters: cache }).generateBatch(prompts, { ...options, adapters: picks.map((i) => `user-${i}`) });
    const ref = new Generator(alone);
    for (let k = 0; k < picks.length; k++) {
      const lora = new Lora(gpu, alone.config, { rank: RANK, alpha: 2 * RANK, targetModules: TARGETS });
      for (const [name, w] of adapter(picks[k]).modules) {
        gpu.write(lora.params.view(`${name}.lora_A`), w.A);
        gpu.write(lora.params.view(`${name}.lora_B`), w.B);
      }
      alone.transformer.hooks = lora;
      const want = await ref.generate(prompts[k], options);
      alone.transformer.hooks = null;
      lora.destroy();
      expect(got[k].tokens, `seed ${seed} adapter ${picks[k]}`).toEqual(want.tokens);
      want.logits!.forEach((l, i) => expect(compare(got[k].logits![i], l).rel, `seed ${seed} adapter ${picks[k]} step ${i}`).toBeLessThan(1e-4));
    }
    cache.destroy();
    served.destroy();
    alone.destroy();
  });
});
