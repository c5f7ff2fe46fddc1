/**
 * The adapter cache: outputs with the cache equal outputs with each adapter attached alone (LoRA) or
 * written into the weights alone (sparse), single and batched with mixed adapters and ranks; switching
 * away from a sparse adapter restores the base bit for bit; eviction never touches an adapter in use;
 * bad adapters are typed errors.
 */
import { describe, expect, it } from 'vitest';
import { AdapterCacheError, ModelMismatchError, ShapeError } from '../../src/errors.js';
import type { Gpu } from '../../src/gpu/gpu.js';
import { memorySource } from '../../src/io/sources.js';
import { Lora, loraBase } from '../../src/methods/lora/layer.js';
import { peftAdapterFiles } from '../../src/methods/lora/peft.js';
import { linearModules } from '../../src/methods/targets.js';
import { CausalLM, type CausalLMOptions } from '../../src/model/causal-lm.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { FineTuner } from '../../src/train/finetuner.js';
import { isDense } from '../../src/model/linear-weights.js';
import { tinyModelFiles, type TinyModelOptions } from '../../src/model/tiny.js';
import { AdapterCache } from '../../src/serve/adapter-cache.js';
import { memoryAdapterStore } from '../../src/serve/adapter-store.js';
import { indexedDbAdapterStore } from '../../src/browser/indexeddb-adapters.js';
import type { LoraAdapter, SparseAdapter } from '../../src/serve/adapters.js';
import { Generator, type GenerateResult } from '../../src/serve/generate.js';
import { compare, freshSeed, randn, rng, testGpu } from '../helpers.js';

const TINY: TinyModelOptions = { architecture: 'llama', hiddenSize: 32, intermediateSize: 40, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositions: 64, initStd: 0.3 };

async function base(gpu: Gpu, seed: number, o: CausalLMOptions = {}, tiny: Partial<TinyModelOptions> = {}): Promise<CausalLM> {
  return CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource(tinyModelFiles({ ...TINY, ...tiny, seed }))), o);
}

function randomLora(model: CausalLM, rand: () => number, rank: number, targets: string[], scale = 0.7): LoraAdapter {
  const modules = new Map([...linearModules(model.config, targets, 'test')].map(([name, s]) => [name, { rank, scale, A: randn(rank * s.in, rand).map((v) => v * 0.3), B: randn(s.out * rank, rand).map((v) => v * 0.3) }]));
  return { kind: 'lora', modules };
}

function randomSparse(model: CausalLM, rand: () => number, density: number, targets: string[]): SparseAdapter {
  const modules = new Map(
    [...linearModules(model.config, targets, 'test')].map(([name, s]) => {
      const indices = Uint32Array.from({ length: s.out * s.in }, (_, i) => i).filter(() => rand() < density);
      return [name, { indices, delta: randn(indices.length, rand).map((v) => v * 0.5) }];
    }),
  );
  return { kind: 'sparse', modules };
}

/** A LoRA method on `model` holding exactly this adapter (one rank and scale over its modules). */
function attachAlone(model: CausalLM, a: LoraAdapter): Lora {
  const [first] = a.modules.values();
  const kinds = [...new Set([...a.modules.keys()].map((m) => m.split('.')[2]))];
  const lora = new Lora(model.gpu, model.config, { rank: first.rank, alpha: first.scale * first.rank, targetModules: kinds }, loraBase(model));
  for (const [name, w] of a.modules) {
    model.gpu.write(lora.params.view(`${name}.lora_A`), w.A);
    model.gpu.write(lora.params.view(`${name}.lora_B`), w.B);
  }
  model.transformer.hooks = lora;
  return lora;
}

/** The delta written into the weights of `model` (f32 base) on the host: what serving it alone means. */
async function writeSparse(model: CausalLM, a: SparseAdapter): Promise<void> {
  for (const [name, d] of a.modules) {
    const w = model.linearWeight(`${name}.weight`);
    if (!isDense(w)) throw new Error('dense weights only');
    const values = await model.gpu.readF32(w.view);
    d.indices.forEach((i, k) => (values[i] += d.delta[k]));
    model.gpu.write(w.view, values);
  }
}

