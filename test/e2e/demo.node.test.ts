/**
 * The demo page end to end: Playwright drives Debian's chromium against the Vite-served page, clicks
 * "Fine-tune with LoRA" and waits for the held-out accuracy after training and the generated answers.
 */
import { describe, expect, it } from 'vitest';
import { openPage } from '../../bench/chromium.js';

describe('demo page', () => {
  it('fine-tunes the shipped model in the browser and reports held-out accuracy', async () => {
    const session = await openPage('demo/index.html');
    try {
      const { page } = session;
      await page.waitForFunction(() => !(document.getElementById('train') as HTMLButtonElement).disabled, undefined, { timeout: 60_000 });
      expect(await page.textContent('#device')).toMatch(/device: .*browser/);
      await page.click('#train');
      await page.waitForFunction(() => document.getElementById('out')!.textContent!.includes('generated'), undefined, { timeout: 240_000, polling: 500 });
      const text = (await page.textContent('#out'))!;
      const accuracy = (label: string) => Number(new RegExp(`${label}: accuracy ([\\d.]+)%`).exec(text)![1]);
      expect(accuracy('held-out before')).toBeLessThan(10);
      expect(accuracy('held-out after')).toBeGreaterThan(70);
      // Then it writes: greedy answers to held-out prompts, batched; most are right.
      const right = Number(/generated \(greedy, one batch of 5 prompts\): (\d)\/5 right/.exec(text)![1]);
      expect(right).toBeGreaterThanOrEqual(3);
    } finally {
      await session.close();
    }
  }, 300_000);
});
