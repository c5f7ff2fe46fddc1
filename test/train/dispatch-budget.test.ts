/**
 * What one steady-state training step asks of the device, per method, against the budget committed in
 * dispatch-budget.json, as GPUs run it (grouped products, tiled attention) and as SwiftShader does
 * (separate products, GpuTuning.groupedProducts; its attention in score blocks, whose backward keeps the
 * scores between two passes). Counts, not times: they never flake. A change that adds dispatches to a
 * step raises the budget in the same commit and says why; one that removes some lowers it.
 */
import { describe, expect, it } from 'vitest';
import { FineTuner, memorySource, openCheckpoint, tinyModelFiles, type FineTuneOptions, type TinyModelOptions } from '../../src/index.js';
import { IN_BROWSER, rng, testGpu } from '../helpers.js';
import budget from './dispatch-budget.json' with { type: 'json' };

const MODELS: Record<string, TinyModelOptions> = {
  'gpt2-L2': { architecture: 'gpt2', seed: 1, hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 2, maxPositions: 32 },
  'llama-L2': { architecture: 'llama', seed: 1, hiddenSize: 32, intermediateSize: 64, numLayers: 2, numHeads: 2, numKvHeads: 1, maxPositions: 32 },
};

const METHODS: Record<string, FineTuneOptions> = {
  full: { method: 'full' },
  lora: { method: 'lora' },
  sparse: { method: 'sparse', sparse: { selection: 'random', density: 0.05 } },
  'sparse+lora': { method: 'sparse+lora', 'sparse+lora': { sparse: { selection: 'random', density: 0.05 } } },
  zo: { method: 'zo' },
  lisa: { method: 'lisa', lisa: { layers: 1 } },
  galore: { method: 'galore', galore: { rank: 4 } },
};

// Chromium runs the SwiftShader that Node runs both modes on: one mode there, to see the browser count alike.
const MODES = (IN_BROWSER ? ['grouped'] : Object.keys(budget)) as (keyof typeof budget)[];
const CASES = MODES.flatMap((mode) => Object.keys(MODELS).map((model) => [model, mode] as const));

describe.each(CASES)('one training step of %s, %s products', (model, mode) => {
  it.each(Object.keys(METHODS))('%s: dispatches within the budget, one submit, no bind group or buffer made', async (method) => {
    const gpu = await testGpu(mode === 'grouped' ? { groupedProducts: true, attentionVariant: 'tiled' } : { groupedProducts: false, attentionVariant: 'blocked' });
    const ckpt = await openCheckpoint(memorySource(tinyModelFiles(MODELS[model])));
    const ft = await FineTuner.create(gpu, ckpt, { ...METHODS[method], optimizer: { lr: 1e-3 } });
    try {
      const rand = rng(1);
      const batch = () => ({ ids: Array.from({ length: 2 * 16 }, () => Math.floor(rand() * 256)), B: 2, S: 16 });
      // Two steps first: GaLore's first computes its projections, which later steps reuse.
      for (let s = 0; s < 2; s++) await ft.step(batch());
      const before = gpu.workCounts();
      await ft.step(batch());
      const work = gpu.workSince(before);
      const allowed = (budget[mode] as Record<string, Record<string, number>>)[model][method];
      expect(work.dispatches, `${model} ${mode} ${method}: ${JSON.stringify(Object.fromEntries(work.byKernel))}`).toBeLessThanOrEqual(allowed);
      expect(work.submits).toBe(1);
      // The same buffers as the step before: every bind group is found again, and nothing is allocated.
      expect(work.bindGroups).toBe(0);
      expect(work.buffersCreated).toBe(0);
    } finally {
      ft.destroy();
    }
  });
});
