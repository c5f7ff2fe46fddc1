/**
 * Test files in the order that finishes soonest on a machine with few cores: the end-to-end files (each
 * minutes of child processes, browsers and training runs) and the training-loop files first, then
 * vitest's own order. Vitest orders by the durations it cached on an earlier run, so a clean clone (CI)
 * would otherwise start the longest files last, by size, and wait on them alone at the end.
 */
import { BaseSequencer, type TestSpecification } from 'vitest/node';

const SLOWEST = [/\/test\/e2e\//, /\/test\/train\/(learning|trainer)\./, /\/test\/methods\/shared\./];

export default class SlowestFirstSequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (f: TestSpecification) => {
      const i = SLOWEST.findIndex((re) => re.test(f.moduleId));
      return i === -1 ? SLOWEST.length : i;
    };
    // Array.prototype.sort is stable: within a rank, vitest's order stands.
    return (await super.sort(files)).sort((a, b) => rank(a) - rank(b));
  }
}
