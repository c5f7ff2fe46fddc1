/**
 * `npm run bench:browser`: the same LoRA run of the shipped base on the shipped sample in Node, in a
 * Chromium Web Worker and in Chromium's page thread. Writes bench/results/browser.json.
 */
import { readFileSync } from 'node:fs';
import { FineTuneSession, requestDevice } from '../src/node.js';
import { fileUrlPath, shippedDatasetUrl, shippedModelUrl } from '../src/model/shipped.js';
import { benchSpec, BROWSER_BENCH_SEGMENT, BROWSER_BENCH_STEPS, formatBrowserBench, timeRun, type BrowserBenchResult, type RunFigures } from './browser.js';
import { runPage, writeResult } from './runner.js';

const gpu = await requestDevice({ powerPreference: 'high-performance' });
const dataset = { name: 'next-letter.jsonl', bytes: new Uint8Array(readFileSync(fileUrlPath(shippedDatasetUrl()))) };
const session = await FineTuneSession.open(benchSpec(fileUrlPath(shippedModelUrl()), dataset), { gpu });
const node = await timeRun('node (dawn)', session);
session.destroy();
const nodeDevice = gpu.describe();
gpu.destroy();

const page = await runPage<{ worker: RunFigures; page: RunFigures; ping_ms: number; longTasks: number[]; device: string }>('bench/browser.html', 20 * 60_000);
const same = page.worker.losses.length === page.page.losses.length && page.worker.losses.every((l, i) => l === page.page.losses[i]);
const result: BrowserBenchResult = {
  device: { node: nodeDevice, chromium: page.device },
  run: `LoRA r8 all-linear on tiny-llama-skills, ${BROWSER_BENCH_STEPS} steps of 8 x 64 tokens (next-letter.jsonl, packed); in Chromium, the worker and the page thread train in alternating segments of ${BROWSER_BENCH_SEGMENT} steps; worker and page losses ${same ? 'identical' : 'DIFFER'}`,
  rows: [node, page.worker, page.page].map(({ losses: _, ...r }) => ({ ...r, losses: [] })),
  ping_ms: page.ping_ms,
  long_tasks_over_50ms: page.longTasks.filter((d) => d > 50).length,
  longest_task_ms: Math.max(0, ...page.longTasks),
  ratios: {
    worker_vs_node_throughput: page.worker.tokens_per_s / node.tokens_per_s,
    worker_vs_page_thread_throughput: page.worker.tokens_per_s / page.page.tokens_per_s,
    // What training behind the boundary costs: the time per token over the same run in the page's thread,
    // measured in interleaved segments on the same machine.
    worker_overhead_fraction: page.page.tokens_per_s / page.worker.tokens_per_s - 1,
    // The messages a step costs (one event, one loss already inside it) at the measured round trip.
    worker_message_fraction: page.ping_ms / page.worker.step_ms,
  },
};
console.log(formatBrowserBench(result));
writeResult('browser.json', result);
process.exit(0);
