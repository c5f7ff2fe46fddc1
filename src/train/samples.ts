/**
 * What a fine-tuned model now writes: greedy continuations of held-out letter-successor prompts, all
 * generated in one batch, each prompt shown with the model's next token and whether it is right.
 */
import { successorPrompts } from '../data/tasks.js';
import { Generator } from '../serve/generate.js';
import type { FineTuner } from './finetuner.js';

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