/** The bits of every linear weight of a dense base as stored (f32, or 16-bit packed in pairs). */
async function weightBits(model: CausalLM): Promise<Uint32Array[]> {
  return Promise.all([...linearModules(model.config, ['all-linear'], 'test').keys()].map(async (m) => {
    const w = model.linearWeight(`${m}.weight`);
    if (!isDense(w)) throw new Error('dense weights only');
    return new Uint32Array(await model.gpu.read(w.view));
  }));
}

const sameBits = (a: Uint32Array[], b: Uint32Array[]) => a.every((w, i) => w.every((v, k) => v === b[i][k]));

/** B rows of S tokens, each row's targets its next tokens (none after its last). */
function nextTokenBatch(ids: Uint32Array, B: number, S: number) {
  return { B, S, ids, targets: Int32Array.from({ length: B * S }, (_, t) => (t % S === S - 1 ? -100 : ids[t + 1])) };
}

const greedy = { maxNewTokens: 5, keepLogits: true, stopTokens: [] as number[] };

function expectSameGeneration(got: { tokens: number[]; logits?: Float32Array[] }, want: { tokens: number[]; logits?: Float32Array[] }, what: string): void {
  expect(got.tokens, what).toEqual(want.tokens);
  for (let i = 0; i < want.logits!.length; i++) expect(compare(got.logits![i], want.logits![i]).rel, `${what} step ${i}`).toBeLessThan(1e-4);
}

describe('adapter cache: LoRA', () => {
  it.each([
    ['an f32 base', {}, {}],
    ['a bf16 base', { baseDtype: 'bf16' as const }, {}],
    ['an NF4 base', { quantize: 'nf4' as const }, {}],
    ['a Gemma 2 base (soft caps, windows, norms after each sublayer)', {}, { architecture: 'gemma2', headDim: 8, attnSoftcap: 2, finalSoftcap: 3, slidingWindow: 4 } as const],
  ])('on %s, each adapter gives the outputs of that adapter attached alone, one by one and in one mixed batch', async (_, loadOptions, tiny: Partial<TinyModelOptions>) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const served = await base(gpu, seed, loadOptions, tiny);
    const alone = await base(gpu, seed, loadOptions, tiny);
    const cache = new AdapterCache(served);
    // Mixed ranks (pools of rank 2, 4 and 8) and targets.
    const adapters = {
      a: randomLora(served, rand, 2, ['q', 'v']),
      b: randomLora(served, rand, 3, ['all-linear'], 1.5),
      c: randomLora(served, rand, 8, ['q', 'v']),
    };
    for (const [id, a] of Object.entries(adapters)) cache.add(id, a);
    const gen = new Generator(served, { adapters: cache });
    const ref = new Generator(alone);
    const prompts = [Array.from({ length: 5 }, () => Math.floor(rand() * 256)), Array.from({ length: 9 }, () => Math.floor(rand() * 256)), [7, 8, 9], Array.from({ length: 3 }, () => Math.floor(rand() * 256))];
    const rows = ['b', null, 'a', 'c'] as const;
    const want: GenerateResult[] = [];
    for (let i = 0; i < prompts.length; i++) {
      const id = rows[i];
      const lora = id ? attachAlone(alone, adapters[id]) : null;
      want.push(await ref.generate(prompts[i], greedy));
      alone.transformer.hooks = null;
      lora?.destroy();
    }
    for (let i = 0; i < prompts.length; i++) expectSameGeneration(await gen.generate(prompts[i], { ...greedy, adapters: rows[i] }), want[i], `seed ${seed} row ${i} alone`);
    const batched = await gen.generateBatch(prompts, { ...greedy, adapters: [...rows] });
    batched.forEach((r, i) => expectSameGeneration(r, want[i], `seed ${seed} row ${i} in the batch`));
    // The adapter changes the output: the test would notice a cache that served the base.
    expect(compare(want[0].logits![0], (await gen.generate(prompts[0], { ...greedy, adapters: null })).logits![0]).rel).toBeGreaterThan(1e-3);
    cache.destroy();
    expect(served.transformer.hooks).toBeNull();
    for (const m of [served, alone]) m.destroy();
  });

  it('takes PEFT files and a trained method, and evaluates many adapters on one batch row by row', async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const served = await base(gpu, seed);
    const alone = await base(gpu, seed);
    const cache = new AdapterCache(served);
    const a = randomLora(served, rand, 4, ['q', 'k', 'v', 'o']);
    const lora = attachAlone(alone, a);
    const files = await peftAdapterFiles(lora);
    await cache.addPeft('peft', { config: files['adapter_config.json'], weights: files['adapter_model.safetensors'] });
    await cache.addFromMethod('method', lora);
    expect(cache.info('peft')).toMatchObject({ kind: 'lora', rank: 4, poolRank: 4, resident: true });

    const S = 12;
    const batch = nextTokenBatch(Uint32Array.from({ length: 3 * S }, () => Math.floor(rand() * 256)), 3, S);
    const got = await cache.evaluate(batch, ['peft', null, 'method']);
    const withAdapter = await alone.evaluate(batch, { perRow: true });
    alone.transformer.hooks = null;
    const baseOnly = await alone.evaluate(batch, { perRow: true });
    const want = [withAdapter.rows![0], baseOnly.rows![1], withAdapter.rows![2]];
    got.rows!.forEach((r, i) => expect(Math.abs(r.loss - want[i].loss) / want[i].loss, `seed ${seed} row ${i}`).toBeLessThan(1e-5));
    expect(Math.abs(want[0].loss - want[1].loss)).toBeGreaterThan(1e-3);
    lora.destroy();
    cache.destroy();
    for (const m of [served, alone]) m.destroy();
  });
});

