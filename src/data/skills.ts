/**
 * The synthetic skills corpus the shipped pretrained base learns from: short character-level problems,
 * each one document "<skill>:<input>=<answer>" followed by the end-of-text token, so that a base that
 * learned them has attention patterns worth fine-tuning (copying, reversing, sorting, carrying digits,
 * looking up a key). Token ids are bytes, matching the byte-level tokenizer of the shipped models.
 *
 * HELD_OUT_SKILLS are written the same way but never pre-trained on: the tasks the main job, the demo
 * and method comparisons fine-tune the base on.
 */
import { rng } from '../util/random.js';

export const END_OF_TEXT = 256;
export const PAD = 257;

export interface SkillExample {
  skill: SkillName | HeldOutSkill;
  /** "<skill>:<input>=" as bytes: what a prompt for generation holds. */
  prompt: number[];
  /** The answer's bytes followed by END_OF_TEXT. */
  answer: number[];
}

type Rand = () => number;

const LETTERS = 'abcdefghijklmnopqrstuvwxyz';
const letter = (rand: Rand) => LETTERS[Math.floor(rand() * 26)];
const word = (rand: Rand, min: number, max: number) => {
  const n = min + Math.floor(rand() * (max - min + 1));
  let s = '';
  for (let i = 0; i < n; i++) s += letter(rand);
  return s;
};

/** Each skill draws one (input, answer) pair. */
const SKILLS = {
  /** The word again: an induction head's job. */
  copy: (rand: Rand) => {
    const w = word(rand, 3, 8);
    return [w, w];
  },
  /** The word backwards. */
  rev: (rand: Rand) => {
    const w = word(rand, 3, 7);
    return [w, [...w].reverse().join('')];
  },
  /** The word's letters in alphabetical order. */
  sort: (rand: Rand) => {
    const w = word(rand, 3, 6);
    return [w, [...w].sort().join('')];
  },
  /** The word in capitals: a fixed per-token map. */
  upper: (rand: Rand) => {
    const w = word(rand, 3, 8);
    return [w, w.toUpperCase()];
  },
  /** Sum of two numbers below 100. */
  add: (rand: Rand) => {
    const a = Math.floor(rand() * 100);
    const b = Math.floor(rand() * 100);
    return [`${a}+${b}`, String(a + b)];
  },
  /** The digit stored under a key among three or four distinct key-digit pairs. */
  find: (rand: Rand) => {
    const n = 3 + Math.floor(rand() * 2);
    const keys: string[] = [];
    while (keys.length < n) {
      const k = letter(rand);
      if (!keys.includes(k)) keys.push(k);
    }
    const values = keys.map(() => String(Math.floor(rand() * 10)));
    const q = Math.floor(rand() * n);
    return [`${keys.map((k, i) => k + values[i]).join(',')}?${keys[q]}`, values[q]];
  },
} satisfies Record<string, (rand: Rand) => [string, string] | string[]>;

const shift = (w: string, by: number) => [...w].map((c) => LETTERS[(LETTERS.indexOf(c) + by + 26) % 26]).join('');

/** Tasks in the corpus's format that pre-training never sees. */
const HELD_OUT = {
  /** The letter after a letter, z wraps to a: the letter-successor task. */
  next: (rand: Rand) => {
    const c = letter(rand);
    return [c, shift(c, 1)];
  },
  /** Each letter of a word replaced by the next one: the successor applied along a copy. */
  shift: (rand: Rand) => {
    const w = word(rand, 3, 8);
    return [w, shift(w, 1)];
  },
} satisfies Record<string, (rand: Rand) => [string, string] | string[]>;

/** The pre-training skills. */
export type SkillName = keyof typeof SKILLS;
export const SKILL_NAMES = Object.keys(SKILLS) as SkillName[];
/** The held-out skills, for fine-tuning. */
export type HeldOutSkill = keyof typeof HELD_OUT;
export const HELD_OUT_SKILLS = Object.keys(HELD_OUT) as HeldOutSkill[];
type AnySkill = SkillName | HeldOutSkill;
const ALL: Record<AnySkill, (rand: Rand) => string[]> = { ...SKILLS, ...HELD_OUT };

/** No example of any skill is longer (prompt, answer and end-of-text): a row of 24 tokens fits any one. */
export const LONGEST_EXAMPLE = 24;

const bytes = (s: string) => [...s].map((c) => c.charCodeAt(0));

export function skillExample(skill: AnySkill, rand: Rand): SkillExample {
  const [input, answer] = ALL[skill](rand);
  return { skill, prompt: bytes(`${skill}:${input}=`), answer: [...bytes(answer), END_OF_TEXT] };
}

/** `count` examples of one skill, or of the pre-training skills drawn uniformly when `skill` is omitted. */
export function skillExamples(count: number, seed: number, skill?: AnySkill): SkillExample[] {
  const rand = rng(seed);
  return Array.from({ length: count }, () => skillExample(skill ?? SKILL_NAMES[Math.floor(rand() * SKILL_NAMES.length)], rand));
}

export interface SkillRows {
  /** [rows * seq] token ids; unused tail positions hold PAD. */
  ids: Uint32Array;
  /** 1 where the token's prediction counts towards the loss. */
  lossMask: Uint8Array;
  /** A document id per token, so attention and positions stay inside one example. */
  segments: Uint32Array;
  /** Rows and tokens per row: the fields a BatchInput names them by, so packed rows are a batch as they are. */
  B: number;
  S: number;
  /** Fraction of positions left as padding. */
  padding: number;
}

/**
 * Examples packed into rows of `seq` tokens, each its own document, in order (an example that does not
 * fit starts the next row; the tail is padding in a segment of its own). `target: 'answer'` puts the
 * loss on the answers only; `'all'` trains on every token, as language-model pre-training does.
 */
export function packExamples(examples: SkillExample[], rows: number, seq: number, target: 'all' | 'answer'): SkillRows {
  const ids = new Uint32Array(rows * seq).fill(PAD);
  const lossMask = new Uint8Array(rows * seq);
  const segments = new Uint32Array(rows * seq);
  let r = 0;
  let pos = 0;
  let doc = 0;
  let used = 0;
  for (const ex of examples) {
    const n = ex.prompt.length + ex.answer.length;
    if (n > seq) throw new RangeError(`a ${ex.skill} example of ${n} tokens does not fit rows of ${seq}`);
    if (pos + n > seq) {
      segments.fill(++doc, r * seq + pos, (r + 1) * seq);
      r++;
      pos = 0;
    }
    if (r === rows) break;
    doc++;
    const at = r * seq + pos;
    ids.set([...ex.prompt, ...ex.answer], at);
    segments.fill(doc, at, at + n);
    lossMask.fill(1, target === 'all' ? at : at + ex.prompt.length, at + n);
    pos += n;
    used += n;
  }
  if (r < rows) segments.fill(++doc, r * seq + pos, (r + 1) * seq);
  return { ids, lossMask, segments, B: rows, S: seq, padding: 1 - used / (rows * seq) };
}
