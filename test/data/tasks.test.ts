import { describe, expect, it } from 'vitest';
import { successorPrompts, successorRows } from '../../src/data/tasks.js';

describe('letter-successor task', () => {
  it('rows are "x>y;" pairs with the loss on y only', () => {
    const { ids, lossMask } = successorRows(3, 5, 7);
    expect(ids).toHaveLength(3);
    for (let r = 0; r < 3; r++) {
      const text = String.fromCharCode(...ids[r]);
      expect(text).toMatch(/^([a-z]>[a-z];){5}$/);
      for (let p = 0; p < 5; p++) {
        const [x, y] = [text.charCodeAt(4 * p), text.charCodeAt(4 * p + 2)];
        expect(y - 97).toBe((x - 97 + 1) % 26);
      }
      expect(lossMask[r]).toEqual(new Array(5).fill([0, 0, 1, 0]).flat());
    }
  });

  it('prompts end in "x>" after solved pairs of varying count, with the answer', () => {
    const prompts = successorPrompts('azm', 3);
    expect(prompts.map((p) => p.answer)).toEqual(['b', 'a', 'n']);
    expect(prompts.map((p) => p.ids.length)).toEqual([6, 10, 14]);
    for (const p of prompts) {
      expect(p.text).toMatch(/^([a-z]>[a-z];)+[a-z]>$/);
      expect(String.fromCharCode(...p.ids)).toBe(p.text);
    }
    expect(() => successorPrompts('aB', 3)).toThrow(/not a lowercase letter/);
  });
});
