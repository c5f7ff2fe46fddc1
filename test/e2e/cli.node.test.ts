/**
 * The command line, run as a user runs it: a child process of the CLI bundled once here with esbuild
 * (a third of tsx's start-up, which most of these processes are), and through tsx where a plugin is imported
 * beside it (it must share the engine's modules).
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { folderSource } from '../../src/io/sources.js';
import { readPeftAdapter } from '../../src/methods/lora/index.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { folderCheckpointStore } from '../../src/node/checkpoint-folder.js';
import { evalCommand } from '../../src/node/commands/eval.js';
import { exportCommand } from '../../src/node/commands/export.js';
import { generateCommand } from '../../src/node/commands/generate.js';
import { infoCommand } from '../../src/node/commands/info.js';
import { selectMaskCommand } from '../../src/node/commands/select-mask.js';
import { trainCommand } from '../../src/node/commands/train.js';
import { parseFlags } from '../../src/node/flags.js';
import { latestCheckpoint } from '../../src/train/checkpoints.js';
import { loadFineTunedRun } from '../../src/train/trainer.js';
import { testGpu } from '../helpers.js';

const cli = fileURLToPath(new URL('../../src/node/cli.ts', import.meta.url));
// Two folders below the repository, as dist/node/cli.js is: the shipped files resolve from there (../../public).
const bundled = fileURLToPath(new URL('../../node_modules/.cli-test/cli.mjs', import.meta.url));
beforeAll(async () => {
  await build({ entryPoints: [cli], bundle: true, platform: 'node', format: 'esm', packages: 'external', outfile: bundled, logLevel: 'warning' });
});
const shipped = fileURLToPath(new URL('../../public/models/tiny-llama-skills', import.meta.url));
const dirs: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'wgft-cli-'));
  dirs.push(d);
  return d;
};
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

type Outcome = { code: number; stdout: string; stderr: string };
const run = (...args: string[]) => execNode([bundled, ...args]);

/** The command line with modules imported first (`--import`), as a plugin adds a method. */
const runWith = (imports: string[], ...args: string[]) => execNode(['--import', 'tsx', ...imports.flatMap((m) => ['--import', m]), cli, ...args]);