describe('adapter cache: sparse adapters', () => {
  it('serves each sparse delta as the weights with it written in, and switching away restores the base bit for bit', async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const served = await base(gpu, seed);
    const cache = new AdapterCache(served);
    const before = await weightBits(served);
    // Overlapping masks, so a switch that did not restore first would leave a trace.
    const s1 = randomSparse(served, rand, 0.2, ['q', 'v', 'down']);
    const s2 = randomSparse(served, rand, 0.2, ['q', 'up']);
    cache.add('s1', s1);
    cache.add('lora', randomLora(served, rand, 2, ['q']));
    cache.select('s1'); // in the weights while s2 is added: s2's base values must still be the base's
    cache.add('s2', s2);
    const gen = new Generator(served, { adapters: cache });
    const prompt = Array.from({ length: 6 }, () => Math.floor(rand() * 256));
    const got = { s1: await gen.generate(prompt, { ...greedy, adapters: 's1' }), s2: await gen.generate(prompt, { ...greedy, adapters: 's2' }) };
    const baseOut = await gen.generate(prompt, { ...greedy, adapters: null });
    expect(sameBits(await weightBits(served), before), `seed ${seed}: the base restored`).toBe(true);

    for (const id of ['s1', 's2'] as const) {
      const alone = await base(gpu, seed);
      await writeSparse(alone, id === 's1' ? s1 : s2);
      expectSameGeneration(got[id], await new Generator(alone).generate(prompt, greedy), `seed ${seed} ${id}`);
      alone.destroy();
    }
    expect(compare(got.s1.logits![0], baseOut.logits![0]).rel).toBeGreaterThan(1e-3);
    expect(() => cache.selectRows(['s1', 'lora'])).toThrow(expect.objectContaining({ code: 'adapter-batch' }));
    expect(() => cache.selectRows(['s1', null])).toThrow(AdapterCacheError);
    cache.select('s2');
    cache.destroy(); // takes s2 out of the weights
    expect(sameBits(await weightBits(served), before)).toBe(true);
    served.destroy();
  });
});

