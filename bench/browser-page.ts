/**
 * Browser side of the worker benchmark: the same run in a worker and in this page's thread, trained
 * in alternating segments of a few steps (one pauses, the other resumes), so both see the same
 * machine: noise that lasts longer than a segment falls on both alike. Long tasks watched while the
 * worker trains.
 */
import { FineTuneSession, WorkerFineTuneSession, requestDevice, type FineTuneSessionApi, type SessionEvent } from '../src/index.js';
import { BROWSER_BENCH_SEGMENT, benchSpec, stepFigures, type RunFigures } from './browser.js';
import { publish } from './page.js';

interface Side {
  where: string;
  session: FineTuneSessionApi;
  /** Wall time between consecutive step events inside one segment, with the step's tokens. */
  gaps: { step: number; ms: number; tokens: number }[];
  last: number | null;
  inSegment: number;
  done: boolean;
}

await publish(async (log) => {
  const data = new File([await (await fetch('/datasets/next-letter.jsonl')).blob()], 'next-letter.jsonl');
  const spec = benchSpec(new URL('/models/tiny-llama-skills/', location.href).href, data);
  const longTasks: number[] = [];
  let watching = false;
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) if (watching) longTasks.push(e.duration);
  }).observe({ type: 'longtask' });

  const gpu = await requestDevice({ powerPreference: 'high-performance' });
  log('opening the run in a worker and in the page thread');
  const inWorker = await WorkerFineTuneSession.open(spec);
  const sides: Side[] = [
    { where: 'chromium worker', session: inWorker, gaps: [], last: null, inSegment: 0, done: false },
    { where: 'chromium page thread', session: await FineTuneSession.open(spec, { gpu }), gaps: [], last: null, inSegment: 0, done: false },
  ];
  const [worker, page] = sides;
  const other = (s: Side) => (s === worker ? page : worker);
  const handoff = (to: Side) => {
    watching = to === worker;
    to.session.resume();
  };
  for (const side of sides) {
    side.session.onEvent = (e: SessionEvent) => {
      if (e.type === 'step') {
        const now = performance.now();
        if (side.last !== null) side.gaps.push({ step: e.step, ms: now - side.last, tokens: e.tokens });
        side.last = now;
        if (++side.inSegment === BROWSER_BENCH_SEGMENT && !other(side).done) side.session.pause();
      } else if (e.type === 'paused') {
        side.last = null;
        side.inSegment = 0;
        handoff(other(side));
      }
    };
  }
  // The page's run starts paused; the worker's first segment hands over to it.
  page.session.pause();
  watching = true;
  const runs = sides.map(async (side) => {
    const { losses } = await side.session.train();
    side.done = true;
    // The other side may be waiting for a handoff that this finished run will no longer give.
    handoff(other(side));
    return losses;
  });
  const [workerLosses, pageLosses] = await Promise.all(runs);
  watching = false;
  const pings: number[] = [];
  for (let i = 0; i < 100; i++) pings.push(await inWorker.ping());
  for (const side of sides) side.session.destroy();
  const figures = (side: Side, losses: number[]): RunFigures => ({ where: side.where, ...stepFigures(side.gaps), losses });
  return {
    worker: figures(worker, workerLosses),
    page: figures(page, pageLosses),
    ping_ms: pings.sort((a, b) => a - b)[pings.length >> 1],
    longTasks,
    device: gpu.describe(),
  };
}, (r) => JSON.stringify(r, null, 2));
