/**
 * Synthetic tasks the project ships, for demos, tests and benchmarks. Token ids are bytes, matching the
 * byte-level tokenizer of the shipped tiny models.
 *
 * letter successor: rows of "x>y;" pairs, y the letter after x ('z' wraps to 'a'); only the y tokens
 * carry loss. Chance accuracy is 1/26; a model that learned the mapping scores near 100% on rows it never
 * saw (the held-out split draws its rows from another seed).
 */
import { rng } from '../util/random.js';

export interface TaskBatch {
  ids: number[][];
  lossMask: number[][];
}

const A = 'a'.charCodeAt(0);

export function successorRows(rows: number, pairs: number, seed: number): TaskBatch {
  const rand = rng(seed);
  const ids: number[][] = [];
  const lossMask: number[][] = [];
  for (let r = 0; r < rows; r++) {
    const row: number[] = [];
    const mask: number[] = [];
    for (let p = 0; p < pairs; p++) {
      const x = Math.floor(rand() * 26);
      row.push(A + x, '>'.charCodeAt(0), A + ((x + 1) % 26), ';'.charCodeAt(0));
      mask.push(0, 0, 1, 0);
    }
    ids.push(row);
    lossMask.push(mask);
  }
  return { ids, lossMask };
}

export function toBatchInput(t: TaskBatch) {
  return { ids: t.ids, lossMask: t.lossMask.flat() };
}

/** A query of the letter-successor task for generation: a few solved pairs, then "x>". */
export interface SuccessorPrompt {
  text: string;
  ids: number[];
  /** The letter that should come next. */
  answer: string;
}

/** One prompt per letter in `letters`, each after `1 + i % 4` solved pairs (prompts of different lengths). */
export function successorPrompts(letters: string, seed: number): SuccessorPrompt[] {
  const context = successorRows(1, 4, seed).ids[0];
  return [...letters].map((letter, i) => {
    const x = letter.charCodeAt(0) - A;
    if (!(x >= 0 && x < 26)) throw new RangeError(`successorPrompts: '${letter}' is not a lowercase letter`);
    const ids = [...context.slice(0, 4 * (1 + (i % 4))), A + x, '>'.charCodeAt(0)];
    return { text: String.fromCharCode(...ids), ids, answer: String.fromCharCode(A + ((x + 1) % 26)) };
  });
}
