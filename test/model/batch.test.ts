/** Batches with explicit targets: Hugging Face's `labels` (shifted by the model) and `shift_labels`. */
import { describe, expect, it } from 'vitest';
import { ShapeError } from '../../src/errors.js';
import { memorySource } from '../../src/io/sources.js';
import { prepareBatch } from '../../src/model/batch.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tinyModelFiles } from '../../src/model/tiny.js';
import { FineTuner } from '../../src/train/finetuner.js';
import { freshSeed, rng, testGpu } from '../helpers.js';

describe('batch targets', () => {
  const V = 50;
  it('labels are shifted as Hugging Face does, -100 excluded; targets are taken as given', () => {
    const seed = freshSeed();
    const rand = rng(seed);
    const B = 3;
    const S = 7;
    const ids = Array.from({ length: B * S }, () => Math.floor(rand() * V));
    const labels = ids.map((id) => (rand() < 0.3 ? -100 : rand() < 0.5 ? id : Math.floor(rand() * V)));
    const p = prepareBatch({ ids, B, S, labels }, V, 64);
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < S; i++) {
        const t = b * S + i;
        expect(p.targets[t], `seed ${seed}, token ${t}`).toBe(i + 1 < S ? labels[t + 1] : -100);
      }
    }
    expect(p.targetCount).toBe(Array.from(p.targets).filter((x) => x !== -100).length);
    // The same targets given already shifted (HF's shift_labels) prepare identically.
    const q = prepareBatch({ ids, B, S, targets: p.targets }, V, 64);
    expect(Array.from(q.targets)).toEqual(Array.from(p.targets));
    expect(q.targetCount).toBe(p.targetCount);
  });

  it('refuses both at once, wrong lengths and values outside the vocabulary', () => {
    const ids = [1, 2, 3, 4];
    expect(() => prepareBatch({ ids, labels: ids, targets: ids }, V, 64)).toThrow(/not both/);
    expect(() => prepareBatch({ ids, labels: [1, 2] }, V, 64)).toThrow(ShapeError);
    expect(() => prepareBatch({ ids, labels: [1, 2, 3, 99] }, V, 64)).toThrow(/labels\[3\] = 99/);
    expect(() => prepareBatch({ ids, targets: [1, -1, 3, 4] }, V, 64)).toThrow(/targets\[1\] = -1/);
  });

  it('a loss through labels equals the same loss through a loss mask', async () => {
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(memorySource(tinyModelFiles({ architecture: 'llama', seed: 3, hiddenSize: 32, numLayers: 1, numHeads: 4 })));
    const ft = await FineTuner.create(gpu, ckpt, { method: 'lora' });
    const ids = [5, 9, 12, 7, 3, 8, 1, 2];
    const mask = [0, 0, 0, 1, 1, 0, 1, 1];
    const labels = ids.map((id, t) => (mask[t] ? id : -100));
    const viaMask = await ft.evaluate({ ids, lossMask: mask });
    const viaLabels = await ft.evaluate({ ids, labels });
    expect(viaLabels).toEqual(viaMask);
    ft.destroy();
  });
});
