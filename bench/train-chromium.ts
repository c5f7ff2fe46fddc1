/** Training benchmark in headless Chromium. Writes bench/results/train-chromium.json. */
import { formatTrainBench, type TrainBenchResult } from './train.js';
import { runPage, writeResult } from './runner.js';

const result = await runPage<TrainBenchResult>('bench/train.html', 20 * 60_000);
console.log(formatTrainBench(result));
writeResult('train-chromium.json', result);
