/**
 * Writes the shipped sample datasets to public/datasets/: the letter after a word's last letter,
 * "next:<word>=<letter>" (the shipped base's held-out skill `next`, from single letters to words of up to
 * six), a skill the shipped pretrained base never saw, in the formats the dataset reader takes:
 *   next-letter.jsonl       prompt/completion rows, 3,000 (the main job's data)
 *   next-letter-chat.jsonl  chat rows (messages, one to three turns each), 500, for the model's chat template
 *   next-letter.txt         plain text, one example per line, 500 (language modelling: loss on every token)
 * Words are drawn at random (seeded), so held-out rows are words training has not seen. Deterministic:
 * the same files every run.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { rng } from '../src/util/random.js';

const outDir = process.argv[2] ?? 'public/datasets';
const LETTERS = 'abcdefghijklmnopqrstuvwxyz';

function examples(n: number, seed: number): { prompt: string; completion: string }[] {
  const rand = rng(seed);
  return Array.from({ length: n }, () => {
    const length = 1 + Math.floor(rand() * 6);
    let word = '';
    for (let i = 0; i < length; i++) word += LETTERS[Math.floor(rand() * 26)];
    return { prompt: `next:${word}=`, completion: LETTERS[(LETTERS.indexOf(word[length - 1]) + 1) % 26] };
  });
}

mkdirSync(outDir, { recursive: true });
const lines = (rows: unknown[]) => rows.map((r) => JSON.stringify(r)).join('\n') + '\n';
writeFileSync(join(outDir, 'next-letter.jsonl'), lines(examples(3000, 51_000)));

const chat = examples(1000, 52_000);
const conversations: unknown[] = [];
for (let i = 0; conversations.length < 500; ) {
  const turns = 1 + (conversations.length % 3);
  const messages = chat.slice(i, i + turns).flatMap((e) => [
    { role: 'user', content: e.prompt.slice(0, -1) }, // the template writes the '='
    { role: 'assistant', content: e.completion },
  ]);
  conversations.push({ messages });
  i += turns;
}
writeFileSync(join(outDir, 'next-letter-chat.jsonl'), lines(conversations));
writeFileSync(join(outDir, 'next-letter.txt'), examples(500, 53_000).map((e) => e.prompt + e.completion).join('\n') + '\n');
console.log(`wrote ${outDir}: next-letter.jsonl, next-letter-chat.jsonl, next-letter.txt`);
