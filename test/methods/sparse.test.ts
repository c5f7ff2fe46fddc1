/**
 * Sparse fine-tuning: the masked gradient against the float64 dense gradient gathered at the mask, a
 * forward pass identical to the base's, exact unmerging, the mask file (with GPT-2's fused, transposed
 * c_attn), and bad masks refused before anything changes.
 */
import { describe, expect, it } from 'vitest';
import { successorRows, toBatchInput } from '../../src/data/tasks.js';
import { ModelMismatchError, ShapeError } from '../../src/errors.js';
import { bf16ToF32, f32ToBf16, InvalidModelFileError } from '../../src/io/safetensors.js';
import { memorySource } from '../../src/io/sources.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { paramSpecs } from '../../src/model/layout.js';
import { tinyModelFiles, type TinyModelOptions } from '../../src/model/tiny.js';
import { columnMask, randomMask, sparse, SparseFineTuning, SparseMask, topK, type Granularity } from '../../src/methods/sparse/index.js';
import { FineTuner } from '../../src/train/finetuner.js';
import { compare, freshSeed, randn, rng, testGpu } from '../helpers.js';
import { sparseLora } from '../../src/methods/sparse-lora/index.js';
import type { Lora } from '../../src/methods/lora/index.js';
import { modelLossAndGrads } from '../reference/model.js';

const LLAMA: TinyModelOptions = { architecture: 'llama', hiddenSize: 32, intermediateSize: 48, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositions: 32 };
const GPT2: TinyModelOptions = { architecture: 'gpt2', hiddenSize: 32, numLayers: 2, numHeads: 4, maxPositions: 32 };

async function load(options: TinyModelOptions, seed: number): Promise<CausalLM> {
  const ckpt = await openCheckpoint(memorySource(tinyModelFiles({ ...options, seed, initStd: 0.2 })));
  return CausalLM.fromCheckpoint(await testGpu(), ckpt);
}

describe.each<[string, TinyModelOptions, Granularity, number]>([
  ['llama, elements', LLAMA, 'element', 0.3],
  ['llama, 16x16 blocks', LLAMA, 16, 0.5],
  ['gpt2, elements', GPT2, 'element', 0.2],
  ['gpt2, 16x16 blocks', GPT2, 16, 0.4],
  ['llama on a bf16 base (kept 16-bit), elements', { ...LLAMA, dtype: 'BF16' }, 'element', 0.3],
])('sparse gradients on %s', (_name, options, granularity, density) => {
  it('equal the float64 dense gradient gathered at the mask', async () => {
    const seed = freshSeed();
    const rand = rng(seed);
    const model = await load(options, seed);
    const mask = randomMask(model.config, { density, granularity, seed });
    const method = new SparseFineTuning(model.gpu, model, mask);
    model.transformer.hooks = method.linear;
    try {
      const batch = model.prepare({ ids: Array.from({ length: 22 }, () => Math.floor(rand() * 256)), B: 2, S: 11 });
      const rec = model.gpu.recorder();
      method.zeroGrads(rec);
      const acts = model.record(rec, batch, 1 / batch.targetCount, { training: true, pass: 1 });
      await rec.submit();
      const loss = (await model.gpu.readF32(acts.losses)).reduce((a, b) => a + b, 0) / batch.targetCount;
      acts.unpin();
      const params = new Map<string, Float64Array>();
      for (const s of paramSpecs(model.config)) params.set(s.name, Float64Array.from(await model.readParam(s.name)));
      const ref = modelLossAndGrads(model.config, params, batch);
      expect(Math.abs(loss - ref.loss) / ref.loss, `seed ${seed}`).toBeLessThan(1e-4);
      for (const m of method.modules) {
        const dense = ref.grads.get(`${m}.weight`)!;
        const want = Array.from(mask.valueIndices(m), (i) => dense[i]);
        const err = compare(await model.gpu.readF32(method.grads.view(`${m}.sparse_values`)), want);
        expect(err.rel, `seed ${seed} ${m} (max abs ${err.maxAbs})`).toBeLessThan(1e-3);
      }
      expect(model.grads).toBeNull(); // no dense weight gradient anywhere
      if (options.dtype) expect(model.packed).not.toBeNull(); // the reference read the same rounded weights
    } finally {
      model.transformer.hooks = null;
      method.destroy();
      model.destroy();
    }
  });
});