describe('adapter cache: sparse adapters on a 16-bit base, under a budget for one', () => {
  it('evicts the one not in use and restores the bf16 base bit for bit after every switch', async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const served = await base(gpu, seed, { baseDtype: 'bf16' });
    const before = await weightBits(served);
    const s1 = randomSparse(served, rand, 0.2, ['q', 'down']);
    const s2 = randomSparse(served, rand, 0.2, ['q', 'gate']);
    const sizing = new AdapterCache(served);
    const bytes = Math.max(sizing.add('s1', s1).gpuBytes, sizing.add('s2', s2).gpuBytes);
    sizing.destroy();
    const cache = new AdapterCache(served, { gpuBudgetBytes: Math.floor(bytes * 1.5) });
    cache.add('s1', s1);
    cache.add('s2', s2);
    expect([cache.info('s1').resident, cache.info('s2').resident]).toEqual([false, true]);
    const prompt = [9, 8, 7, 6];
    const gen = new Generator(served, { adapters: cache });
    const baseOut = await gen.generate(prompt, { ...greedy, adapters: null });
    const out1 = await gen.generate(prompt, { ...greedy, adapters: 's1' });
    expect([cache.info('s1').resident, cache.info('s2').resident]).toEqual([true, false]);
    await gen.generate(prompt, { ...greedy, adapters: 's2' });
    const again = await gen.generate(prompt, { ...greedy, adapters: 's1' });
    expect(again.logits).toEqual(out1.logits); // back from the host, the same values in the weights
    expect(compare(out1.logits![0], baseOut.logits![0]).rel).toBeGreaterThan(1e-3);
    cache.select(null);
    expect(sameBits(await weightBits(served), before), `seed ${seed}`).toBe(true);
    cache.destroy();
    served.destroy();
  });
});

describe('adapter cache: sparse plus low-rank', () => {
  it('serves a trained sparse+LoRA method as its sparse part in the weights and its adapter beside them', async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const ckpt = await openCheckpoint(memorySource(tinyModelFiles({ ...TINY, seed })));
    const ft = await FineTuner.create(gpu, ckpt, { method: 'sparse+lora', 'sparse+lora': { sparse: { selection: 'random', density: 0.1, seed }, lora: { rank: 3 } }, optimizer: { lr: 3e-2 } });
    const S = 10;
    const batch = nextTokenBatch(Uint32Array.from({ length: 2 * S }, () => Math.floor(rand() * 256)), 2, S);
    for (let i = 0; i < 3; i++) await ft.step(batch); // B and the sparse values move away from their starts
    const prompt = Array.from({ length: 6 }, () => Math.floor(rand() * 256));
    const want = await new Generator(ft.model).generate(prompt, greedy);

    const served = await CausalLM.fromCheckpoint(gpu, ckpt);
    const cache = new AdapterCache(served);
    expect(await cache.addFromMethod('rosa', ft.method)).toMatchObject({ kind: 'sparse+lora', rank: 3, poolRank: 4 });
    cache.add('lora', randomLora(served, rand, 2, ['q']));
    const gen = new Generator(served, { adapters: cache });
    expectSameGeneration(await gen.generate(prompt, { ...greedy, adapters: 'rosa' }), want, `seed ${seed}`);
    const both = await gen.generateBatch([prompt, prompt], { ...greedy, adapters: ['rosa', 'rosa'] });
    both.forEach((r, i) => expectSameGeneration(r, want, `seed ${seed} row ${i}`));
    expect(() => cache.selectRows(['rosa', 'lora'])).toThrow(expect.objectContaining({ code: 'adapter-batch' }));
    expect(compare((await gen.generate(prompt, { ...greedy, adapters: null })).logits![0], want.logits![0]).rel).toBeGreaterThan(1e-3);
    cache.destroy();
    served.destroy();
    ft.destroy();
  });
});

