/**
 * Held-out scores on the skills corpus (src/data/skills.ts): per skill, the loss and accuracy of the
 * answer tokens given the prompt (teacher forcing), and optionally the exact-match rate of greedy
 * generation (the whole answer and its end-of-text token, nothing else). The held-out examples come
 * from seeds that training never draws.
 */
import { HELD_OUT_SKILLS, LONGEST_EXAMPLE, packExamples, skillExamples, SKILL_NAMES, type HeldOutSkill, type SkillExample, type SkillName } from '../data/skills.js';
import { Generator } from '../serve/generate.js';
import type { FineTuner } from './finetuner.js';

export interface SkillScore {
  answerLoss: number;
  answerAccuracy: number;
  /** Answer tokens scored. */
  tokens: number;
  /** Greedy generation reproduces the answer exactly (only when asked for). */
  exactMatch?: number;
}
export type SkillScores = Record<SkillName, SkillScore>;

/** Seeds of the held-out examples, far from the step-numbered seeds training uses. */
const HELD_OUT_SEED = 1_000_000_000;

/** Held-out examples of a skill: the same for every caller, never drawn by training. */
export function heldOutExamples(skill: SkillName | HeldOutSkill, count: number): SkillExample[] {
  const index = [...SKILL_NAMES, ...HELD_OUT_SKILLS].indexOf(skill);
  return skillExamples(count, HELD_OUT_SEED + index, skill);
}

/** One skill's held-out scores over `examples` examples (default 64); exact match over the first 32. */
export async function evaluateSkill(ft: FineTuner, skill: SkillName | HeldOutSkill, o: { examples?: number; generate?: boolean } = {}): Promise<SkillScore> {
  const examples = heldOutExamples(skill, o.examples ?? 64);
  const seq = Math.min(ft.model.config.maxPositions, 64);
  const rows = Math.ceil(examples.length / Math.floor(seq / LONGEST_EXAMPLE)); // room for every example
  const r = await ft.evaluate(packExamples(examples, rows, seq, 'answer'));
  const score: SkillScore = { answerLoss: r.loss, answerAccuracy: r.accuracy, tokens: r.tokens };
  if (o.generate) score.exactMatch = (await generateAnswers(ft, examples.slice(0, 32))).filter((a) => a.right).length / Math.min(32, examples.length);
  return score;
}

/** Every pre-training skill's scores, and the answer-token loss and accuracy over all of them. */
export async function evaluateSkills(ft: FineTuner, o: { examples?: number; generate?: boolean } = {}): Promise<{ answerLoss: number; answerAccuracy: number; bySkill: SkillScores }> {
  const bySkill = {} as SkillScores;
  let loss = 0;
  let correct = 0;
  let tokens = 0;
  for (const skill of SKILL_NAMES) {
    const s = (bySkill[skill] = await evaluateSkill(ft, skill, o));
    loss += s.answerLoss * s.tokens;
    correct += s.answerAccuracy * s.tokens;
    tokens += s.tokens;
  }
  return { answerLoss: loss / tokens, answerAccuracy: correct / tokens, bySkill };
}

/** Greedy answers to the examples' prompts, generated in one batch, and whether each is exactly right. */
export async function generateAnswers(ft: FineTuner, examples: SkillExample[]): Promise<{ tokens: number[]; right: boolean }[]> {
  const gen = new Generator(ft.model);
  try {
    const longest = Math.max(...examples.map((e) => e.answer.length));
    const results = await gen.generateBatch(examples.map((e) => e.prompt), { maxNewTokens: longest });
    return results.map((r, i) => ({ tokens: r.tokens, right: r.tokens.join() === examples[i].answer.join() }));
  } finally {
    gen.destroy();
  }
}
