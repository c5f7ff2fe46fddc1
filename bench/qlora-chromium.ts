/** QLoRA against LoRA in headless Chromium. Writes bench/results/qlora-chromium.json. */
import { formatQloraBench, type QloraBenchResult } from './qlora.js';
import { runPage, writeResult } from './runner.js';

const result = await runPage<QloraBenchResult>('bench/qlora.html', 30 * 60_000);
console.log(formatQloraBench(result));
writeResult('qlora-chromium.json', result);