describe.each<[string, TinyModelOptions, Granularity]>([
  ['llama, elements', LLAMA, 'element'],
  ['gpt2, 16x16 blocks', GPT2, 16],
])('sparse plus LoRA gradients on %s', (_name, options, granularity) => {
  it('match the float64 reference: LoRA tensors, and the dense gradient (with the adapter) at the mask', async () => {
    const seed = freshSeed();
    const rand = rng(seed);
    const model = await load(options, seed);
    const method = sparseLora.attach(model, { sparse: { selection: 'random', density: 0.3, granularity, seed }, lora: { rank: 3, alpha: 5, seed } });
    const lora = (method as unknown as { lora: Lora }).lora;
    const sparsePart = (method as unknown as { sparse: SparseFineTuning }).sparse;
    model.transformer.hooks = method.linear;
    try {
      // B starts at zero (which would zero A's gradient): give it random values to test both.
      for (const name of lora.names) if (name.endsWith('lora_B')) model.gpu.write(lora.params.view(name), randn(lora.params.view(name).size / 4, rand, 0.3));
      const batch = model.prepare({ ids: Array.from({ length: 18 }, () => Math.floor(rand() * 256)), B: 2, S: 9 });
      const rec = model.gpu.recorder();
      method.zeroGrads(rec);
      const acts = model.record(rec, batch, 1 / batch.targetCount, { training: true, pass: 1 });
      await rec.submit();
      acts.unpin();
      const params = new Map<string, Float64Array>();
      for (const s of paramSpecs(model.config)) params.set(s.name, Float64Array.from(await model.readParam(s.name)));
      const modules = new Map<string, { A: Float64Array; B: Float64Array }>();
      for (const m of lora.modules.keys()) {
        modules.set(m, {
          A: Float64Array.from(await model.gpu.readF32(lora.params.view(`${m}.lora_A`))),
          B: Float64Array.from(await model.gpu.readF32(lora.params.view(`${m}.lora_B`))),
        });
      }
      const ref = modelLossAndGrads(model.config, params, batch, { scale: lora.scale, rank: 3, modules });
      for (const name of lora.names) {
        const err = compare(await model.gpu.readF32(lora.grads.view(name)), ref.grads.get(name)!);
        expect(err.rel, `seed ${seed} ${name}`).toBeLessThan(1e-3);
      }
      for (const m of sparsePart.modules) {
        const dense = ref.grads.get(`${m}.weight`)!;
        const want = Array.from(sparsePart.mask.valueIndices(m), (i) => dense[i]);
        const err = compare(await model.gpu.readF32(sparsePart.grads.view(`${m}.sparse_values`)), want);
        expect(err.rel, `seed ${seed} ${m}`).toBeLessThan(1e-3);
      }
    } finally {
      model.transformer.hooks = null;
      method.destroy();
      model.destroy();
    }
  });
});

