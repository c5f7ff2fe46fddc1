/** The command line, run as a user runs it (a child process through tsx). */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { folderSource } from '../../src/io/sources.js';
import { readPeftAdapter } from '../../src/methods/lora/index.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';

const cli = fileURLToPath(new URL('../../src/node/cli.ts', import.meta.url));
const shipped = fileURLToPath(new URL('../../public/models/tiny-llama-skills', import.meta.url));

function run(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', cli, ...args], { timeout: 120_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('command line', () => {
  it('generate continues a prompt with the shipped model', async () => {
    const r = await run('generate', '--prompt', 'k>l;c>d;m>', '--max-new-tokens', '3', '--temperature', '0.7', '--seed', '3');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^k>l;c>d;m>/);
    expect(r.stdout).toMatch(/\(([1-3]) tokens, stopped by (max-new-tokens|stop-token)\)/);
  }, 120_000);

  it('fails clearly on a missing model, a bad number and an unknown command', async () => {
    const missing = await run('generate', '--model', '/nonexistent/model');
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/no config\.json/);
    const bad = await run('generate', '--max-new-tokens', 'many');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--max-new-tokens must be an integer >= 1, got 'many'/);
    const unknownFlag = await run('generate', '--temprature', '0.5');
    expect(unknownFlag.code).toBe(2);
    expect(unknownFlag.stderr).toMatch(/Unknown option '--temprature'/);
    const noValue = await run('finetune', '--steps');
    expect(noValue.code).toBe(2);
    expect(noValue.stderr).toMatch(/--steps/);
    const badMethod = await run('finetune', '--method', 'qlora-ish');
    expect(badMethod.code).toBe(2);
    expect(badMethod.stderr).toMatch(/--method must be one of [a-z+, ]*lora[a-z+, ]*, got 'qlora-ish'/);
    const unknown = await run('train-everything');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/Commands: info, finetune, generate/);
  }, 120_000);

  it('sparse fine-tuning selects a mask, saves it and the delta, and a saved mask trains the same run again', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wf-cli-'));
    try {
      const [mask, delta] = [join(dir, 'mask.safetensors'), join(dir, 'delta.safetensors')];
      const first = await run('finetune', '--method', 'sparse', '--steps', '2', '--batch', '2', '--density', '0.05', '--save-mask', mask, '--save-delta', delta);
      expect(first.code, first.stderr).toBe(0);
      expect(first.stdout).toMatch(/mask: {3}sylva selection, 5\.00% of 21 layers/);
      expect(first.stdout).toMatch(/sparse delta saved to/);
      expect(statSync(mask).size).toBeGreaterThan(0);
      expect(statSync(delta).size).toBeGreaterThan(0);
      const again = await run('finetune', '--method', 'sparse', '--steps', '2', '--batch', '2', '--mask', mask);
      expect(again.code, again.stderr).toBe(0);
      expect(again.stdout).toMatch(/mask: {3}.*mask\.safetensors: sylva, 5\.00% of 21 layers \(elements\)/);
      const after = (out: string) => /held-out after: (.*)/.exec(out)![1];
      expect(after(again.stdout)).toBe(after(first.stdout));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 240_000);

  it('refuses sparse flags on other methods and bad sparse values', async () => {
    const wrong = await run('finetune', '--method', 'lora', '--density', '0.1');
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toMatch(/--density applies to the sparse methods/);
    const selection = await run('finetune', '--method', 'sparse', '--selection', 'magic');
    expect(selection.code).toBe(2);
    expect(selection.stderr).toMatch(/--selection must be one of sylva, fisher, snip, random, columns, got 'magic'/);
    const granularity = await run('finetune', '--method', 'sparse', '--granularity', '12');
    expect(granularity.code).toBe(2);
    expect(granularity.stderr).toMatch(/--granularity must be element or a block size of 16, 32, 64/);
  }, 120_000);

  it('QLoRA: LoRA on a base quantized to NF4 at load trains; a bad format or an in-place method is refused', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'wgft-qlora-'));
    try {
      const r = await run('finetune', '--method', 'lora', '--quantize', 'nf4', '--steps', '2', '--batch', '2', '--save-adapter', dir);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/base: {3}frozen linear weights nf4, 0\.\d\d MiB/);
      expect(r.stdout).toMatch(/held-out after: /);
      expect(r.stdout).toMatch(/adapter saved to .* \(PEFT: adapter_config\.json, adapter_model\.safetensors\)/);
      const config = (await openCheckpoint(folderSource(shipped))).config;
      const adapter = await readPeftAdapter({ config: readFileSync(join(dir, 'adapter_config.json')), weights: readFileSync(join(dir, 'adapter_model.safetensors')) }, config);
      expect(adapter.options.rank).toBe(16);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const wrong = await run('finetune', '--method', 'sparse', '--save-adapter', 'x');
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toMatch(/--save-adapter writes a LoRA adapter/);
    const format = await run('finetune', '--quantize', 'fp4');
    expect(format.code).toBe(2);
    expect(format.stderr).toMatch(/--quantize must be one of int4, nf4, got 'fp4'/);
    const sparse = await run('finetune', '--method', 'sparse', '--quantize', 'nf4');
    expect(sparse.code).toBe(2);
    expect(sparse.stderr).toMatch(/--quantize makes the frozen base 4-bit, and 'sparse' trains inside the base weights/);
  }, 120_000);
});
