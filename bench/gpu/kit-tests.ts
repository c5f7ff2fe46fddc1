/** The test files the GPU kit bundles and runs: everything that needs only a GPU and memory. */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';

/** Folders (every *.test.ts in them except Node-only ones) and single files, under test/. */
export const KIT_TESTS = ['kernels', 'gpu/device.test.ts', 'model', 'methods', 'train/optimizer.test.ts', 'train/state.test.ts', 'train/dispatch-budget.test.ts', 'serve'];

/** The files KIT_TESTS names, relative to `testDir`, in a stable order. */
export function kitTestFiles(testDir: string): string[] {
  return KIT_TESTS.flatMap((entry) =>
    entry.endsWith('.ts') ? [entry] : readdirSync(join(testDir, entry)).filter((f) => f.endsWith('.test.ts') && !f.endsWith('.node.test.ts')).sort().map((f) => `${entry}/${f}`),
  );
}
