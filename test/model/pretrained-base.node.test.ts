/**
 * The shipped pretrained base: its files are the generator's architecture with trained weights, it
 * solves the skills it was pre-trained on far above its random init, and it scores what its training
 * record says it scored (the record in the README comes from the same evaluation).
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { folderSource, memorySource } from '../../src/io/sources.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { PRETRAINED_BASE } from '../../src/model/shipped.js';
import { tinyConfig, tinyModelFiles } from '../../src/model/tiny.js';
import { FineTuner } from '../../src/train/finetuner.js';
import { evaluateSkills } from '../../src/train/skills-eval.js';
import { testGpu } from '../helpers.js';

const folder = new URL(`../../public/models/${PRETRAINED_BASE.name}/`, import.meta.url).pathname;

describe('the shipped pretrained base', () => {
  it('has the architecture of its init and the tokenizer of the tiny models', async () => {
    const generated = tinyModelFiles(PRETRAINED_BASE.init);
    expect(JSON.parse(readFileSync(`${folder}config.json`, 'utf8'))).toEqual(tinyConfig(PRETRAINED_BASE.init));
    for (const file of ['tokenizer.json', 'tokenizer_config.json', 'generation_config.json']) expect(readFileSync(`${folder}${file}`, 'utf8')).toBe(generated[file]);
  });

  it('solves its skills far above the random init, as its training record says', async () => {
    const gpu = await testGpu();
    const record = JSON.parse(readFileSync(`${folder}training.json`, 'utf8'));
    expect(record.finished).toBe(true);
    const trained = await FineTuner.create(gpu, await openCheckpoint(folderSource(folder)), { method: 'full' });
    const random = await FineTuner.create(gpu, await openCheckpoint(memorySource(tinyModelFiles(PRETRAINED_BASE.init))), { method: 'full' });
    try {
      const scores = await evaluateSkills(trained);
      const before = await evaluateSkills(random);
      const last = record.evals.at(-1);
      expect(scores.answerAccuracy).toBeCloseTo(last.answerAccuracy, 2);
      expect(scores.answerLoss).toBeCloseTo(last.answerLoss, 2);
      expect(before.answerAccuracy).toBeLessThan(0.1);
      expect(scores.answerAccuracy).toBeGreaterThan(0.7);
      for (const [skill, s] of Object.entries(scores.bySkill)) expect(s.answerAccuracy, skill).toBeGreaterThan(0.4);
    } finally {
      trained.destroy();
      random.destroy();
    }
  });
});
