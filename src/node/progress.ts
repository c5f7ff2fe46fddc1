/** Progress of the phases a user waits through, on a terminal (cli-progress) or as log lines. */
import cliProgress from 'cli-progress';
import type { ProgressEvent } from '../train/progress.js';

/**
 * Bars for the phases before training (loading and quantizing the weights, choosing a mask, the first
 * evaluation): on a terminal a bar per phase, else a line when a phase starts, every 5 s and when it ends.
 */
export function progressReporter(json: boolean, log: (l: string) => void): (e: ProgressEvent) => void {
  const names = { load: 'load', select: 'mask', evaluate: 'eval' } as const;
  const tty = process.stdout.isTTY && !json;
  let bar: cliProgress.SingleBar | null = null;
  let task: ProgressEvent['task'] | null = null;
  let lastLine = 0;
  return (e) => {
    if (json) return void console.log(JSON.stringify(e));
    const finished = e.total !== null && e.done >= e.total;
    if (tty) {
      if (task !== e.task || !bar) {
        bar?.stop();
        task = e.task;
        bar = new cliProgress.SingleBar({ format: `${names[e.task].padEnd(8)} |{bar}| {value}/{total} {detail}`, hideCursor: true }, cliProgress.Presets.shades_classic);
        bar.start(e.total ?? 0, 0, { detail: '' });
      }
      bar.setTotal(e.total ?? e.done);
      bar.update(e.done, { detail: e.detail ?? '' });
      if (finished) (bar.stop(), (bar = null));
      return;
    }
    if (task !== e.task || finished || performance.now() - lastLine > 5000) {
      task = e.task;
      lastLine = performance.now();
      log(`${`${names[e.task]}:`.padEnd(8)} ${e.done}${e.total !== null ? `/${e.total}` : ''} ${e.detail ?? ''}`);
    }
  };
}

