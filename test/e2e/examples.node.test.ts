/**
 * The README's code: every TypeScript block is a file under examples/, shown verbatim (a marker
 * `<!-- examples/NAME.ts -->` above the block), and each Node example runs as a user's script would:
 * against the built package (tsconfig.build.json; `import ... from 'webgpu-finetune'` resolves to its
 * dist/ by the package's own name), on the shipped model and data. The browser example runs in
 * examples.test.ts.
 */
import { execFile } from 'node:child_process';
import { copyFileSync, cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../..', import.meta.url));
const exec = (file: string, args: string[], cwd = root) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(file, args, { cwd, timeout: 180_000 }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
  });

describe("the README's examples", () => {
  it('every TypeScript block of the README is an example file, verbatim, and every example is shown', () => {
    const readme = readFileSync(`${root}README.md`, 'utf8');
    const blocks = [...readme.matchAll(/(?:<!-- (examples\/[\w-]+\.ts) -->\n)?```ts\n([\s\S]*?)```\n/g)];
    expect(blocks.length).toBeGreaterThan(0);
    for (const [, file, body] of blocks) {
      expect(file, `a TypeScript block with no examples/ file above it: ${body.split('\n')[0]}`).toBeDefined();
      expect(body, `${file} differs from its block in README.md`).toBe(readFileSync(`${root}${file}`, 'utf8'));
    }
    const shown = blocks.map((b) => b[1]).sort();
    expect(shown).toEqual(readdirSync(`${root}examples`).filter((f) => f.endsWith('.ts')).map((f) => `examples/${f}`).sort());
  });

  describe('run against the built package', () => {
    // The package built into a folder of its own (package.json, dist/, public/ and node_modules beside
    // it), so that no other test's build of dist/ can race these runs; the examples import it by name.
    const pkg = mkdtempSync(join(tmpdir(), 'wgft-examples-'));
    afterAll(() => rmSync(pkg, { recursive: true, force: true }));
    beforeAll(async () => {
      // tsc alone: npm test embedded the shaders already.
      const build = await exec(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--outDir', join(pkg, 'dist')]);
      expect(build.code, build.stdout + build.stderr).toBe(0);
      copyFileSync(join(root, 'package.json'), join(pkg, 'package.json'));
      cpSync(join(root, 'examples'), join(pkg, 'examples'), { recursive: true });
      for (const linked of ['public', 'node_modules']) symlinkSync(join(root, linked), join(pkg, linked));
    }, 180_000);

    it.each([
      ['trainer.ts', /step 4: loss \d+\.\d{3}.*\ncompleted at step 4, held-out loss \d+\.\d{3}/],
      ['finetuner.ts', /loss \d\.\d{3}, accuracy \d\.\d\d\nq_proj: 9216 weights\ngreedy: .+\nsampled: .+/],
      ['qlora.ts', /linear weights: 175872 bytes 4-bit, 1216512 in f32/],
      ['peft-adapter.ts', /same loss after the round trip: true/],
      ['sparse.ts', /mask: 1\.\d\d% of 21 layers[\s\S]*mask file \d+ bytes, delta \d+ bytes, merged model: config\.json, generation_config\.json, model\.safetensors/],
      ['adapter-cache.ts', /support-bot: .*; per row: .* \| .* \| .*; losses \d+\.\d\d, \d+\.\d\d\ncapacity: \d+ adapters of rank 16 in 1 GiB/],
      ['kernels.ts', /c\[0\]\[0\] = -?\d+/],
    ])('%s', async (file, output) => {
      const r = await exec(process.execPath, ['--import', 'tsx', `examples/${file}`], pkg);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(output);
    }, 180_000);
  });
});
