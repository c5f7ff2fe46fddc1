/** Training benchmark in headless Chromium. Writes bench/results/train-chromium.json. */
import { mkdirSync, writeFileSync } from 'node:fs';
import { openPage } from './chromium.js';
import { formatTrainBench, type TrainBenchResult } from './train.js';

const session = await openPage('bench/train.html');
try {
  await session.page.waitForFunction(() => window.trainResult || window.trainError, undefined, { timeout: 20 * 60_000, polling: 1000 });
  const error = await session.page.evaluate(() => window.trainError);
  if (error) throw new Error(`benchmark failed in the page: ${error}`);
  const result = (await session.page.evaluate(() => window.trainResult)) as TrainBenchResult;
  console.log(formatTrainBench(result));
  const dir = new URL('./results/', import.meta.url);
  mkdirSync(dir, { recursive: true });
  writeFileSync(new URL('train-chromium.json', dir), JSON.stringify(result, null, 2));
  console.log('\nwrote bench/results/train-chromium.json');
} finally {
  await session.close();
}
