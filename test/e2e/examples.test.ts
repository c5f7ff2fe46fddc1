/**
 * The README's browser example (examples/browser-session.ts) as a page runs it: a worker session on the
 * shipped model and data, trained, generated from, exported, its checkpoints in IndexedDB. Browsers only;
 * the package name resolves to its source here (vite.config.ts).
 */
import { describe, expect, it } from 'vitest';

const inBrowser = typeof window !== 'undefined';

describe.skipIf(!inBrowser)("the README's browser example", () => {
  it('trains in a worker, generates, exports and leaves its checkpoints in IndexedDB', async () => {
    const { result } = await import('../../examples/browser-session.js');
    expect(result.losses).toHaveLength(4);
    expect(result.losses.every(Number.isFinite)).toBe(true);
    expect(result.text.length).toBeGreaterThan(0);
    expect(result.adapter.sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    expect(result.merged).toContain('model.safetensors');
    expect(result.saved).toEqual(['checkpoint-00000002', 'checkpoint-00000004']);
  }, 240_000);
});
