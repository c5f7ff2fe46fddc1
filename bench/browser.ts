/**
 * The same training run in a Web Worker (Chromium), in the page's own thread (Chromium) and in Node:
 * tokens/s side by side, what the worker boundary costs per step, and the page's long tasks while the
 * worker trains. Runs in both Node and the page (no Node imports here).
 */
import type { SessionEvent, SessionSpec } from '../src/train/session.js';
import type { FineTuneSessionApi } from '../src/train/session.js';

export const BROWSER_BENCH_STEPS = 16;
/** Steps left out of the medians: the first ones compile pipelines. */
const WARMUP = 3;

export function benchSpec(model: string, dataset: File | { name: string; bytes: Uint8Array }): SessionSpec {
  return {
    model,
    data: dataset,
    dataset: { seqLength: 64 },
    train: { method: 'lora', lora: { rank: 8, targetModules: ['all-linear'] }, steps: BROWSER_BENCH_STEPS, batchSize: 8, microBatch: 8, optimizer: { lr: 5e-3 } },
  };
}

export interface RunFigures {
  where: string;
  /** Median wall time between consecutive step events after warm-up. */
  step_ms: number;
  tokens_per_s: number;
  losses: number[];
}

const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

/** Train a session to the end, timing the gaps between its step events. */
export async function timeRun(where: string, session: FineTuneSessionApi): Promise<RunFigures> {
  const at: number[] = [];
  let tokens = 0;
  session.onEvent = (e: SessionEvent) => {
    if (e.type !== 'step') return;
    at.push(performance.now());
    if (e.step > WARMUP) tokens += e.tokens;
  };
  const { losses } = await session.train();
  const gaps = at.slice(WARMUP).map((t, i) => t - at[WARMUP + i - 1]);
  const elapsed = (at[at.length - 1] - at[WARMUP - 1]) / 1000;
  return { where, step_ms: median(gaps), tokens_per_s: tokens / elapsed, losses };
}

export interface BrowserBenchResult {
  device: { node: string; chromium: string };
  run: string;
  rows: RunFigures[];
  /** A comlink round trip to the worker and back, median of many (ms). */
  ping_ms: number;
  long_tasks_over_50ms: number;
  longest_task_ms: number;
  ratios: Record<string, number>;
}

export function formatBrowserBench(r: BrowserBenchResult): string {
  const lines = [`${r.run}`, `node: ${r.device.node}`, `chromium: ${r.device.chromium}`, ''];
  lines.push(`${'where'.padEnd(24)} ${'step ms'.padStart(9)} ${'tokens/s'.padStart(9)}`);
  for (const x of r.rows) lines.push(`${x.where.padEnd(24)} ${x.step_ms.toFixed(1).padStart(9)} ${x.tokens_per_s.toFixed(0).padStart(9)}`);
  lines.push('', `worker round trip: ${r.ping_ms.toFixed(3)} ms; main-thread long tasks over 50 ms while training: ${r.long_tasks_over_50ms} (longest ${r.longest_task_ms.toFixed(0)} ms)`);
  lines.push('', 'ratios:', ...Object.entries(r.ratios).map(([k, v]) => `  ${k}: ${v.toFixed(3)}`));
  return lines.join('\n');
}