describe('adapter cache: tiers, eviction and errors', () => {
  it('evicts the least recently used adapter no batch holds, and an evicted adapter comes back from the host intact', async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const served = await base(gpu, seed);
    const alone = await base(gpu, seed);
    const cap = AdapterCache.capacity(served.config, gpu.limits, { rank: 2, targetModules: ['q', 'v'] });
    // Room for one buffer of two slots.
    const cache = new AdapterCache(served, { slotsPerBuffer: 2, gpuBudgetBytes: 2 * cap.bytesPerAdapter });
    const adapters = Array.from({ length: 4 }, () => randomLora(served, rand, 2, ['q', 'v']));
    cache.add('a0', adapters[0]);
    cache.add('a1', adapters[1]);
    cache.select('a0'); // a0 is held by the selection; a1 is the one to go
    cache.add('a2', adapters[2]);
    expect([0, 1, 2].map((i) => cache.info(`a${i}`).resident)).toEqual([true, false, true]);
    cache.selectRows(['a0', 'a2']);
    expect(() => cache.add('a3', adapters[3])).toThrow(expect.objectContaining({ code: 'adapter-cache-full' }));
    expect(cache.has('layers.0.q')).toBe(true);
    expect(() => cache.remove('a0')).toThrow(expect.objectContaining({ code: 'adapter-in-use' }));

    // A batch in flight holds its adapters: adding one between its steps takes another's slot or fails.
    const gen = new Generator(served, { adapters: cache });
    const ref = new Generator(alone);
    const prompts = [[1, 2, 3, 4], [5, 6, 7]];
    const want: GenerateResult[] = [];
    for (const [i, id] of [0, 1].entries()) {
      const l = attachAlone(alone, adapters[id]);
      want.push(await ref.generate(prompts[i], greedy));
      alone.transformer.hooks = null;
      l.destroy();
    }
    cache.select(null);
    let added: unknown = null;
    const out = await gen.generateBatch(prompts, {
      ...greedy, adapters: ['a0', 'a1'],
      onToken: (_, b) => {
        if (b !== 1 || added) return;
        try {
          cache.add('late', adapters[3]);
          added = 'added';
        } catch (e) {
          added = e;
        }
      },
    });
    expect(added).toEqual(expect.objectContaining({ code: 'adapter-cache-full' }));
    out.forEach((r, i) => expectSameGeneration(r, want[i], `seed ${seed} row ${i}`));
    expect(cache.info('a1').resident).toBe(true); // uploaded again from the host tier
    expect(cache.info('a2').resident).toBe(false);

    // A selection that cannot be made may already have evicted the one before it: nothing stays selected.
    cache.select(null); // the batch's adapters were its selection
    cache.add('a3', adapters[3]);
    cache.select('a0');
    const batch = nextTokenBatch(Uint32Array.from({ length: 8 }, (_, t) => t + 1), 1, 8);
    const withA0 = await served.evaluate(batch);
    expect(() => cache.selectRows(['a1', 'a2', 'a3'])).toThrow(expect.objectContaining({ code: 'adapter-cache-full' }));
    expect(cache.info('a0').resident).toBe(false);
    expect(cache.has('layers.0.q')).toBe(false);
    const baseOnly = await alone.evaluate(batch);
    expect((await served.evaluate(batch)).loss).toBeCloseTo(baseOnly.loss, 5);
    expect(Math.abs(withA0.loss - baseOnly.loss)).toBeGreaterThan(1e-4);
    await expect(cache.evaluate(batch, ['a0', 'a1'])).rejects.toThrow(/2 adapters for a batch of 1 rows/);
    cache.destroy();
    for (const m of [served, alone]) m.destroy();
  });

  it('keeps host memory within its budget by moving adapters to the store (IndexedDB in browsers), and loads them back when used', async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const served = await base(gpu, seed);
    const alone = await base(gpu, seed);
    const cap = AdapterCache.capacity(served.config, gpu.limits, { rank: 2, targetModules: ['q', 'v'] });
    const adapters = Array.from({ length: 5 }, () => randomLora(served, rand, 2, ['q', 'v']));
    const hostBytes = [...adapters[0].modules.values()].reduce((n, m) => n + m.A.byteLength + m.B.byteLength, 0);
    const store = typeof indexedDB === 'undefined' ? memoryAdapterStore() : indexedDbAdapterStore({ database: `adapters-test-${seed}` });
    const cache = new AdapterCache(served, { slotsPerBuffer: 2, gpuBudgetBytes: 2 * cap.bytesPerAdapter, store, hostBudgetBytes: 2 * hostBytes });
    adapters.forEach((a, i) => cache.add(`a${i}`, a));
    await cache.flush();
    const where = () => adapters.map((_, i) => cache.info(`a${i}`));
    expect(where().filter((x) => x.onHost).length).toBe(2);
    expect(where().map((x) => x.resident)).toEqual([false, false, false, true, true]);
    expect(where()[0].onHost).toBe(false);
    expect(() => cache.select('a0')).toThrow(expect.objectContaining({ code: 'adapter-not-loaded' }));

    const prompt = [3, 1, 4, 1, 5];
    const l = attachAlone(alone, adapters[0]);
    const want = await new Generator(alone).generate(prompt, greedy);
    l.destroy();
    const got = await new Generator(served, { adapters: cache }).generate(prompt, { ...greedy, adapters: 'a0' });
    expectSameGeneration(got, want, `seed ${seed}: a0 back from the store`);
    expect(cache.info('a0')).toMatchObject({ resident: true, onHost: true });
    expect(where().filter((x) => x.onHost).length).toBe(2); // a0 in, the least recently used other out
    cache.destroy();
    for (const m of [served, alone]) m.destroy();
  });

  it('refuses bad shapes, other bases, unknown and taken ids with typed errors, and keeps nothing of them', async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const served = await base(gpu, seed);
    const cache = new AdapterCache(served);
    const good = randomLora(served, rand, 2, ['q']);
    const bad = (edit: (a: LoraAdapter) => void) => {
      const a = randomLora(served, rand, 2, ['q']);
      edit(a);
      return a;
    };
    expect(() => cache.add('x', bad((a) => (a.modules.get('layers.0.q')!.A = new Float32Array(3))))).toThrow(ShapeError);
    expect(() => cache.add('x', bad((a) => (a.modules.get('layers.0.q')!.rank = 99)))).toThrow(/rank 99/);
    expect(() => cache.add('x', bad((a) => a.modules.set('layers.7.q', a.modules.get('layers.0.q')!)))).toThrow(/not a linear layer/);
    expect(() => cache.add('x', { ...good, base: { shapes: 'another model' } })).toThrow(ModelMismatchError);
    expect(() => cache.add('x', { ...good, base: { weights: 'other weights' } })).toThrow(ModelMismatchError);
    const sparse = randomSparse(served, rand, 0.1, ['q']);
    const dup = sparse.modules.get('layers.0.q')!;
    dup.indices[1] = dup.indices[0];
    expect(() => cache.add('x', sparse)).toThrow(/twice/);
    expect(cache.size).toBe(0);
    cache.add('x', good);
    expect(() => cache.add('x', good)).toThrow(expect.objectContaining({ code: 'adapter-exists' }));
    expect(() => cache.select('nope')).toThrow(expect.objectContaining({ code: 'adapter-unknown' }));
    await expect(new Generator(served, { adapters: cache }).generateBatch([[1], [2]], { ...greedy, adapters: ['x'] })).rejects.toThrow(/1 adapters for 2 prompts/);
    cache.destroy();
    // A 4-bit base has no dense weights to write a sparse adapter into.
    const q = await base(gpu, seed, { quantize: 'nf4' });
    const qc = new AdapterCache(q);
    expect(() => qc.add('s', randomSparse(q, rand, 0.1, ['q']))).toThrow(/stored nf4/);
    qc.destroy();
    q.destroy();
    served.destroy();
  });
});
