/** Browser side of the benchmarks (no Node imports here: this module runs in the page). */

/** Browser side: run a benchmark and publish its result (or error) on window for runPage. */
export async function publish<T>(run: (log: (l: string) => void) => Promise<T>, format: (r: T) => string): Promise<void> {
  const out = document.getElementById('out')!;
  const w = window as unknown as Record<string, unknown>;
  try {
    const result = await run((l) => (out.textContent += `\n${l}`));
    out.textContent = format(result);
    w.benchResult = result;
  } catch (e) {
    w.benchError = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    out.textContent = String(w.benchError);
  }
}