describe('sparse fine-tuning in place', () => {
  it('records exactly the dispatches of the frozen base in a forward pass', async () => {
    const model = await load(LLAMA, 3);
    const method = sparse.attach(model, { selection: 'random', density: 0.1 });
    try {
      const batch = model.prepare(toBatchInput(successorRows(2, 6, 1)));
      const describe = (hooks: typeof method.linear) => {
        model.transformer.hooks = hooks;
        const rec = model.gpu.recorder();
        const acts = model.record(rec, batch);
        const lines = rec.describe();
        acts.unpin();
        return lines;
      };
      const base = describe(null);
      expect(base.length).toBeGreaterThan(10);
      expect(describe(method.linear)).toEqual(base);
    } finally {
      model.transformer.hooks = null;
      method.destroy();
      model.destroy();
    }
  });

  it.each<[Granularity, number, 'F32' | 'BF16']>([
    ['element', 0.05, 'F32'],
    [16, 0.25, 'F32'],
    ['element', 0.05, 'BF16'],
  ])('learns (%s mask, %f, %s base), writes only at the mask, and unmerging restores the base bit for bit', async (granularity, density, dtype) => {
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(memorySource(tinyModelFiles({ ...LLAMA, seed: 11, initStd: 0.2, dtype })));
    const ft = await FineTuner.create(gpu, ckpt, { method: 'sparse', sparse: { selection: 'random', density, granularity }, optimizer: { lr: 1e-2 } });
    const method = ft.method as SparseFineTuning;
    const weights = method.modules.map((m) => `${m}.weight`);
    const before = new Map(await Promise.all(weights.map(async (w) => [w, await ft.model.readParam(w)] as const)));
    const batch = toBatchInput(successorRows(4, 8, 5));
    const first = (await ft.step(batch)).loss;
    let last = first;
    for (let s = 0; s < 15; s++) last = (await ft.step(batch)).loss;
    expect(last).toBeLessThan(first * 0.9);
    for (const w of weights) {
      const now = await ft.model.readParam(w);
      const inMask = new Set(method.mask.elementIndices(w.replace(/\.weight$/, '')));
      now.forEach((v, i) => {
        if (!inMask.has(i)) expect(v, `${w}[${i}]`).toBe(before.get(w)![i]);
      });
    }
    if (dtype === 'BF16') {
      // A 16-bit base holds the f32 master values rounded to bf16.
      for (const m of method.modules) {
        const values = await gpu.readF32(method.values.view(`${m}.sparse_values`));
        const now = await ft.model.readParam(`${m}.weight`);
        const want = bf16ToF32(f32ToBf16(values));
        expect(Array.from(method.mask.valueIndices(m), (i) => now[i]), m).toEqual(Array.from(want));
      }
    }
    const rec = gpu.recorder();
    method.setMerged(rec, false);
    await rec.submit();
    for (const w of weights) expect(Array.from(await ft.model.readParam(w)), w).toEqual(Array.from(before.get(w)!));
    // Training again puts the trained values back first.
    await ft.step(batch);
    expect(method.merged).toBe(true);
    ft.destroy();
  });
});

describe('sparse masks', () => {
  it.each<[string, TinyModelOptions, Granularity]>([
    ['llama elements', LLAMA, 'element'],
    ['llama blocks', LLAMA, 16],
    ['gpt2 elements (fused, transposed c_attn)', GPT2, 'element'],
    ['gpt2 blocks', GPT2, 16],
  ])('round-trip through the safetensors file: %s', async (_name, options, granularity) => {
    const model = await load(options, 4);
    try {
      const mask = randomMask(model.config, { density: 0.3, granularity, budget: 'global', seed: freshSeed() });
      const back = await SparseMask.fromSafetensors(mask.toSafetensors(model.config), model.config);
      expect(back.granularity).toBe(granularity);
      expect([...back.entries.keys()]).toEqual([...mask.entries.keys()]);
      for (const [m, e] of mask.entries) expect(Array.from(back.entries.get(m)!.indices), m).toEqual(Array.from(e.indices));
      expect(back.info.selection).toBe('random');
      expect(back.density).toBeCloseTo(mask.density, 12);
    } finally {
      model.destroy();
    }
  });

  it("names indices by Hugging Face tensor in that tensor's layout (GPT-2's c_attn, by hand)", async () => {
    const model = await load(GPT2, 4);
    try {
      // Element (o=1, i=2) of layers.0.k: row 32 + 1 of the joined [q; k; v], stored transposed [in, 3 * out].
      const mask = new SparseMask('element', new Map([['layers.0.k', { rows: 32, cols: 32, indices: Uint32Array.of(1 * 32 + 2) }]]), { selection: 'hand', budget: 'per-matrix', calibrationTokens: 0, fingerprint: null });
      const bytes = mask.toSafetensors(model.config);
      const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
      const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
      expect(Object.keys(header).filter((k) => k !== '__metadata__')).toEqual(['transformer.h.0.attn.c_attn.weight']);
      const [begin] = header['transformer.h.0.attn.c_attn.weight'].data_offsets;
      expect(new DataView(bytes.buffer).getUint32(8 + headerLength + begin, true)).toBe(2 * 96 + 33);
    } finally {
      model.destroy();
    }
  });

  it('column masks train whole input columns', async () => {
    const model = await load(LLAMA, 2);
    const mask = columnMask(model.config, { density: 0.1, seed: 3 });
    for (const [m, e] of mask.entries) {
      const cols = new Set(Array.from(e.indices, (f) => f % e.cols));
      expect(cols.size, m).toBe(Math.round(0.1 * e.cols));
      expect(e.indices.length, m).toBe(cols.size * e.rows);
    }
    model.destroy();
  });

  it('topK takes the largest scores, ties toward lower indices', () => {
    const seed = freshSeed();
    const rand = rng(seed);
    for (const n of [1, 7, 100, 1001]) {
      const scores = Float64Array.from({ length: n }, () => Math.floor(rand() * 20));
      for (const k of [1, Math.ceil(n / 3), n]) {
        const want = Array.from(scores.keys()).sort((a, b) => scores[b] - scores[a] || a - b).slice(0, k).sort((a, b) => a - b);
        expect(Array.from(topK(scores, k)), `seed ${seed} n=${n} k=${k}`).toEqual(want);
      }
    }
  });
});

