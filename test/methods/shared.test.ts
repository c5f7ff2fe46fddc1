/**
 * PEFT's four adapter tests, run for every registered method through the same code: a freshly attached
 * method changes nothing; merging gives the trained output and unmerging restores the base exactly
 * (methods that merge); training changes what the method trains and leaves everything else
 * bit-identical; and saved state loads back exactly. A new method in the registry is tested here with
 * its default options (or richer ones listed below) without touching this file.
 */
import { describe, expect, it } from 'vitest';
import { successorRows, toBatchInput } from '../../src/data/tasks.js';
import { memorySource } from '../../src/io/sources.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tinyModelFiles } from '../../src/model/tiny.js';
import { methodNames, type MethodName } from '../../src/methods/registry.js';
import { FineTuner, type FineTuneOptions } from '../../src/train/finetuner.js';
import { compare, testGpu } from '../helpers.js';

const files = tinyModelFiles({ architecture: 'llama', seed: 5, hiddenSize: 32, intermediateSize: 48, numLayers: 2, numHeads: 4, numKvHeads: 2, initStd: 0.2, maxPositions: 64 });

/** Options beyond the defaults where a method has more to exercise. */
const RICHER: Partial<Record<MethodName, Partial<FineTuneOptions>>> = {
  lora: { lora: { rank: 4, targetModules: ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] } },
};

const optionsFor = (method: MethodName): FineTuneOptions => ({ method, ...RICHER[method], optimizer: { lr: 1e-2 } });

async function make(method: MethodName): Promise<FineTuner> {
  return FineTuner.create(await testGpu(), await openCheckpoint(memorySource(files)), optionsFor(method));
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

describe.each(methodNames())('every method, as PEFT tests adapters: %s', (method) => {
  it('a freshly attached method gives exactly the base model output', async () => {
    const gpu = await testGpu();
    const base = await FineTuner.create(gpu, await openCheckpoint(memorySource(files)), { method: 'full' });
    const ft = await make(method);
    expect(Array.from(await losses(ft, 1))).toEqual(Array.from(await losses(base, 1)));
    base.destroy();
    ft.destroy();
  });

  it('training changes what the method trains and leaves every other base tensor bit-identical', async () => {
    const ft = await make(method);
    const { names, param } = ft.method.trainable;
    const trainedBase = new Set(ft.model.trainableNames);
    const base0 = await readAll(ft, ft.model.hfNames, (n) => ft.model.readHf(n));
    const own0 = await readAll(ft, names, (n) => ft.gpu.readF32(param(n)));
    await train(ft, 3);
    const own1 = await readAll(ft, names, (n) => ft.gpu.readF32(param(n)));
    expect(names.some((n) => own1.get(n)!.some((v, i) => v !== own0.get(n)![i])), 'something trained').toBe(true);
    // Base tensors outside the model's trainable set must not move at all.
    const frozen = ft.model.hfNames.filter((n) => !ft.model.enginePartsOf(n).some((p) => trainedBase.has(p)));
    if (method !== 'full') expect(frozen.length).toBe(ft.model.hfNames.length);
    const base1 = await readAll(ft, frozen, (n) => ft.model.readHf(n));
    for (const n of frozen) expect(Array.from(base1.get(n)!), n).toEqual(Array.from(base0.get(n)!));
    ft.destroy();
  });

  it('merging gives the trained output; unmerging restores the base weights', async () => {
    const ft = await make(method);
    if (!ft.method.setMerged) return void ft.destroy(); // nothing to merge: full fine-tuning trains the base itself
    await train(ft, 3);
    const base = await readAll(ft, ft.model.hfNames, (n) => ft.model.readHf(n));
    const parts = ft.model.hfNames.flatMap((n) => ft.model.enginePartsOf(n));
    const engineBase = await readAll(ft, parts, (p) => ft.gpu.readF32(ft.model.params.view(p)));
    const unmerged = await losses(ft, 2);
    const rec = ft.gpu.recorder();
    ft.method.setMerged(rec, true);
    await rec.submit();
    expect(compare(await losses(ft, 2), unmerged).rel).toBeLessThan(1e-4);
    const merged = await readAll(ft, ft.model.hfNames, (n) => ft.model.readHf(n));
    expect(ft.model.hfNames.some((n) => compare(merged.get(n)!, base.get(n)!).maxAbs > 1e-4), 'merging changed base weights').toBe(true);
    // What merging added to each weight is the method's delta for it (zero where it has none).
    for (const part of parts) {
      const added = (await ft.gpu.readF32(ft.model.params.view(part))).map((w, i) => w - engineBase.get(part)![i]);
      const out = ft.gpu.createBuffer(added.length * 4, undefined, 'delta');
      const rec3 = ft.gpu.recorder();
      const changed = ft.method.deltaWeight?.(rec3, part, { buffer: out, offset: 0, size: added.length * 4 }) ?? false;
      await rec3.submit();
      const delta = changed ? await ft.gpu.readF32(out) : new Float32Array(added.length);
      ft.gpu.destroyBuffer(out);
      expect(compare(added, delta).maxAbs, part).toBeLessThan(1e-5);
      if (changed) expect(delta.some((v) => v !== 0), part).toBe(true);
    }
    const rec2 = ft.gpu.recorder();
    ft.method.setMerged(rec2, false);
    await rec2.submit();
    for (const n of ft.model.hfNames) expect(compare(await ft.model.readHf(n), base.get(n)!).maxAbs, n).toBeLessThan(1e-6);
    ft.destroy();
  });

  it('saved state loads back exactly, and training continues identically', async () => {
    const a = await make(method);
    await train(a, 2);
    const state = await a.saveState();
    const b = await make(method);
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
