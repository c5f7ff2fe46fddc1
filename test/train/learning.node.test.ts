/**
 * The tiny shipped model learns the shipped task: held-out accuracy goes from near chance to high, with
 * full fine-tuning and with LoRA. (Node only: each run trains for about a minute on a CPU implementation.)
 */
import { describe, expect, it } from 'vitest';
import { successorRows, toBatchInput } from '../../src/data/tasks.js';
import { folderSource } from '../../src/io/sources.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { FineTuner, type FineTuneOptions } from '../../src/train/finetuner.js';
import { testGpu } from '../helpers.js';

// Beside other test files a run can take twice its minute.
const LEARNING_TIMEOUT_MS = 300_000;
const model = new URL('../../public/models/tiny-llama', import.meta.url).pathname;

describe('learning the letter-successor task', () => {
  it.each<[string, FineTuneOptions, number]>([
    ['full fine-tuning', { method: 'full', optimizer: { lr: 3e-3, warmupSteps: 5, totalSteps: 50, schedule: 'cosine', weightDecay: 0.01 } }, 50],
    ['LoRA', { method: 'lora', lora: { rank: 16, targetModules: ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] }, optimizer: { lr: 1e-2, warmupSteps: 5 } }, 60],
  ])('%s: held-out accuracy from near chance to high', async (_name, options, steps) => {
    const gpu = await testGpu();
    const ft = await FineTuner.create(gpu, await openCheckpoint(folderSource(model)), options);
    try {
      const heldOut = toBatchInput(successorRows(32, 8, 10_000)); // seeds 0.. train, 10000 held out
      const before = await ft.evaluate(heldOut);
      let first = 0;
      let last = 0;
      for (let s = 0; s < steps; s++) {
        const r = await ft.step(toBatchInput(successorRows(16, 8, s)));
        if (s === 0) first = r.loss;
        last = r.loss;
        expect(Number.isFinite(r.loss)).toBe(true);
      }
      const after = await ft.evaluate(heldOut);
      expect(before.accuracy).toBeLessThan(0.1); // chance is 1/26
      expect(after.accuracy).toBeGreaterThan(0.75);
      expect(last).toBeLessThan(first);
      expect(after.loss).toBeLessThan(before.loss);
    } finally {
      ft.destroy();
    }
  }, LEARNING_TIMEOUT_MS);
});
