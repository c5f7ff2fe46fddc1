/**
 * The learning rate of every optimizer step against the rates transformers' schedulers give a torch
 * optimizer (schedules.json, written by scripts/reference/make_fixtures.py). After warmup they are the
 * same; during warmup the engine runs one step ahead, so its first step trains where transformers'
 * first step has rate 0.
 */
import { describe, expect, it } from 'vitest';
import { learningRate, warmupSteps, type ScheduleOptions } from '../../src/optim/schedule.js';
import { readJson } from './fixtures.js';

interface Case { schedule: 'constant' | 'linear' | 'cosine' | 'cosine_min_lr'; lr: number; total: number; warmup: number; rates: number[] }
const { cases } = readJson<{ cases: Case[] }>('schedules.json');

describe("learning-rate schedules, as transformers' schedulers", () => {
  it.each(cases.map((c) => [`${c.schedule}, ${c.total} steps, ${c.warmup} of warmup`, c] as const))('%s', (_, c) => {
    const o: ScheduleOptions = {
      lr: c.lr, totalSteps: c.total, warmupSteps: c.warmup,
      schedule: c.schedule === 'cosine_min_lr' ? 'cosine' : c.schedule,
      minLrRatio: c.schedule === 'cosine_min_lr' ? 0.1 : undefined,
    };
    const ours = c.rates.map((_, k) => learningRate(k, o));
    // transformers' factor at k + 1 during warmup (the end of warmup is full rate), at k after it.
    const theirs = c.rates.map((r, k) => (k < c.warmup ? (k + 1 < c.warmup ? c.rates[k + 1] : c.lr) : r));
    for (let k = 0; k < c.total; k++) expect(ours[k], `step ${k}`).toBeCloseTo(theirs[k], 15);
    expect(Math.min(...ours), 'no step trains at rate 0').toBeGreaterThan(0);
  });

  it('rounds a warmup ratio up, as TrainingArguments.get_warmup_steps', () => {
    expect(warmupSteps(0.03, 20)).toBe(1);
    expect(warmupSteps(0.1, 30)).toBe(3);
    expect(warmupSteps(0, 20)).toBe(0);
  });
});
