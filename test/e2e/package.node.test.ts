/**
 * The package as users get it: built, packed with `npm pack`, installed into an empty app (alone, as a
 * browser app has it: nothing native; then with Dawn, as a Node app has it), its command line run with
 * `npx webgpu-finetune` on the model and dataset it ships, a Node script of the app fine-tuning through
 * the package, the app type-checked with the README's instructions, and a Vite page of the app
 * fine-tuning in the package's worker in Chromium.
 */
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { chromium } from 'playwright';
import { CHROMIUM_ARGS, CHROMIUM_PATH } from '../../vite.config.js';

const exec = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
const app = mkdtempSync(join(tmpdir(), 'wgft-app-'));
afterAll(() => rmSync(app, { recursive: true, force: true }));

describe('the installed package', () => {
  it('npx webgpu-finetune train runs from an app that installed the packed tarball', async () => {
    // tsc alone (npm test embedded the shaders already; rewriting them now would race the other test files).
    await exec(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: root, timeout: 300_000 });
    const { stdout: packed } = await exec('npm', ['pack', '--pack-destination', app, '--json'], { cwd: root, timeout: 120_000 });
    const [{ filename, files }] = JSON.parse(packed) as { filename: string; files: { path: string }[] }[];
    const paths = files.map((f) => f.path);
    for (const needed of ['dist/node/cli.js', 'dist/index.js', 'public/datasets/next-letter.jsonl', 'public/models/tiny-llama-skills/model.safetensors']) expect(paths).toContain(needed);
    expect(paths.some((p) => p.startsWith('src/') || p.startsWith('test/'))).toBe(false);
    writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', type: 'module', private: true }));
    const env = { ...process.env, npm_config_audit: 'false', npm_config_fund: 'false' };
    // A browser app installs the package alone: no Dawn, no runtimes it never calls, no install scripts.
    await exec('npm', ['install', '--prefer-offline', `./${filename}`], { cwd: app, env, timeout: 300_000 });
    const installed = readdirSync(join(app, 'node_modules'), { recursive: true }).length;
    expect(existsSync(join(app, 'node_modules/webgpu'))).toBe(false);
    expect(existsSync(join(app, 'node_modules/onnxruntime-node'))).toBe(false);
    expect(existsSync(join(app, 'node_modules/@huggingface/transformers'))).toBe(false);
    expect(installed).toBeLessThan(2000);
    // A Node app adds Dawn, the optional peer dependency.
    await exec('npm', ['install', '--prefer-offline', 'webgpu'], { cwd: app, env, timeout: 300_000 });
    const run = join(app, 'run');
    const { stdout } = await exec('npx', ['webgpu-finetune', 'train', '--steps', '1', '--batch-size', '2', '--seq-len', '32', '--samples', '1', '--output', run], { cwd: app, env, timeout: 180_000 });
    expect(stdout).toMatch(/model: {3}folder .*node_modules\/webgpu-finetune\/public\/models\/tiny-llama-skills/);
    expect(stdout).toMatch(/data: {4}next-letter\.jsonl: prompt-completion/);
    expect(stdout).toMatch(/completed at step 1/);
    expect(existsSync(join(run, 'adapter/adapter_model.safetensors'))).toBe(true);

    // A Node script of the app: a session on the shipped model and dataset, by the package's helpers.
    writeFileSync(join(app, 'train.mjs'), NODE_SCRIPT);
    const script = await exec(process.execPath, ['train.mjs'], { cwd: app, env, timeout: 180_000 });
    const losses = JSON.parse(script.stdout.trim().split('\n').at(-1)!) as number[];
    expect(losses).toHaveLength(2);
    expect(losses.every(Number.isFinite)).toBe(true);

    // Types in a fresh TypeScript app as a bundler's template sets it up, with the README's one line (WebGPU's
    // types from @webgpu/types), every declaration file checked.
    await exec('npm', ['install', '--prefer-offline', '-D', 'typescript@5', '@webgpu/types'], { cwd: app, env, timeout: 300_000 });
    writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({ compilerOptions: { target: 'es2022', module: 'esnext', moduleResolution: 'bundler', strict: true, noEmit: true, skipLibCheck: false, lib: ['es2023', 'dom', 'dom.iterable'], types: ['@webgpu/types'] }, files: ['check.ts'] }));
    writeFileSync(join(app, 'check.ts'), TYPED_APP);
    await exec(process.execPath, [join(app, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], { cwd: app, env, timeout: 180_000 }).catch((e: { stdout?: string }) => {
      throw new Error(`tsc in a fresh app failed:\n${e.stdout}`);
    });

    // A Vite page of the app: the package's worker bundled, the shipped model copied into what it serves.
    cpSync(join(app, 'node_modules/webgpu-finetune/public'), join(app, 'public'), { recursive: true });
    writeFileSync(join(app, 'index.html'), '<!doctype html><html><body><pre id="out"></pre><script type="module" src="./main.js"></script></body></html>');
    writeFileSync(join(app, 'main.js'), VITE_PAGE);
    const { build, preview } = await import('vite');
    await build({ root: app, configFile: false, logLevel: 'warn', build: { outDir: join(app, 'dist') }, worker: { format: 'es' } });
    const server = await preview({ root: app, configFile: false, logLevel: 'warn', preview: { port: 0, host: '127.0.0.1' }, build: { outDir: join(app, 'dist') } });
    const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS, headless: true });
    try {
      const page = await browser.newPage();
      await page.goto(server.resolvedUrls!.local[0]);
      await page.waitForFunction(() => (window as unknown as { result?: unknown }).result !== undefined, undefined, { timeout: 180_000 });
      const result = await page.evaluate(() => (window as unknown as { result: { losses?: number[]; error?: string } }).result);
      expect(result.error).toBeUndefined();
      expect(result.losses).toHaveLength(2);
      expect(result.losses!.every(Number.isFinite)).toBe(true);
    } finally {
      await browser.close();
      await new Promise<void>((r) => server.httpServer.close(() => r()));
    }
  }, 900_000);
});

