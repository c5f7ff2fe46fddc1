/**
 * The part of vitest's API the GPU tests use (describe, it, each, skipIf on both, beforeAll, afterAll, and
 * vitest's own `expect` from @vitest/expect), so the kit can bundle the unchanged test files into one
 * script that runs on a machine with nothing but a Node binary. Tests run one at a time, in file order.
 */
import { chai, JestAsymmetricMatchers, JestChaiExpect, JestExtend } from '@vitest/expect';

chai.use(JestExtend);
chai.use(JestChaiExpect);
chai.use(JestAsymmetricMatchers);

export const expect = ((value: unknown, message?: string) => chai.expect(value, message)) as unknown as typeof import('vitest').expect;

type Fn = () => unknown;
/** Children keep their definition order: vitest runs tests and nested suites as they were written. */
interface Suite { name: string; children: (Test | Suite)[]; before: Fn[]; after: Fn[] }
interface Test { name: string; fn: Fn | null }
const isSuite = (c: Test | Suite): c is Suite => 'children' in c;

const root: Suite = { name: '', children: [], before: [], after: [] };
let current = root;

/** vitest's name formatting for `each`: %s %i %d %f %j %o %%, in order; array rows spread. */
function formatName(name: string, args: unknown[]): string {
  let i = 0;
  return name.replace(/%[sidfjo%]/g, (m) => {
    if (m === '%%') return '%';
    const v = args[i++];
    if (m === '%i' || m === '%d') return String(Math.trunc(Number(v)));
    if (m === '%j' || m === '%o') return JSON.stringify(v);
    return String(v);
  });
}

type EachArgs<R> = R extends readonly unknown[] ? R : [R];
function withEach(define: (name: string, fn: Fn) => void) {
  return <R>(rows: readonly R[]) =>
    (name: string, fn: (...args: EachArgs<R>) => unknown) => {
      for (const row of rows) {
        const args = (Array.isArray(row) ? row : [row]) as EachArgs<R>;
        define(formatName(name, args as readonly unknown[] as unknown[]), () => fn(...args));
      }
    };
}

function defineSuite(name: string, body: Fn): void {
  const suite: Suite = { name, children: [], before: [], after: [] };
  current.children.push(suite);
  const parent = current;
  current = suite;
  try {
    body();
  } finally {
    current = parent;
  }
}

function defineTest(name: string, fn: Fn): void {
  current.children.push({ name, fn });
}

/** Every test under a suite, at any depth, skipped. */
function skipAll(suite: Suite): void {
  for (const c of suite.children) {
    if (isSuite(c)) skipAll(c);
    else c.fn = null;
  }
}

export const describe = Object.assign(defineSuite, {
  each: withEach(defineSuite),
  skipIf: (skip: boolean) => (name: string, body: Fn) => {
    defineSuite(name, body);
    if (skip) skipAll(current.children[current.children.length - 1] as Suite);
  },
});
export const it = Object.assign(defineTest, {
  each: withEach(defineTest),
  skipIf: (skip: boolean) => (name: string, fn: Fn) => current.children.push({ name, fn: skip ? null : fn }),
});
export const test = it;
export const beforeAll = (fn: Fn) => current.before.push(fn);
export const afterAll = (fn: Fn) => current.after.push(fn);

/** A test file's describes and tests register under a suite named by the file, as it is imported. */
export async function loadTestFile(name: string, load: () => Promise<unknown>): Promise<void> {
  const suite: Suite = { name, children: [], before: [], after: [] };
  root.children.push(suite);
  current = suite;
  try {
    await load();
  } finally {
    current = root;
  }
}

export interface TestReport { name: string; status: 'passed' | 'failed' | 'skipped'; ms: number; error?: string }

async function withTimeout(fn: Fn, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([Promise.resolve().then(fn), new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/** Run every registered test whose full name matches `filter`; `onReport` hears each as it ends. */
export async function runTests(o: { timeoutMs: number; filter?: RegExp; onReport?: (r: TestReport) => void }): Promise<TestReport[]> {
  const reports: TestReport[] = [];
  const report = (r: TestReport) => {
    reports.push(r);
    o.onReport?.(r);
  };
  const wanted = (name: string) => !o.filter || o.filter.test(name);
  const matches = (s: Suite, path: string): boolean => s.children.some((c) => (isSuite(c) ? matches(c, `${path} > ${c.name}`) : wanted(`${path} > ${c.name}`)));
  async function run(s: Suite, path: string): Promise<void> {
    if (!matches(s, path)) return;
    try {
      for (const fn of s.before) await withTimeout(fn, o.timeoutMs);
    } catch (e) {
      report({ name: `${path} (beforeAll)`, status: 'failed', ms: 0, error: String((e as Error)?.stack ?? e) });
      return;
    }
    for (const c of s.children) {
      const name = `${path} > ${c.name}`;
      if (isSuite(c)) {
        await run(c, name);
        continue;
      }
      if (!wanted(name)) continue;
      if (!c.fn) {
        report({ name, status: 'skipped', ms: 0 });
        continue;
      }
      const t0 = performance.now();
      try {
        await withTimeout(c.fn, o.timeoutMs);
        report({ name, status: 'passed', ms: performance.now() - t0 });
      } catch (e) {
        report({ name, status: 'failed', ms: performance.now() - t0, error: String((e as Error)?.stack ?? e).slice(0, 4000) });
      }
    }
    for (const fn of s.after) await withTimeout(fn, o.timeoutMs).catch(() => undefined);
  }
  for (const s of root.children) if (isSuite(s)) await run(s, s.name);
  return reports;
}
