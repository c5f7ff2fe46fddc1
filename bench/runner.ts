/** Shared glue of the benchmark entry points: results to bench/results, pages driven in Chromium. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { openPage } from './chromium.js';

export function writeResult(file: string, result: unknown): void {
  const dir = new URL('./results/', import.meta.url);
  mkdirSync(dir, { recursive: true });
  writeFileSync(new URL(file, dir), JSON.stringify(result, null, 2));
  console.log(`\nwrote bench/results/${file}`);
}

/**
 * Open `page` in headless Chromium and wait for it to set window.benchResult (or window.benchError),
 * as the bench pages do through bench/page.ts.
 */
export async function runPage<T>(page: string, timeoutMs: number): Promise<T> {
  const session = await openPage(page);
  try {
    await session.page.waitForFunction(() => (window as unknown as Record<string, unknown>).benchResult || (window as unknown as Record<string, unknown>).benchError, undefined, { timeout: timeoutMs, polling: 1000 });
    const error = await session.page.evaluate(() => (window as unknown as Record<string, unknown>).benchError as string | undefined);
    if (error) throw new Error(`benchmark failed in the page: ${error}`);
    return (await session.page.evaluate(() => (window as unknown as Record<string, unknown>).benchResult)) as T;
  } finally {
    await session.close();
  }
}
