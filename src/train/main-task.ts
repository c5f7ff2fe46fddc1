/**
 * The shipped fine-tuning run, one recipe for the main job (command line) and the demo page: the
 * pretrained base learns a skill it never saw in pre-training (by default `next`, the letter successor
 * of a letter: "next:a=b"), with the loss on answers only. It reports the held-out answer
 * accuracy before and after, the loss as it trains, and greedy answers to held-out prompts.
 */
import { packExamples, skillExamples, type HeldOutSkill, type PackedRows } from '../data/skills.js';
import type { SparseOptions } from '../methods/sparse/config.js';
import type { ModelConfig } from '../model/config.js';
import type { MethodName } from '../methods/registry.js';
import type { FineTuneOptions, FineTuner } from './finetuner.js';
import { evaluateSkill, generateAnswers, heldOutExamples, type SkillScore } from './skills-eval.js';

export const MAIN_TASK: HeldOutSkill = 'next';

/** Tokens per packed row of the task's batches. */
const SEQ = 64;
/** Held-out examples scored before and after. */
const HELD_OUT_EXAMPLES = 64;

/** Steps and learning rate tuned for the main task per method; other methods start from the adapter setting. */
const TASK_DEFAULTS: Partial<Record<MethodName, { steps: number; lr: number }>> = {
  lora: { steps: 40, lr: 1e-2 },
  full: { steps: 40, lr: 1e-3 },
  sparse: { steps: 40, lr: 3e-2 },
  'sparse+lora': { steps: 40, lr: 1e-2 },
};

export function taskDefaults(method: MethodName): { steps: number; lr: number } {
  return TASK_DEFAULTS[method] ?? TASK_DEFAULTS.lora!;
}

/**
 * Any method, warmup then cosine decay; LoRA adapts every projection the architecture has, and full
 * fine-tuning decays weights by 0.01. Other methods get their defaults.
 */
export function taskFineTuneOptions(config: ModelConfig, method: MethodName, o: { steps: number; lr: number; rank?: number; sparse?: SparseOptions }): FineTuneOptions {
  const targetModules = config.family === 'gpt2' ? ['q', 'k', 'v', 'o', 'fc', 'proj'] : ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];
  return {
    method,
    lora: { rank: o.rank ?? 16, targetModules },
    sparse: o.sparse,
    'sparse+lora': { sparse: o.sparse, lora: { rank: o.rank ?? 16, targetModules } },
    optimizer: { lr: o.lr, warmupSteps: 5, totalSteps: o.steps, schedule: 'cosine', weightDecay: method === 'full' ? 0.01 : 0 },
  };
}

/** Calibration batches for mask selection: the task's training distribution, from seeds training never draws. */
export function taskCalibration(rows: number, skill: HeldOutSkill = MAIN_TASK, batches = 4): PackedRows[] {
  return Array.from({ length: batches }, (_, b) => packExamples(skillExamples(rows * SEQ, 900_000 + b, skill), rows, SEQ, 'answer'));
}

/**
 * Train `steps` batches of `rows` packed rows of the skill's examples and report, through `log`, the
 * held-out answer accuracy before and after, the loss every 10 steps, and greedy answers to five
 * held-out prompts.
 */
export async function fineTuneOnTask(
  ft: FineTuner,
  o: { steps: number; rows: number; log: (line: string) => void; skill?: HeldOutSkill },
): Promise<{ before: SkillScore; after: SkillScore }> {
  const skill = o.skill ?? MAIN_TASK;
  const before = await evaluateSkill(ft, skill, { examples: HELD_OUT_EXAMPLES });
  o.log(`held-out before: accuracy ${(100 * before.answerAccuracy).toFixed(1)}%  loss ${before.answerLoss.toFixed(3)}  (answers of ${HELD_OUT_EXAMPLES} '${skill}' examples)`);
  const t0 = performance.now();
  let tokens = 0;
  for (let s = 0; s < o.steps; s++) {
    // More examples than fit: the packer fills every row and drops the rest.
    const r = await ft.step(packExamples(skillExamples(o.rows * SEQ, s, skill), o.rows, SEQ, 'answer'));
    tokens += o.rows * SEQ;
    if (s % 10 === 0 || s === o.steps - 1) {
      const sec = (performance.now() - t0) / 1000;
      o.log(`step ${String(s + 1).padStart(4)}  loss ${r.loss.toFixed(4)}  lr ${r.lr.toExponential(2)}  ${(tokens / sec).toFixed(0)} tokens/s`);
    }
  }
  const after = await evaluateSkill(ft, skill, { examples: HELD_OUT_EXAMPLES });
  o.log(`held-out after: accuracy ${(100 * after.answerAccuracy).toFixed(1)}%  loss ${after.answerLoss.toFixed(3)}`);
  o.log(await sampleGenerations(ft, skill));
  return { before, after };
}

/** Greedy answers to five held-out prompts of the skill, generated in one batch, each marked right or wrong. */
export async function sampleGenerations(ft: FineTuner, skill: HeldOutSkill = MAIN_TASK): Promise<string> {
  const examples = heldOutExamples(skill, 5);
  const answers = await generateAnswers(ft, examples);
  const text = (ids: number[]) => String.fromCharCode(...ids.filter((t) => t < 256));
  const lines = examples.map((e, i) => {
    const prompt = text(e.prompt);
    return `  ${prompt.padStart(16)}${text(answers[i].tokens).padEnd(10)}${answers[i].right ? 'right' : `wrong (want ${text(e.answer)})`}`;
  });
  const right = answers.filter((a) => a.right).length;
  return [`generated (greedy, one batch of ${examples.length} prompts): ${right}/${examples.length} right`, ...lines].join('\n');
}