function execNode(args: string[]): Promise<Outcome> {
  return new Promise((resolve) => {
    execFile(process.execPath, args, { timeout: 240_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** Short runs: few steps of small batches of short rows, evaluated on 15 held-out rows. */
const SHORT = ['--batch-size', '4', '--seq-len', '64', '--samples', '2', '--validation', '0.005'];
/** Every file under a folder with its bytes. */
const folderBytes = (dir: string): Record<string, Buffer> =>
  Object.fromEntries(readdirSync(dir, { recursive: true, withFileTypes: true }).filter((f) => f.isFile()).map((f) => [join(f.parentPath, f.name), readFileSync(join(f.parentPath, f.name))]));
const events = (stdout: string) => stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));

describe('command line: bad input', () => {
  const dataDir = tempDir();
  const csv = join(dataDir, 'rows.csv');
  writeFileSync(csv, 'prompt,completion\n');
  const aFile = join(dataDir, 'not-a-folder');
  writeFileSync(aFile, '');
  // A model that does not exist: a row that names it fails on its own flag, so it was checked before the model.
  const noModel = ['--model', '/nonexistent/model'];
  const table: [string[], number, RegExp][] = [
    [['train', '--steps', 'abc'], 2, /--steps must be an integer >= 1 and <= 1000000000, got 'abc'/],
    [['train', '--steps', '-3'], 2, /--steps must be an integer >= 1/],
    [['train', '--steps'], 2, /train: Option '--steps <value>' argument missing/],
    [['train', '--lr', 'abc'], 2, /--lr must be a number >= 0 and <= 10, got 'abc'/],
    [['train', '--lr', '-1'], 2, /--lr must be a number >= 0/],
    [['train', '--lr', '--steps', '3'], 2, /--lr needs a value \(got the flag --steps\)/],
    [['train', '--batch-size', '1e7'], 2, /--batch-size must be an integer >= 1 and <= 65536, got '1e7'/],
    [['train', '--rank', '100000'], 2, /--rank must be an integer >= 1 and <= 65536/],
    [['train', '--rank', '97'], 1, /LoRA rank 97 exceeds what 'layers\.0\.q' \(96x96\) can hold: at most 96/],
    [['train', '--micro-batch', '3'], 2, /--micro-batch must divide --batch-size 8, got 3/],
    [['train', '--seq-len', '4096'], 2, /--seq-len must be an integer >= 2 and <= 128 \(the model's positions\), got '4096'/],
    [['train', '--epochs', '0'], 2, /--epochs must be a number > 0 and <= 1000000, got '0'/],
    [['train', '--method', 'qlora-ish'], 2, /--method must be one of full, lora, sparse, sparse\+lora, zo, lisa, galore, got 'qlora-ish'/],
    [['train', '--quantize', 'fp4'], 2, /--quantize must be one of int4, nf4, got 'fp4'/],
    [['train', '--method', 'sparse', '--quantize', 'nf4'], 2, /--quantize makes the frozen base 4-bit, and 'sparse' trains inside the base weights/],
    [['train', '--method', 'full', '--quantize', 'int4'], 2, /--quantize makes the frozen base 4-bit, and 'full' trains every linear weight, which a 4-bit base keeps frozen: use --method lora/],
    [['train', '--density', '0.1'], 2, /--density applies to the methods sparse, sparse\+lora, zo, not 'lora'/],
    [['train', '--method', 'full', '--rank', '4'], 2, /--rank applies to the methods lora, sparse\+lora, zo, not 'full'/],
    [['train', '--method', 'sparse', '--granularity', '12'], 2, /--granularity must be one of element, 16, 32, 64, got '12'/],
    [['train', '--method', 'sparse', '--selection', 'magnitude'], 2, /--selection must be one of sylva, fisher, snip, random, columns, got 'magnitude'/],
    [['train', '--target-modules', ','], 2, /--target-modules names nothing/],
    [['train', '--method', 'sparse+lora', '--dora'], 2, /--dora applies to the methods lora, zo, not 'sparse\+lora'/],
    [['train', '--pissa-niter', '4'], 2, /--pissa-niter applies to --init pissa/],
    [['train', '--method', 'sparse', '--selection', 'random', '--calibration-tokens', '512'], 2, /--calibration-tokens applies to --selection sylva or fisher or snip/],
    [['train', '--init', 'svd'], 2, /--init must be one of kaiming, gaussian, pissa, olora, got 'svd'/],
    [['train', '--dora', '--dropout', '0.1'], 1, /DoRA with dropout \(0\.1\) is not supported/],
    [['train', '--precision', 'f16'], 2, /--precision must be one of f32, mixed, got 'f16'/],
    [['train', '--precision', 'mixed', '--quantize', 'nf4'], 2, /--precision mixed makes the linear products read f16 operands, and a --quantize base/],
    [['train', '--double-quant'], 2, /--double-quant quantizes the absmax of NF4: use it with --quantize nf4/],
    [['train', '--temprature', '0.5'], 2, /train: Unknown option '--temprature'/],
    [['train', 'extra'], 2, /Unexpected argument 'extra'/],
    [['train', ...noModel, '--data', '/nonexistent/rows.jsonl'], 2, /--data: no file '\/nonexistent\/rows\.jsonl'/],
    [['train', ...noModel, '--data', csv], 2, /--data: \S*rows\.csv: unknown dataset format; use \.jsonl, \.json, \.txt or \.parquet/],
    [['train', ...noModel, '--validation', '/nonexistent/held.jsonl'], 2, /--validation: no file/],
    [['train', ...noModel, '--method', 'sparse', '--mask', '/nonexistent/mask.safetensors'], 2, /--mask: no file/],
    [['train', ...noModel, '--method', 'sparse+lora', '--mask', '/nonexistent/mask.safetensors', '--density', '0.1'], 2, /--mask decides --density: give one of them/],
    [['train', ...noModel, '--output', aFile], 2, /--output '\S+not-a-folder' is a file: give a folder/],
    [['train', ...noModel, '--resume', '--output', dataDir], 2, /--resume: '\S+' holds no checkpoint to continue/],
    [['train', ...noModel, '--resume', '--overwrite'], 2, /--resume continues the checkpoints that --overwrite deletes: give one of them/],
    [['train', '--model', '/nonexistent/model'], 1, /no config\.json/],
    [['train', '--validation', '1.5'], 2, /--validation must be a fraction in \[0, 1\) or a file, got '1\.5'/],
    [['generate', '--top-k', '-3'], 2, /--top-k must be an integer >= 0, got '-3'/],
    [['generate', '--temperature', '-1'], 2, /--temperature must be a number >= 0/],
    [['generate', '--max-new-tokens', 'many'], 2, /--max-new-tokens must be an integer >= 1/],
    [['export'], 2, /export: --run DIR is required/],
    [['select-mask'], 2, /select-mask: --out FILE is required/],
    [['train-everything'], 2, /unknown command 'train-everything'/],
  ];
  // Child processes that mostly start up and stop: run a few at a time.
  it.concurrent.each(table)('%j exits %i with a one-line message', async (args, code, message) => {
    // A fresh output folder, so that no earlier run in runs/ decides the outcome.
    const fresh = args[0] === 'train' && !args.includes('--output') ? ['--output', join(tempDir(), 'run')] : [];
    const r = await run(args[0], ...fresh, ...args.slice(1));
    expect(r.code, r.stdout + r.stderr).toBe(code);
    const lines = r.stderr.split('\n').filter((l) => l.trim() && !/^(Warning|\s+at |\s*-?\s*While initializing)/.test(l) && !/Vulkan|vk_|\bICD\b/.test(l));
    expect(lines.join('\n')).toMatch(message);
    if (code === 2) expect(lines.length, r.stderr).toBeLessThanOrEqual(args[0] === 'train-everything' ? 10 : 1);
  }, 60_000);

  it("every --help example parses with its command's flags", async () => {
    const commands = [trainCommand, evalCommand, generateCommand, exportCommand, selectMaskCommand, infoCommand];
    for (const c of commands) {
      expect(c.examples.length, c.name).toBeGreaterThan(0);
      for (const [line] of c.examples) {
        const words = [...line.matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]);
        expect(() => parseFlags(c, words), `${c.name} ${line}`).not.toThrow();
      }
    }
  });

  it('every command has --help', async () => {
    for (const c of ['train', 'eval', 'generate', 'export', 'select-mask', 'info']) {
      const r = await run(c, '--help');
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`^usage: webgpu-finetune ${c} \\[flags\\]`));
      expect(r.stdout).toMatch(/--help {2,}this help/);
      expect(r.stdout).toMatch(new RegExp(`\nexamples:\n {2}# .*\n {2}webgpu-finetune ${c}`));
    }
    expect((await run('--help')).stdout).toMatch(/train .*\n.*eval .*\n.*generate .*\n.*export .*\n.*select-mask .*\n.*info /);
  }, 60_000);
});

describe('command line: runs', () => {
  const out = tempDir();

  it('train: a LoRA run on the shipped data writes checkpoints and the PEFT adapter, with before/after generations', async () => {
    const r = await run('train', '--steps', '4', '--save-every', '2', '--lr', '1e-2', '--output', out, ...SHORT);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/data: {4}next-letter\.jsonl: prompt-completion, 3000 rows read -> 3000 examples \(15 held out\); /);
    expect(r.stdout).toMatch(/packing: \d+ rows of 64 tokens, \d\.\d% padding \(\d\d\.\d% with one example per row\)/);
    expect(r.stdout).toMatch(/plan: {4}4 steps of 4 rows x 64 tokens/);
    // Without a terminal, the phases before training report as lines: the weights loading, the first evaluation.
    expect(r.stdout).toMatch(/load: {4}\d+\/\d+ tensors \(.+\)\n(.*\n)*load: {4}(\d+)\/\2 tensors/);
    expect(r.stdout).toMatch(/eval: {4}(\d+)\/\1 batches/);
    expect(r.stdout).toMatch(/held-out prompts, greedy: base -> fine-tuned:\n {2}"next:[a-z]+=" /);
    expect(r.stdout).toMatch(/saved: {3}.*adapter \(adapter_config\.json, adapter_model\.safetensors\)/);
    const config = (await openCheckpoint(folderSource(shipped))).config;
    const adapter = await readPeftAdapter({ config: readFileSync(join(out, 'adapter/adapter_config.json')), weights: readFileSync(join(out, 'adapter/adapter_model.safetensors')) }, config);
    expect(adapter.options.rank).toBe(16);
    expect(readdirSync(join(out, 'checkpoints')).sort()).toEqual(['checkpoint-00000002', 'checkpoint-00000004', 'latest']);
  }, 240_000);

  it('resuming in a new process continues with exactly the losses of the uninterrupted run', async () => {
    const dir = tempDir();
    const args = ['train', '--steps', '4', '--save-every', '2', '--lr', '1e-2', '--output', dir, '--log-json', ...SHORT];
    const whole = await run(...args);
    expect(whole.code, whole.stderr).toBe(0);
    const want = events(whole.stdout).filter((e) => e.type === 'step').map((e) => e.loss);
    // Back to the checkpoint of step 2, as if the run had been killed after it; the pointer names one that is gone.
    rmSync(join(dir, 'checkpoints/checkpoint-00000004'), { recursive: true });
    // The command with another option is refused before anything loads, and every file stays as it was.
    const before = folderBytes(dir);
    const other = await run(...args.map((a) => (a === '1e-2' ? '2e-2' : a)));
    expect(other.code, other.stderr).toBe(2);
    expect(other.stderr).toMatch(/--output '\S+' holds another run \(latest checkpoint-00000002\) with --lr 2e-2 \(was 1e-2\): continue it with --resume, start over with --overwrite, or choose another --output/);
    expect(other.stdout).not.toMatch(/device:/);
    expect(folderBytes(dir)).toEqual(before);
    // The same command again continues the run (no --resume needed), the folder named by a path of another
    // spelling and the default model named by a relative path.
    const again = await run(...args.map((a) => (a === dir ? `${dir}/` : a)), '--model', 'public/models/tiny-llama-skills');
    expect(again.code, again.stderr).toBe(0);
    const e = events(again.stdout);
    expect(e.find((x) => x.type === 'plan').resumedFrom).toBe(2);
    expect(e.filter((x) => x.type === 'step').map((x) => x.loss)).toEqual(want.slice(2));
  }, 240_000);

  it('eval, generate and export read the run', async () => {
    const rows = join(tempDir(), 'rows.jsonl');
    writeFileSync(rows, readFileSync(fileURLToPath(new URL('../../public/datasets/next-letter.jsonl', import.meta.url)), 'utf8').split('\n').slice(0, 40).join('\n'));
    const ev = await run('eval', '--run', out, '--seq-len', '64', '--data', rows);
    expect(ev.code, ev.stderr).toBe(0);
    expect(ev.stdout).toMatch(/eval: {4}.* \(checkpoint-00000004, step 4\): loss \d+\.\d{4}, perplexity \d+\.\d{3}, token accuracy \d+\.\d\d% \(greedy next token\), both over the same \d+ tokens: completions, assistant turns and text rows with their end tokens \(--loss-on completion\)/);
    const base = await run('eval', '--seq-len', '64', '--data', rows);
    expect(base.stdout).toMatch(/eval: {4}the base model: loss/);
    // The same model with its config.json as transformers 5 re-saves it (rope_parameters, dtype): the same loss.
    const layout5 = tempDir();
    for (const f of readdirSync(shipped)) writeFileSync(join(layout5, f), readFileSync(join(shipped, f)));
    writeFileSync(join(layout5, 'config.json'), readFileSync(fileURLToPath(new URL('../fixtures/reference/tiny-llama-skills-transformers5/config.json', import.meta.url))));
    const base5 = await run('eval', '--model', layout5, '--seq-len', '64', '--data', rows);
    expect(base5.code, base5.stderr).toBe(0);
    expect(base5.stderr).not.toMatch(/warning:/);
    const loss = (stdout: string) => /the base model: (loss \S+, perplexity \S+, token accuracy \S+)/.exec(stdout)?.[1];
    expect(loss(base5.stdout)).toBe(loss(base.stdout));
    const gen = await run('generate', '--run', out, '--prompt', 'next:abc=', '--max-new-tokens', '4');
    expect(gen.code, gen.stderr).toBe(0);
    expect(gen.stdout).toMatch(/^next:abc=/);
    const chat = await run('generate', '--adapter', join(out, 'adapter'), '--prompt', 'next:abc', '--chat', '--max-new-tokens', '4');
    expect(chat.code, chat.stderr).toBe(0);
    expect(chat.stdout).toMatch(/PEFT adapter/);
    const exp = await run('export', '--run', out, '--format', 'merged', '--out', join(out, 'exported'));
    expect(exp.code, exp.stderr).toBe(0);
    // The merged folder is a model of its own: its logits are those of the run's fine-tuner.
    const gpu = await testGpu();
    const merged = await CausalLM.fromCheckpoint(gpu, await openCheckpoint(folderSource(join(out, 'exported/merged'))));
    const { ft } = await loadFineTunedRun(gpu, await openCheckpoint(folderSource(shipped)), folderCheckpointStore(join(out, 'checkpoints')));
    const batch = { ids: [...'next:hello=p'].map((c) => c.charCodeAt(0)) };
    expect(await merged.loss(batch)).toBeCloseTo(await ft.model.loss(batch), 5);
    merged.destroy();
    ft.destroy();
  }, 240_000);

  it('sparse: select-mask saves a Sylva mask that train uses, and the delta is exported; QLoRA trains on a 4-bit base', async () => {
    const dir = tempDir();
    const mask = join(dir, 'mask.safetensors');
    const sel = await run('select-mask', '--density', '0.05', '--seq-len', '64', '--calibration-tokens', '512', '--out', mask);
    expect(sel.code, sel.stderr).toBe(0);
    expect(sel.stdout).toMatch(/mask: {4}sylva, 5\.00% of 21 layers, 512 tokens/);
    expect(sel.stdout).toMatch(/mask: {4}(\d+)\/\1 layers scored \(last layers\.\d+\.\w+\)/);
    const sparse = await run('train', '--method', 'sparse', '--mask', mask, '--steps', '2', '--lr', '1e-2', '--output', join(dir, 'sparse'), ...SHORT);
    expect(sparse.code, sparse.stderr).toBe(0);
    expect(existsSync(join(dir, 'sparse/adapter/sparse_delta.safetensors'))).toBe(true);
    // Without --mask, the default selection (Sylva) runs on the first training rows before training.
    const selected = await run('train', '--method', 'sparse', '--density', '0.02', '--calibration-tokens', '512', '--steps', '2', '--lr', '1e-2', '--output', join(dir, 'selected'), ...SHORT);
    expect(selected.code, selected.stderr).toBe(0);
    expect(selected.stdout).toMatch(/mask: {4}sylva selection, 2\.00% of 21 layers in \d+\.\d s on 512 training tokens/);
    expect(selected.stdout).toMatch(/mask: {4}(\d+)\/\1 layers scored/);
    const qlora = await run('train', '--quantize', 'nf4', '--steps', '2', '--lr', '1e-2', '--output', join(dir, 'qlora'), ...SHORT);
    expect(qlora.code, qlora.stderr).toBe(0);
    expect(qlora.stdout).toMatch(/base nf4, 0\.\d\d MiB of linear weights/);
  }, 240_000);

  it('a method registered by a plugin is in --help, trains, and its flags are refused for other methods', async () => {
    const toy = [fileURLToPath(new URL('../fixtures/toy-method.ts', import.meta.url))];
    const help = await runWith(toy, 'train', '--help');
    expect(help.code, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/--method full\|lora\|sparse\|sparse\+lora\|zo\|lisa\|galore\|norms/);
    expect(help.stdout).toMatch(/--from-layer N +the first layer whose norms train \[norms\] \(default 0\)/);
    expect(help.stdout).toMatch(/--lr X +peak learning rate \(default the method's: full 0\.00002, lora 0\.0002, sparse 0\.0002, sparse\+lora 0\.0002, zo 0\.0001 \(by its options\), lisa 0\.00002, galore 0\.00002, norms 0\.001\)/);
    const dir = tempDir();
    const trained = await runWith(toy, 'train', '--method', 'norms', '--from-layer', '1', '--steps', '2', '--output', dir, ...SHORT);
    expect(trained.code, trained.stderr).toBe(0);
    expect(trained.stdout).toMatch(/method: {2}norms \(only the normalization weights train \(LayerNorm tuning\)\): \d+ parameters train/);
    expect(trained.stdout).toMatch(/saved: {3}\S+merged \(a Hugging Face model folder/); // no adapter format: the merged model
    expect(existsSync(join(dir, 'merged/config.json'))).toBe(true);
    const wrong = await runWith(toy, 'train', '--from-layer', '1', '--output', tempDir());
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toMatch(/--from-layer applies to --method norms, not 'lora'/);
  }, 240_000);

  it('a process killed with SIGKILL at any moment leaves a latest checkpoint that loads', async () => {
    const gpu = await testGpu();
    const base = await openCheckpoint(folderSource(shipped));
    for (const delay of [0, 40, 120]) {
      const dir = tempDir();
      // Full fine-tuning: every weight and both moments in each checkpoint, so saves take a while.
      const child = spawn(process.execPath, [bundled, 'train', '--method', 'full', '--steps', '40', '--save-every', '1', '--keep', '2', '--output', dir, '--log-json', ...SHORT]);
      let saved = 0;
      await new Promise<void>((resolve) => {
        child.stdout.on('data', (chunk: Buffer) => {
          for (const line of chunk.toString().split('\n')) {
            if (line.includes('"type":"checkpoint"') && ++saved === 2) setTimeout(() => child.kill('SIGKILL'), delay);
          }
        });
        child.on('exit', () => resolve());
      });
      const store = folderCheckpointStore(join(dir, 'checkpoints'));
      const latest = await latestCheckpoint(store);
      expect(latest, `killed ${delay} ms after the second checkpoint`).not.toBeNull();
      const { ft, step } = await loadFineTunedRun(gpu, base, store);
      expect(step).toBeGreaterThanOrEqual(2);
      ft.destroy();
    }
  }, 240_000);
});
