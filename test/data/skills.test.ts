import { describe, expect, it } from 'vitest';
import { END_OF_TEXT, HELD_OUT_SKILLS, LONGEST_EXAMPLE, packExamples, PAD, skillExamples, SKILL_NAMES } from '../../src/data/skills.js';
import { prepareBatch } from '../../src/model/batch.js';

const successor = (c: string) => (c === 'z' ? 'a' : String.fromCharCode(c.charCodeAt(0) + 1));
const text = (ids: ArrayLike<number>) => String.fromCharCode(...Array.from(ids).filter((t) => t < 256));

describe('skills corpus', () => {
  it('each skill writes a correct answer after its prompt, ended by the end-of-text token', () => {
    const check: Record<string, (input: string, answer: string) => void> = {
      copy: (i, a) => expect(a).toBe(i),
      rev: (i, a) => expect(a).toBe([...i].reverse().join('')),
      sort: (i, a) => expect(a).toBe([...i].sort().join('')),
      upper: (i, a) => expect(a).toBe(i.toUpperCase()),
      add: (i, a) => expect(Number(a)).toBe(i.split('+').map(Number).reduce((x, y) => x + y)),
      find: (i, a) => {
        const [pairs, key] = i.split('?');
        expect(pairs.split(',').find((p) => p[0] === key)![1]).toBe(a);
      },
      next: (i, a) => {
        expect(i).toMatch(/^[a-z]$/);
        expect(a).toBe(successor(i));
      },
      shift: (i, a) => expect(a).toBe([...i].map(successor).join('')),
    };
    expect(Object.keys(check).sort()).toEqual([...SKILL_NAMES, ...HELD_OUT_SKILLS].sort());
    for (const skill of [...SKILL_NAMES, ...HELD_OUT_SKILLS]) {
      for (const ex of skillExamples(50, 3, skill)) {
        const prompt = text(ex.prompt);
        expect(prompt.startsWith(`${skill}:`) && prompt.endsWith('=')).toBe(true);
        expect(ex.answer.at(-1)).toBe(END_OF_TEXT);
        check[skill](prompt.slice(skill.length + 1, -1), text(ex.answer));
        expect(ex.prompt.length + ex.answer.length).toBeLessThanOrEqual(LONGEST_EXAMPLE);
      }
    }
    // Mixed draws cover every pre-training skill and no held-out one; the same seed gives the same examples.
    const mixed = skillExamples(300, 9);
    expect([...new Set(mixed.map((e) => e.skill))].sort()).toEqual([...SKILL_NAMES].sort());
    expect(skillExamples(300, 9)).toEqual(mixed);
  });

  it('packs examples as separate documents, with the loss on answers or on everything', () => {
    const examples = skillExamples(40, 5);
    const [rows, seq] = [6, 64];
    const packed = packExamples(examples, rows, seq, 'answer');
    expect(packed.padding).toBeGreaterThan(0);
    expect(packed.padding).toBeLessThan(0.3);
    let placed = 0;
    for (let r = 0; r < rows; r++) {
      // Documents never cross a row: the row's segments start fresh.
      if (r > 0) expect(packed.segments[r * seq]).not.toBe(packed.segments[r * seq - 1]);
    }
    // Every example present appears intact, in order, inside one segment, and only its answer is masked in.
    let at = 0;
    for (const ex of examples) {
      const ids = [...ex.prompt, ...ex.answer];
      while (at < packed.ids.length && packed.ids[at] === PAD) at++;
      if (at + ids.length > packed.ids.length || Array.from(packed.ids.slice(at, at + ids.length)).join() !== ids.join()) break;
      expect(new Set(packed.segments.slice(at, at + ids.length)).size).toBe(1);
      expect(Array.from(packed.lossMask.slice(at, at + ids.length))).toEqual([...ex.prompt.map(() => 0), ...ex.answer.map(() => 1)]);
      at += ids.length;
      placed++;
    }
    expect(placed).toBeGreaterThan(10);
    const all = packExamples(examples, rows, seq, 'all');
    expect(all.ids).toEqual(packed.ids);
    expect(all.lossMask.reduce((a, b) => a + b, 0)).toBe(rows * seq * (1 - packed.padding));
    // The engine turns it into targets inside each document only: answers' tokens, never across examples.
    const batch = prepareBatch(packed, 258, 128);
    const answerTokens = examples.slice(0, placed).reduce((n, e) => n + e.answer.length, 0);
    expect(batch.targetCount).toBe(answerTokens);
    expect(() => packExamples(skillExamples(1, 1), 1, 8, 'all')).toThrow(/does not fit rows of 8/);
  });
});
