/** The adapter cache's benchmark in headless Chromium. Writes bench/results/serve-chromium.json. */
import { formatServeBench, type ServeBenchResult } from './serve.js';
import { runPage, writeResult } from './runner.js';

const result = await runPage<ServeBenchResult>('bench/serve.html', 20 * 60_000);
console.log(formatServeBench(result));
writeResult('serve-chromium.json', result);
process.exit(0);
