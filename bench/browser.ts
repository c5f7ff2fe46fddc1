/**
 * The same training run in a Web Worker (Chromium), in the page's own thread (Chromium) and in Node:
 * tokens/s side by side, what the worker boundary costs per step, and the page's long tasks while the
 * worker trains. Runs in both Node and the page (no Node imports here).
 */
import type { SessionEvent, SessionSpec } from '../src/train/session.js';
import type { FineTuneSessionApi } from '../src/train/session.js';

export const BROWSER_BENCH_STEPS = 24;
/** Steps each side trains before handing over to the other, in the browser's alternating run. */
export const BROWSER_BENCH_SEGMENT = 4;
/** Steps left out of the figures: the first ones compile pipelines. */
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

/**
 * Figures of the steps after warm-up, from the wall time between each step's event and the one before
 * it (the GPU always has the next step queued, so a gap is one step's time).
 */
export function stepFigures(gaps: { step: number; ms: number; tokens: number }[]): Omit<RunFigures, 'where' | 'losses'> {
  const kept = gaps.filter((g) => g.step > WARMUP);
  const ms = kept.reduce((a, g) => a + g.ms, 0);
  return { step_ms: median(kept.map((g) => g.ms)), tokens_per_s: kept.reduce((a, g) => a + g.tokens, 0) / (ms / 1000) };
}

/** Train a session to the end, timing the gaps between its step events. */
export async function timeRun(where: string, session: FineTuneSessionApi): Promise<RunFigures> {
  const gaps: { step: number; ms: number; tokens: number }[] = [];
  let last: number | null = null;
  session.onEvent = (e: SessionEvent) => {
    if (e.type !== 'step') return;
    const now = performance.now();
    if (last !== null) gaps.push({ step: e.step, ms: now - last, tokens: e.tokens });
    last = now;
  };
  const { losses } = await session.train();
  return { where, ...stepFigures(gaps), losses };
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
