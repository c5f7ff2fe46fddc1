/**
 * The shipped letter-successor fine-tuning run, one recipe for the main job (command line) and the demo
 * page: the options, the training loop with held-out accuracy before and after, and what the model then
 * writes.
 */
import { successorPrompts, successorRows, toBatchInput } from '../data/tasks.js';
import type { ModelConfig } from '../model/config.js';
import { Generator } from '../serve/generate.js';
import type { EvalResult, FineTuneOptions, FineTuner } from './finetuner.js';
import type { MethodName } from '../methods/registry.js';

/** Steps and learning rate tuned for this task per method; other methods start from the adapter setting. */
const SUCCESSOR_DEFAULTS: Partial<Record<MethodName, { steps: number; lr: number }>> = { lora: { steps: 60, lr: 1e-2 }, full: { steps: 50, lr: 3e-3 } };

export function successorDefaults(method: MethodName): { steps: number; lr: number } {
  return SUCCESSOR_DEFAULTS[method] ?? { steps: 60, lr: 1e-2 };
}

/**
 * Any method, warmup then cosine decay; LoRA adapts every projection the architecture has, and full
 * fine-tuning decays weights by 0.01. Other methods get their defaults.
 */
export function successorFineTuneOptions(config: ModelConfig, method: MethodName, o: { steps: number; lr: number; rank?: number }): FineTuneOptions {
  const targetModules = config.family === 'gpt2' ? ['q', 'k', 'v', 'o', 'fc', 'proj'] : ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];
  return {
    method,
    lora: { rank: o.rank ?? 16, targetModules },
    optimizer: { lr: o.lr, warmupSteps: 5, totalSteps: o.steps, schedule: 'cosine', weightDecay: method === 'full' ? 0.01 : 0 },
  };
}

/**
 * Train `steps` micro-batches of `rows` rows (8 pairs, 32 tokens each) and report, through `log`, the
 * held-out accuracy before and after, the loss every 10 steps, and the model's answers to held-out prompts.
 */
export async function trainOnSuccessor(ft: FineTuner, o: { steps: number; rows: number; log: (line: string) => void }): Promise<{ before: EvalResult; after: EvalResult }> {
  const heldOut = toBatchInput(successorRows(64, 8, 1_000_000));
  const before = await ft.evaluate(heldOut);
  o.log(`held-out before: accuracy ${(100 * before.accuracy).toFixed(1)}%  loss ${before.loss.toFixed(3)}  (chance 3.8%)`);
  const t0 = performance.now();
  let tokens = 0;
  for (let s = 0; s < o.steps; s++) {
    const r = await ft.step(toBatchInput(successorRows(o.rows, 8, s)));
    tokens += o.rows * 32;
    if (s % 10 === 0 || s === o.steps - 1) {
      const sec = (performance.now() - t0) / 1000;
      o.log(`step ${String(s + 1).padStart(4)}  loss ${r.loss.toFixed(4)}  lr ${r.lr.toExponential(2)}  ${(tokens / sec).toFixed(0)} tokens/s`);
    }
  }
  const after = await ft.evaluate(heldOut);
  o.log(`held-out after: accuracy ${(100 * after.accuracy).toFixed(1)}%  loss ${after.loss.toFixed(3)}`);
  o.log(await sampleGenerations(ft));
  return { before, after };
}

export async function sampleGenerations(ft: FineTuner, letters = 'agmsy'): Promise<string> {
  const prompts = successorPrompts(letters, 2_000_000);
  const gen = new Generator(ft.model);
  try {
    const results = await gen.generateBatch(prompts.map((p) => p.ids), { maxNewTokens: 1, stopTokens: [] });
    let right = 0;
    const lines = prompts.map((p, i) => {
      const out = String.fromCharCode(...results[i].tokens);
      const ok = out[0] === p.answer;
      if (ok) right++;
      return `  ${p.text.padStart(22)}${out}  ${ok ? 'right' : `wrong (want ${p.answer})`}`;
    });
    return [`generated (greedy, one batch of ${prompts.length} prompts): ${right}/${prompts.length} right`, ...lines].join('\n');
  } finally {
    gen.destroy();
  }
}