const NODE_SCRIPT = `
import { readFileSync } from 'node:fs';
import { FineTuneSession, fileUrlPath, shippedDatasetUrl, shippedModel } from 'webgpu-finetune';
const data = { name: 'next-letter.jsonl', bytes: new Uint8Array(readFileSync(fileUrlPath(shippedDatasetUrl()))) };
const session = await FineTuneSession.open({ model: shippedModel(), data, dataset: { seqLength: 32 }, train: { method: 'lora', lora: { rank: 4 }, steps: 2, batchSize: 2 } });
const { losses } = await session.train();
session.destroy();
console.log(JSON.stringify(losses));
process.exit(0);
`;

const TYPED_APP = `
import { FineTuneSession, WorkerFineTuneSession, requestDevice, type SessionSpec, type TrainerEvent } from 'webgpu-finetune';
const spec: SessionSpec = { model: 'org/name', data: { name: 'a.jsonl', bytes: new Uint8Array() }, dataset: { seqLength: 64 }, train: { method: 'lora', lora: { rank: 8 }, steps: 10 } };
export async function run(device?: GPUDevice): Promise<number> {
  const gpu = await requestDevice();
  const s = device ? await FineTuneSession.open(spec, { gpu }) : await WorkerFineTuneSession.open(spec);
  s.onEvent = (e) => { if (e.type === 'step') { const step: Extract<TrainerEvent, { type: 'step' }> = e; console.log(step.loss); } };
  return (await s.train()).step;
}
`;

const VITE_PAGE = `
import { WorkerFineTuneSession, shippedModelUrl, shippedDatasetUrl } from 'webgpu-finetune';
try {
  const data = new File([await (await fetch(shippedDatasetUrl('next-letter.jsonl', { base: '/datasets/' }))).blob()], 'next-letter.jsonl');
  const session = await WorkerFineTuneSession.open({ model: shippedModelUrl(undefined, { base: '/models/' }).href, data, dataset: { seqLength: 32 }, train: { method: 'lora', lora: { rank: 4 }, steps: 2, batchSize: 2 } });
  const { losses } = await session.train();
  session.destroy();
  window.result = { losses };
} catch (e) {
  window.result = { error: String(e && e.stack || e) };
}
`;
