/**
 * The package as users get it: built, packed with `npm pack`, installed into an empty app (alone, as a
 * browser app has it: nothing native; then with Dawn, as a Node app has it), and its command line run
 * with `npx webgpu-finetune` on the model and dataset it ships.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

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
  }, 600_000);
});
