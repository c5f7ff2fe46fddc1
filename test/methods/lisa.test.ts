/**
 * LISA, checked from outside: in each step only the sampled layers (and what lies outside the layers)
 * change; the samples follow the seed and the period; a period's first step is AdamW's first step for its
 * layers (fresh moments, bias correction from 1). Resuming is tested with the other methods
 * (test/train/trainer.test.ts, test/methods/shared.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { successorRows, toBatchInput } from '../../src/data/tasks.js';
import { memorySource } from '../../src/io/sources.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tinyModelFiles } from '../../src/model/tiny.js';
import { Lisa, lisaLayers } from '../../src/methods/lisa/index.js';
import { FineTuner } from '../../src/train/finetuner.js';
import { compare, testGpu } from '../helpers.js';

const files = tinyModelFiles({ architecture: 'llama', seed: 3, hiddenSize: 32, intermediateSize: 40, numLayers: 5, numHeads: 4, numKvHeads: 2, initStd: 0.2, maxPositions: 64 });

async function readAll(ft: FineTuner): Promise<Map<string, Float32Array>> {
  const names = ft.model.trainableNames;
  return new Map(await Promise.all(names.map(async (n) => [n, await ft.gpu.readF32(ft.model.params.view(n))] as const)));
}

describe('LISA', () => {
  it('samples γ layers per period from the seed alone, without repeats, differently per period and seed', () => {
    const periods = Array.from({ length: 40 }, (_, p) => lisaLayers(7, p, 12, 3));
    for (const layers of periods) {
      expect(new Set(layers).size).toBe(3);
      expect(layers.every((l) => l >= 0 && l < 12)).toBe(true);
    }
    expect(lisaLayers(7, 5, 12, 3)).toEqual(periods[5]);
    expect(new Set(periods.map((l) => l.join())).size).toBeGreaterThan(20);
    const other = Array.from({ length: 40 }, (_, p) => lisaLayers(8, p, 12, 3).join());
    expect(other.filter((l, p) => l === periods[p].join()).length).toBeLessThan(10);
    // Every layer is sampled over a run (uniformly: 40 periods x 3 / 12 = 10 each on average).
    const counts = new Array(12).fill(0);
    for (const layers of periods) for (const l of layers) counts[l]++;
    expect(Math.min(...counts)).toBeGreaterThan(2);
  });

  it.each(['reset', 'keep'] as const)('moves only the sampled layers and the outside tensors in each step; a period starts AdamW afresh (%s)', async (moments) => {
    const lr = 1e-3;
    const ft = await FineTuner.create(await testGpu(), await openCheckpoint(memorySource(files)), {
      method: 'lisa', lisa: { layers: 2, interval: 2, seed: 4, moments }, optimizer: { lr, schedule: 'constant', warmupSteps: 0, maxGradNorm: 0 },
    });
    const lisa = ft.method as Lisa;
    let before = await readAll(ft);
    const seen = new Set<number>();
    for (let step = 0; step < 6; step++) {
      const active = lisa.layersAt(step);
      expect(active).toEqual(lisaLayers(4, Math.floor(step / 2), 5, 2));
      await ft.step(toBatchInput(successorRows(2, 4, 30 + step)));
      const after = await readAll(ft);
      for (const [name, was] of before) {
        const layer = /^layers\.(\d+)\./.exec(name);
        const now = after.get(name)!;
        const moved = Math.max(...now.map((v, i) => Math.abs(v - was[i])));
        if (layer && !active.includes(Number(layer[1]))) expect(moved, `${name} is frozen at step ${step}`).toBe(0);
        else if (!name.includes('norm')) expect(moved, `${name} trains at step ${step}`).toBeGreaterThan(0);
        // Adam's first step moves each weight by lr (m / sqrt(v) = ±1): so does a period's first step
        // for a layer that arrives fresh, however many steps the optimizer took before.
        const fresh = layer && step % 2 === 0 && (moments === 'reset' || !seen.has(Number(layer[1])));
        if (fresh && moved > 0) expect(moved, `${name} at step ${step}`).toBeCloseTo(lr, 5);
      }
      for (const l of active) seen.add(l);
      before = after;
    }
    ft.destroy();
  });

  it("'keep': a layer sampled again continues from its own moments, also when it moves to another slot", async () => {
    // A seed whose second period keeps the first period's higher layer and binds it to the lower slot.
    const seed = Array.from({ length: 200 }, (_, i) => i).find((sd) => lisaLayers(sd, 0, 5, 2)[1] === lisaLayers(sd, 1, 5, 2)[0])!;
    expect(seed).toBeDefined();
    const ft = await FineTuner.create(await testGpu(), await openCheckpoint(memorySource(files)), {
      method: 'lisa', lisa: { layers: 2, interval: 1, seed, moments: 'keep' }, optimizer: { lr: 1e-3, schedule: 'constant', warmupSteps: 0, maxGradNorm: 0 },
    });
    const layer = lisaLayers(seed, 0, 5, 2)[1];
    const views = ft.optimizer.stateViews();
    const name = 'q.weight';
    await ft.step(toBatchInput(successorRows(2, 4, 50)));
    const before = await ft.gpu.readF32(views.get(`slot1.${name}.adam_m`)!); // the layer's moments after its first step
    await ft.step(toBatchInput(successorRows(2, 4, 51)));
    const after = await ft.gpu.readF32(views.get(`slot0.${name}.adam_m`)!);
    const g = await ft.gradient(`layers.${layer}.${name}`);
    const want = Array.from(before, (m, i) => 0.9 * m + 0.1 * g[i]);
    expect(before.some((m) => m !== 0)).toBe(true);
    expect(compare(after, want).rel).toBeLessThan(1e-5);
    ft.destroy();
  });
});
