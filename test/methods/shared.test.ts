/**
 * PEFT's four adapter tests, run for every registered method through the same code: a freshly attached
 * method changes nothing; merging gives the trained output and unmerging restores the base exactly
 * (methods that merge); training changes what the method trains and leaves everything else
 * bit-identical; and saved state loads back exactly. A new method in the registry is tested here with
 * its default options (or richer ones listed below) without touching this file, on a model of each
 * architecture family whose layers differ (GPT-2's and Phi-3's fused weights, Qwen3's and Gemma's extra norms).
 */
import { describe, expect, it } from 'vitest';
import { successorRows, toBatchInput } from '../../src/data/tasks.js';
import { memorySource } from '../../src/io/sources.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tinyModelFiles } from '../../src/model/tiny.js';
import { methodDefinition, methodNames, type MethodName } from '../../src/methods/registry.js';
import { FineTuner, type FineTuneOptions } from '../../src/train/finetuner.js';
import { compare, IN_BROWSER, testGpu } from '../helpers.js';

const shape = { seed: 5, hiddenSize: 32, intermediateSize: 48, numLayers: 2, numHeads: 4, numKvHeads: 2, initStd: 0.2, maxPositions: 64 };
const FAMILIES: Record<string, Record<string, string | Uint8Array>> = {
  llama: tinyModelFiles({ ...shape, architecture: 'llama' }),
  qwen3: tinyModelFiles({ ...shape, architecture: 'qwen3', headDim: 12 }),
  gemma2: tinyModelFiles({ ...shape, architecture: 'gemma2', attnSoftcap: 2, finalSoftcap: 3, slidingWindow: 3 }),
  gemma3: tinyModelFiles({ ...shape, architecture: 'gemma3', slidingWindow: 3, slidingWindowPattern: 2 }),
  phi3: tinyModelFiles({ ...shape, architecture: 'phi3', slidingWindow: 3 }),
  gpt2: tinyModelFiles({ ...shape, architecture: 'gpt2' }),
};

/**
 * Options beyond the defaults where a method has more to exercise; several where it has variants, a
 * variant that changes what is trained rather than how the layers run on the families named.
 */
type Richer = Partial<FineTuneOptions> & { families?: string[] };
const FEW = ['llama', 'phi3', 'gpt2'];
const RICHER: Partial<Record<MethodName, Richer[]>> = {
  lora: [{ lora: { rank: 4, targetModules: ['all-linear'] } }, { lora: { rank: 4, dora: true }, families: FEW }],
  sparse: [{ sparse: { selection: 'random', density: 0.1 } }, { sparse: { selection: 'random', density: 0.1, regrow: true, regrowEvery: 1 }, families: FEW }],
  'sparse+lora': [{ 'sparse+lora': { sparse: { selection: 'random', density: 0.1 }, lora: { rank: 2 } } }],
  galore: [{ galore: { rank: 4, updateGap: 2 } }],
  lisa: [{ lisa: { layers: 1, interval: 2 } }, { lisa: { layers: 1, interval: 2, moments: 'keep' }, families: FEW }],
  zo: [{ zo: { target: 'lora', lora: { rank: 4 } } }, { zo: { target: 'full' }, families: FEW }, { zo: { target: 'sparse', sparse: { selection: 'random', density: 0.1 } }, families: FEW }],
};

type Variant = { label: string; options: FineTuneOptions; families?: string[] };

const variantsOf = (method: MethodName): Variant[] =>
  (RICHER[method] ?? [{}]).map(({ families, ...extra }) => ({ label: JSON.stringify(extra[method] ?? {}).slice(0, 60), options: { method, ...extra, optimizer: { lr: 1e-2 } }, families }));

async function make(variant: Variant, files: Record<string, string | Uint8Array>): Promise<FineTuner> {
  return FineTuner.create(await testGpu(), await openCheckpoint(memorySource(files)), variant.options);
}

/** Per-token losses of a forward pass (evaluation mode). */
async function losses(ft: FineTuner, seed: number): Promise<Float32Array> {
  const batch = ft.model.prepare(toBatchInput(successorRows(2, 4, seed)));
  const rec = ft.gpu.recorder();
  const acts = ft.model.record(rec, batch);
  await rec.submit();
  const out = await ft.gpu.readF32(acts.losses);
  acts.unpin();
  return out;
}

async function train(ft: FineTuner, steps: number): Promise<void> {
  for (let s = 0; s < steps; s++) await ft.step(toBatchInput(successorRows(2, 4, 100 + s)));
}

async function readAll(ft: FineTuner, names: string[], read: (n: string) => Promise<Float32Array>): Promise<Map<string, Float32Array>> {
  return new Map(await Promise.all(names.map(async (n) => [n, await read(n)] as const)));
}

/** Engine parameters as stored (f32 views). */
async function readParts(ft: FineTuner, parts: string[]): Promise<Map<string, Float32Array>> {
  return readAll(ft, parts, (p) => ft.gpu.readF32(ft.model.params.view(p)));
}

/** The method's delta for a base parameter, or null where it changes nothing. */
async function deltaOf(ft: FineTuner, part: string): Promise<Float32Array | null> {
  const size = ft.model.params.view(part).size;
  const out = ft.gpu.createBuffer(size, undefined, 'delta');
  try {
    const rec = ft.gpu.recorder();
    const changed = ft.method.deltaWeight?.(rec, part, { buffer: out, offset: 0, size }) ?? false;
    await rec.submit();
    return changed ? await ft.gpu.readF32(out) : null;
  } finally {
    ft.gpu.destroyBuffer(out);
  }
}

