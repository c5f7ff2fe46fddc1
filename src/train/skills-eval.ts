/**
 * Held-out scores on the skills corpus (src/data/skills.ts): per skill, the loss and accuracy of the
 * answer tokens given the prompt (teacher forcing), and optionally the exact-match rate of greedy
 * generation (the whole answer and its end-of-text token, nothing else). The held-out examples come
 * from seeds that training never draws.
 */
import { packExamples, skillExamples, SKILL_NAMES, type SkillName } from '../data/skills.js';
import { Generator } from '../serve/generate.js';
import type { FineTuner } from './finetuner.js';

export interface SkillScore {
  answerLoss: number;
  answerAccuracy: number;
  /** Greedy generation reproduces the answer exactly (only when asked for). */
  exactMatch?: number;
}
export type SkillScores = Record<SkillName, SkillScore>;

/** Seeds of the held-out examples, far from the step-numbered seeds training uses. */
const HELD_OUT_SEED = 1_000_000_000;

export async function evaluateSkills(
  ft: FineTuner,
  o: { examples?: number; generate?: boolean } = {},
): Promise<{ answerLoss: number; answerAccuracy: number; bySkill: SkillScores }> {
  const count = o.examples ?? 64;
  const bySkill = {} as SkillScores;
  let loss = 0;
  let correct = 0;
  let tokens = 0;
  for (const [i, skill] of SKILL_NAMES.entries()) {
    const examples = skillExamples(count, HELD_OUT_SEED + i, skill);
    const seq = Math.min(ft.model.config.maxPositions, 64);
    const rows = Math.ceil(count / Math.floor(seq / 24)); // every example fits: none is longer than 24 tokens
    const packed = packExamples(examples, rows, seq, 'answer');
    const r = await ft.evaluate({ ids: packed.ids, lossMask: packed.lossMask, segments: packed.segments, B: rows, S: seq });
    bySkill[skill] = { answerLoss: r.loss, answerAccuracy: r.accuracy };
    loss += r.loss * r.tokens;
    correct += r.accuracy * r.tokens;
    tokens += r.tokens;
    if (o.generate) bySkill[skill].exactMatch = await exactMatch(ft, examples.slice(0, 32));
  }
  return { answerLoss: loss / tokens, answerAccuracy: correct / tokens, bySkill };
}

async function exactMatch(ft: FineTuner, examples: ReturnType<typeof skillExamples>): Promise<number> {
  const gen = new Generator(ft.model);
  try {
    const longest = Math.max(...examples.map((e) => e.answer.length));
    const results = await gen.generateBatch(examples.map((e) => e.prompt), { maxNewTokens: longest });
    const right = results.filter((r, i) => r.tokens.join() === examples[i].answer.join()).length;
    return right / examples.length;
  } finally {
    gen.destroy();
  }
}
