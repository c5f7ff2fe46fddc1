/**
 * The shipped fine-tuning run, one recipe for the main job (command line) and the demo page: the
 * pretrained base learns a skill it never saw in pre-training (by default `next`, the letter successor
 * of a letter: "next:a=b"), with the loss on answers only. It reports the held-out answer
 * accuracy before and after, the loss as it trains, and greedy answers to held-out prompts.
 */
import { packExamples, skillExamples, type HeldOutSkill, type SkillRows } from '../data/skills.js';
import type { SparseMask } from '../methods/sparse/mask.js';
import { selectMask, type Selection, type SelectOptions } from '../methods/sparse/select.js';
import { CALIBRATION_TOKENS } from '../methods/sparse/config.js';
import type { Gpu } from '../gpu/gpu.js';
import { CausalLM } from '../model/causal-lm.js';
import type { Checkpoint } from '../model/checkpoint.js';
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

/** The methods that train at a sparse mask: the recipe selects one for them (Sylva's saliency by default). */
const MASKED: readonly MethodName[] = ['sparse', 'sparse+lora'];

export function trainsAtMask(method: MethodName): boolean {
  return MASKED.includes(method);
}

/**
 * The task's options for any method: warmup then cosine decay; LoRA (alone or beside a sparse set)
 * adapts every projection the architecture has; full fine-tuning decays weights by 0.01; a sparse method
 * trains at `mask`, or at a Sylva mask selected here on the task's calibration data, reported through
 * `log`.
 */
export async function taskFineTuneOptions(
  gpu: Gpu,
  ckpt: Checkpoint,
  method: MethodName,
  o: { steps: number; lr: number; rank?: number; rows: number; mask?: SparseMask; log: (line: string) => void },
): Promise<FineTuneOptions> {
  const targetModules = ckpt.config.family === 'gpt2' ? ['q', 'k', 'v', 'o', 'fc', 'proj'] : ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];
  const mask = trainsAtMask(method) ? (o.mask ?? (await selectTaskMask(gpu, ckpt, { rows: o.rows, log: o.log }))) : undefined;
  const lora = { rank: o.rank ?? 16, targetModules };
  return {
    method,
    lora,
    sparse: { mask },
    'sparse+lora': { sparse: { mask }, lora },
    optimizer: { lr: o.lr, warmupSteps: 5, totalSteps: o.steps, schedule: 'cosine', weightDecay: method === 'full' ? 0.01 : 0 },
  };
}

/** Calibration batches for mask selection: the task's training distribution, from seeds training never draws. */
export function taskCalibration(rows: number, skill: HeldOutSkill = MAIN_TASK, batches = Math.ceil(CALIBRATION_TOKENS / (rows * SEQ))): SkillRows[] {
  return Array.from({ length: batches }, (_, b) => packExamples(skillExamples(rows * SEQ, 900_000 + b, skill), rows, SEQ, 'answer'));
}

/**
 * A sparse method's mask for the task: selected on the frozen base (loaded for the selection alone) from
 * the task's calibration batches, reported through `log`.
 */
export async function selectTaskMask(gpu: Gpu, ckpt: Checkpoint, o: Omit<SelectOptions, 'selection'> & { selection?: Selection; rows: number; log: (line: string) => void }): Promise<SparseMask> {
  const selection = o.selection ?? 'sylva';
  const model = await CausalLM.fromCheckpoint(gpu, ckpt);
  try {
    const { mask, cost } = await selectMask(model, taskCalibration(o.rows), { ...o, selection });
    o.log(`mask:   ${selection} selection, ${(100 * mask.density).toFixed(2)}% of ${cost.layers} layers in ${cost.seconds.toFixed(1)} s (${cost.calibrationTokens} calibration tokens, peak ${(cost.peakGpuBytes / 2 ** 20).toFixed(1)} MiB)`);
    return mask;
  } finally {
    model.destroy();
  }
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
