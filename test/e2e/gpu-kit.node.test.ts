/**
 * The GPU kit's script, built as the kit builds it (bundled with the vitest shim) and run with this
 * machine's Node: its test command must find the kit's test files and fail when a test fails, and the
 * summary must read what the other commands wrote.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kitTestFiles } from '../../bench/gpu/kit-tests.js';

const run = promisify(execFile);
const root = new URL('../..', import.meta.url).pathname;
// Inside the repository, so the bundle finds the `webgpu` package in node_modules as it would in the kit.
const app = join(root, 'bench/scratch/gpu-kit-test');
const out = mkdtempSync(join(tmpdir(), 'gpu-kit-'));

describe('GPU kit', () => {
  beforeAll(async () => {
    await run('npx', ['tsx', 'bench/gpu/pack.ts', '--app-only', '--out', app], { cwd: root });
  }, 120_000);
  afterAll(() => {
    rmSync(app, { recursive: true, force: true });
    rmSync(out, { recursive: true, force: true });
  });

  it('runs the kernel tests it bundled and reports them as JSON', async () => {
    const { stdout } = await run('node', [join(app, 'app/kit.mjs'), 'tests', '--out', out, '--filter', 'int4 group size'], { cwd: root });
    const report = JSON.parse(readFileSync(join(out, 'tests.json'), 'utf8'));
    expect(report.failed, stdout).toBe(0);
    // Each of describe.each's three group sizes ran its tests, named as vitest names them.
    const names: string[] = report.reports.map((r: { name: string }) => r.name);
    for (const g of [32, 64, 128]) expect(names.some((n) => n.startsWith(`kernels/int4.test.ts > int4 group size ${g} > `))).toBe(true);
    expect(report.passed).toBe(names.length);
  }, 120_000);

  it('knows every kit test file and skips Node-only ones', () => {
    const files = kitTestFiles(join(root, 'test'));
    expect(files).toContain('kernels/matmul.test.ts');
    expect(files).toContain('model/gradients.test.ts');
    expect(files.some((f) => f.endsWith('.node.test.ts'))).toBe(false);
  });

  it('exits non-zero when no test matches, and summarizes what was written', async () => {
    await expect(run('node', [join(app, 'app/kit.mjs'), 'tests', '--out', out, '--filter', 'no test has this name'], { cwd: root })).rejects.toThrow();
    writeFileSync(join(out, 'tests.json'), JSON.stringify({ passed: 3, failed: 1, skipped: 0, seconds: 2, reports: [{ name: 'a > b', status: 'failed', ms: 1, error: 'Error: wrong\n at x' }] }));
    const { stdout } = await run('node', [join(app, 'app/kit.mjs'), 'summary', '--out', out], { cwd: root });
    expect(stdout).toContain('Tests: 3 passed, 1 failed, 0 skipped');
    expect(readFileSync(join(out, 'summary.md'), 'utf8')).toContain('FAILED a > b: Error: wrong');
  }, 60_000);
});

describe('the vitest shim the kit bundles', () => {
  it('names each-rows as vitest does, skips, and reports failures, timeouts and failed hooks', async () => {
    const shim = await import('../../bench/gpu/test-runner.js');
    await shim.loadTestFile('f.test.ts', async () => {
      shim.describe.each<[number, string]>([[1, 'a'], [2, 'b']])('suite %i %s', (n) => {
        shim.it('adds', () => shim.expect(n + 1).toBe(3));
      });
      shim.it.each([{ x: 1 }])('row %j', ({ x }) => shim.expect(x).toEqual(1));
      shim.it.skipIf(true)('skipped', () => undefined);
      shim.describe.skipIf(true)('a skipped suite', () => {
        shim.describe('nested', () => shim.it('inside', () => undefined));
      });
      shim.describe.skipIf(false)('a kept suite', () => shim.it('runs', () => undefined));
      shim.it('rejects', async () => shim.expect(Promise.reject(new Error('no'))).rejects.toThrow('no'));
      shim.it('hangs', () => new Promise(() => undefined));
      shim.describe('broken setup', () => {
        shim.beforeAll(() => {
          throw new Error('setup failed');
        });
        shim.it('never runs', () => undefined);
      });
    });
    const reports = await shim.runTests({ timeoutMs: 200, filter: /^f\.test\.ts/ });
    const status = Object.fromEntries(reports.map((r) => [r.name, r.status]));
    expect(status).toEqual({
      'f.test.ts > row {"x":1}': 'passed',
      'f.test.ts > skipped': 'skipped',
      'f.test.ts > a skipped suite > nested > inside': 'skipped',
      'f.test.ts > a kept suite > runs': 'passed',
      'f.test.ts > rejects': 'passed',
      'f.test.ts > hangs': 'failed',
      'f.test.ts > suite 1 a > adds': 'failed',
      'f.test.ts > suite 2 b > adds': 'passed',
      'f.test.ts > broken setup (beforeAll)': 'failed',
    });
    expect(reports.find((r) => r.name.endsWith('hangs'))!.error).toContain('timed out after 200 ms');
    expect(reports.find((r) => r.name.endsWith('suite 1 a > adds'))!.error).toContain('expected 2 to be 3');
  });
});
