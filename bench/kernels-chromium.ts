/** Kernel benchmark in headless Chromium. Writes bench/results/kernels-chromium.json. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { openPage } from './chromium.js';
import { formatKernelBench, type KernelBenchResult } from './kernels.js';

const session = await openPage('bench/kernels.html');
try {
  await session.page.waitForFunction(() => window.benchResult || window.benchError, undefined, { timeout: 15 * 60_000, polling: 500 });
  const error = await session.page.evaluate(() => window.benchError);
  if (error) throw new Error(`benchmark failed in the page: ${error}`);
  const result = (await session.page.evaluate(() => window.benchResult)) as KernelBenchResult;
  console.log(formatKernelBench(result));
  const dir = new URL('./results/', import.meta.url);
  mkdirSync(dir, { recursive: true });
  writeFileSync(new URL('kernels-chromium.json', dir), JSON.stringify(result, null, 2));
  console.log('\nwrote bench/results/kernels-chromium.json');
} finally {
  await session.close();
}