// Chromium runs the same kernels on the same SwiftShader as Node: there, two families (one of each norm)
// stand for the rest.
const BROWSER_FAMILIES = ['llama', 'gpt2'];
const cases = methodNames().flatMap((method) => variantsOf(method).flatMap((variant) => Object.entries(FAMILIES)
  .filter(([family]) => !variant.families || variant.families.includes(family))
  .filter(([family]) => !IN_BROWSER || BROWSER_FAMILIES.includes(family))
  .map(([family, files]) => [method, variant.label, family, files, variant] as const)));

describe.each(cases)('every method, as PEFT tests adapters: %s %s on %s', (method, _label, _family, files, variant) => {
  it('a freshly attached method gives exactly the base model output', async () => {
    const gpu = await testGpu();
    const base = await FineTuner.create(gpu, await openCheckpoint(memorySource(files)), { method: 'full' });
    const ft = await make(variant, files);
    expect(Array.from(await losses(ft, 1))).toEqual(Array.from(await losses(base, 1)));
    base.destroy();
    ft.destroy();
  });

  it('training changes what the method trains; frozen base tensors move only inside its delta, and unmerging restores them bit for bit', async () => {
    const ft = await make(variant, files);
    const { names, param } = ft.method.trainable;
    const trainedBase = new Set(ft.model.trainableNames);
    const parts = ft.model.hfNames.flatMap((n) => ft.model.enginePartsOf(n)).filter((p) => !trainedBase.has(p));
    const trainsBase = methodDefinition(method).baseTrainable(variant.options[method] as never);
    if (!ft.model.hfNames.flatMap((n) => ft.model.enginePartsOf(n)).some(trainsBase)) expect(trainedBase.size).toBe(0);
    const base0 = await readParts(ft, parts);
    const own0 = await readAll(ft, names, (n) => ft.gpu.readF32(param(n)));
    await train(ft, 3);
    const own1 = await readAll(ft, names, (n) => ft.gpu.readF32(param(n)));
    expect(names.some((n) => own1.get(n)!.some((v, i) => v !== own0.get(n)![i])), 'something trained').toBe(true);
    // A method that trains inside the frozen weights (sparse) moves them only where its delta is.
    const base1 = await readParts(ft, parts);
    for (const part of parts) {
      const delta = await deltaOf(ft, part);
      const [before, after] = [base0.get(part)!, base1.get(part)!];
      for (let i = 0; i < after.length; i++) if (!delta || delta[i] === 0) expect(after[i], `${part}[${i}] moved outside the delta`).toBe(before[i]);
    }
    if (ft.method.setMerged) {
      const rec = ft.gpu.recorder();
      ft.method.setMerged(rec, false);
      await rec.submit();
    }
    const base2 = await readParts(ft, parts);
    for (const part of parts) expect(Array.from(base2.get(part)!), part).toEqual(Array.from(base0.get(part)!));
    ft.destroy();
  });

  it('merging gives the trained output and adds the delta; unmerging restores the base weights', async () => {
    const ft = await make(variant, files);
    if (!ft.method.setMerged) return void ft.destroy(); // nothing to merge: full fine-tuning trains the base itself
    const parts = ft.model.hfNames.flatMap((n) => ft.model.enginePartsOf(n));
    const pristine = await readParts(ft, parts);
    await train(ft, 3);
    const trained = await losses(ft, 2);
    const rec = ft.gpu.recorder();
    ft.method.setMerged(rec, true);
    await rec.submit();
    expect(compare(await losses(ft, 2), trained).rel).toBeLessThan(1e-4);
    // What merging added to each weight is the method's delta for it (zero where it has none).
    let changedAny = false;
    const merged = await readParts(ft, parts);
    for (const part of parts) {
      const added = merged.get(part)!.map((w, i) => w - pristine.get(part)![i]);
      const delta = (await deltaOf(ft, part)) ?? new Float32Array(added.length);
      expect(compare(added, delta).maxAbs, part).toBeLessThan(1e-5);
      changedAny ||= delta.some((v) => v !== 0);
    }
    expect(changedAny, 'the merged delta changed base weights').toBe(true);
    const rec2 = ft.gpu.recorder();
    ft.method.setMerged(rec2, false);
    await rec2.submit();
    const restored = await readParts(ft, parts);
    for (const p of parts) expect(compare(restored.get(p)!, pristine.get(p)!).maxAbs, p).toBeLessThan(1e-6);
    ft.destroy();
  });

  it('saved state loads back exactly, and training continues identically', async () => {
    const a = await make(variant, files);
    await train(a, 2);
    const state = await a.saveState();
    const b = await make(variant, files);
    await b.loadState(state);
    const { names, param } = a.method.trainable;
    for (const n of names) expect(Array.from(await b.gpu.readF32(b.method.trainable.param(n))), n).toEqual(Array.from(await a.gpu.readF32(param(n))));
    const next = toBatchInput(successorRows(2, 4, 7));
    expect((await b.step(next)).loss).toBe((await a.step(next)).loss);
    expect(Array.from(await losses(b, 3))).toEqual(Array.from(await losses(a, 3)));
    a.destroy();
    b.destroy();
  });
});