describe('bad masks are refused and change nothing', () => {
  it('a mask for another model: other shapes, or other weights', async () => {
    const model = await load(LLAMA, 5);
    const other = await load({ ...LLAMA, hiddenSize: 48 }, 5);
    const sameShapes = await load(LLAMA, 6);
    try {
      const foreign = randomMask(other.config, { density: 0.1 });
      expect(() => sparse.check(model.config, { mask: foreign })).toThrow(ModelMismatchError);
      await expect(SparseMask.fromSafetensors(foreign.toSafetensors(other.config), model.config)).rejects.toThrow(ModelMismatchError);
      // Selected on one base (fingerprinted), used on another with the same shapes.
      const r = randomMask(model.config, { density: 0.1 });
      const fingerprinted = new SparseMask(r.granularity, r.entries, { ...r.info, selection: 'sylva', fingerprint: sameShapes.fingerprint });
      const bytes = fingerprinted.toSafetensors(model.config);
      const read = await SparseMask.fromSafetensors(bytes, model.config);
      const stats = model.gpu.memoryStats();
      expect(() => sparse.attach(model, { mask: read })).toThrow(ModelMismatchError);
      expect(model.gpu.memoryStats().currentBytes).toBe(stats.currentBytes);
      expect(() => sparse.attach(sameShapes, { mask: read }).destroy()).not.toThrow();
    } finally {
      for (const m of [model, other, sameShapes]) m.destroy();
    }
  });

  it('out-of-range, unsorted or duplicate indices, partial blocks and malformed files', async () => {
    const model = await load(LLAMA, 5);
    const info = { selection: 'hand', budget: 'per-matrix' as const, calibrationTokens: 0, fingerprint: null };
    const entry = (indices: number[]) => new Map([['layers.0.q', { rows: 32, cols: 32, indices: Uint32Array.from(indices) }]]);
    expect(() => new SparseMask('element', entry([5, 32 * 32]), info)).toThrow(ShapeError);
    expect(() => new SparseMask('element', entry([9, 5]), info)).toThrow(ShapeError);
    expect(() => new SparseMask('element', entry([5, 5]), info)).toThrow(ShapeError);
    expect(() => new SparseMask(16, entry([4]), info)).toThrow(ShapeError); // a 32x32 weight has 4 blocks of 16
    expect(() => sparse.check(model.config, { density: 0 })).toThrow(ShapeError);
    expect(() => sparse.check(model.config, { granularity: 64 })).toThrow(/do not tile/);
    expect(() => sparse.check(model.config, { targetModules: ['c_attn'] })).toThrow(/do not exist/);
    const good = randomMask(model.config, { density: 0.2, granularity: 16 }).toSafetensors(model.config);
    await expect(SparseMask.fromSafetensors(good.slice(0, good.length - 3), model.config)).rejects.toThrow(InvalidModelFileError);
    // An element file whose indices are not whole blocks, claimed as a block mask.
    const elements = randomMask(model.config, { density: 0.2 }).toSafetensors(model.config);
    const headerEnd = 8 + Number(new DataView(elements.buffer).getBigUint64(0, true));
    const header = new TextDecoder().decode(elements.subarray(8, headerEnd)).replace('"granularity":"element"', '"granularity":"16"     ');
    const forged = elements.slice();
    forged.set(new TextEncoder().encode(header), 8);
    await expect(SparseMask.fromSafetensors(forged, model.config)).rejects.toThrow(/whole 16x16 blocks/);
    model.destroy();
  });
});
