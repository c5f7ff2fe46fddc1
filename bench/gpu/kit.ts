/**
 * The GPU kit's entry point, bundled by bench/gpu/pack.ts into one script (with the test files and the
 * vitest shim) that runs with a bare Node binary and dawn.node beside it; bench/gpu/run.sh calls it.
 *
 *   node kit.mjs tests      [--out DIR] [--filter REGEX]   the test files of kit-tests.ts (kernels, gradients, methods...)
 *   node kit.mjs bench      [--out DIR] [--preset software|hardware]   the kernel and training benchmarks
 *   node kit.mjs reference  [--out DIR] [--preset ...]   the benchmark's models, one batch each and the
 *                           engine's loss on it, for bench/gpu/torch_reference.py
 *   node kit.mjs summary    [--out DIR]   summary.md from the JSON the others wrote
 *
 * Every command writes JSON into --out (default bench/results/gpu) and exits non-zero when something failed.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { requestDevice } from '../../src/node.js';
import { memorySource } from '../../src/io/sources.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tinyModelFiles } from '../../src/model/tiny.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { rng } from '../../src/util/random.js';
import { formatKernelBench, runKernelBench, type KernelBenchResult } from '../kernels.js';
import { formatTrainBench, runTrainBench, trainBenchModels, trainPreset, type TrainBenchResult, type TrainPreset } from '../train.js';
import { formatMethodSet, runMethodSet, type MethodSetResult } from '../method-sets.js';
import { loadTestFile, runTests, type TestReport } from './test-runner.js';
import testModules from 'kit:tests';

const command = process.argv[2];
const { values } = parseArgs({
  args: process.argv.slice(3),
  options: { out: { type: 'string', default: 'bench/results/gpu' }, filter: { type: 'string' }, preset: { type: 'string' }, 'timeout-s': { type: 'string', default: '600' } },
  strict: true,
});
const out = values.out!;
mkdirSync(out, { recursive: true });
const save = (file: string, data: unknown) => writeFileSync(join(out, file), JSON.stringify(data, null, 1) + '\n');
if (values.preset !== undefined && values.preset !== 'software' && values.preset !== 'hardware') throw new Error(`--preset must be software or hardware, got '${values.preset}'`);
const presetFlag = values.preset as TrainPreset | undefined;

async function tests(): Promise<boolean> {
  for (const [file, load] of testModules) await loadTestFile(file, load);
  const t0 = performance.now();
  const reports = await runTests({
    timeoutMs: Number(values['timeout-s']) * 1000,
    filter: values.filter ? new RegExp(values.filter) : undefined,
    onReport: (r: TestReport) => {
      if (r.status !== 'passed') console.log(`${r.status.toUpperCase()} ${r.name}${r.error ? `\n  ${r.error.split('\n').slice(0, 6).join('\n  ')}` : ''}`);
    },
  });
  const count = (s: TestReport['status']) => reports.filter((r) => r.status === s).length;
  const summary = { passed: count('passed'), failed: count('failed'), skipped: count('skipped'), seconds: (performance.now() - t0) / 1000 };
  console.log(`tests: ${summary.passed} passed, ${summary.failed} failed, ${summary.skipped} skipped in ${summary.seconds.toFixed(0)} s`);
  save('tests.json', { ...summary, reports });
  return summary.failed === 0 && summary.passed > 0;
}

async function bench(): Promise<boolean> {
  const gpu = await requestDevice({ powerPreference: 'high-performance' });
  const log = (l: string) => console.error(`  ${l}`);
  console.log(`device: ${gpu.describe()}`);
  const preset = trainPreset(gpu, presetFlag);
  const kernels = await runKernelBench(gpu, { preset, log });
  console.log(formatKernelBench(kernels));
  save('kernels-node.json', kernels);
  const train = await runTrainBench(gpu, { preset, log });
  console.log(formatTrainBench(train));
  save('train-node.json', train);
  // Mixed precision against f32, where the device can run it.
  if (gpu.features.shaderF16) {
    const precision = await runMethodSet(gpu, 'precision', preset, log);
    console.log(formatMethodSet(precision));
    save('precision-node.json', precision);
  }
  gpu.destroy();
  return true;
}

/** The benchmark's models written as Hugging Face folders, with a batch and the engine's loss on it. */
async function reference(): Promise<boolean> {
  const gpu = await requestDevice({ powerPreference: 'high-performance' });
  const preset = trainPreset(gpu, presetFlag);
  const models = [];
  for (const m of trainBenchModels(preset)) {
    const files = tinyModelFiles(m.options);
    const dir = join(out, 'models', m.name);
    mkdirSync(dir, { recursive: true });
    for (const [file, content] of Object.entries(files)) writeFileSync(join(dir, file), content);
    const rand = rng(1);
    const ids = Array.from({ length: m.B * m.S }, () => Math.floor(rand() * 256));
    const model = await CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource(files)));
    const loss = await model.loss({ ids, B: m.B, S: m.S });
    model.destroy();
    models.push({ name: m.name, folder: `models/${m.name}`, B: m.B, S: m.S, ids, engineLoss: loss });
    console.log(`${m.name}: ${m.B}x${m.S}, engine loss ${loss.toFixed(6)}`);
  }
  save('reference-inputs.json', { device: gpu.describe(), preset, models });
  gpu.destroy();
  return true;
}

/** summary.md from what the other commands (and torch_reference.py) wrote into --out. */
async function summary(): Promise<boolean> {
  const read = <T>(file: string): T | null => (existsSync(join(out, file)) ? (JSON.parse(readFileSync(join(out, file), 'utf8')) as T) : null);
  const t = read<{ passed: number; failed: number; skipped: number; seconds: number; reports: TestReport[] }>('tests.json');
  const train = read<TrainBenchResult>('train-node.json');
  const kernels = read<KernelBenchResult>('kernels-node.json');
  const torch = read<TorchReference>('torch.json');
  const lines = [`# GPU kit: ${train?.device ?? 'no benchmark ran'}`, ''];
  if (t) {
    lines.push(`Tests: ${t.passed} passed, ${t.failed} failed, ${t.skipped} skipped in ${t.seconds.toFixed(0)} s.`, '');
    for (const r of t.reports.filter((x) => x.status === 'failed')) lines.push(`- FAILED ${r.name}: ${r.error?.split('\n')[0]}`);
  }
  if (kernels) {
    // The kernel choices this GPU got and why (subgroup reductions, f16 loads, ...), then every kernel row.
    lines.push('', '## Kernels', '', ...Object.entries(kernels.tuning).map(([k, v]) => `- ${k} ${v}: ${kernels.tuningReasons[k as keyof typeof kernels.tuning]}`));
    lines.push('', '```', formatKernelBench(kernels), '```');
  }
  if (train) lines.push('', '```', formatTrainBench(train), '```');
  const precision = read<MethodSetResult>('precision-node.json');
  if (precision) lines.push('', '## Mixed precision against f32', '', '```', formatMethodSet(precision), '```');
  if (torch) {
    lines.push('', `## Against PyTorch ${torch.torch} on ${torch.device} (${torch.steps_timed} timed steps)`, '');
    lines.push('| model | batch | engine loss | PyTorch loss | relative difference | transformers loss |', '| --- | --- | --- | --- | --- | --- |');
    for (const m of torch.models) lines.push(`| ${m.name} | ${m.batch} | ${m.engine_loss.toFixed(6)} | ${m.torch_loss.toFixed(6)} | ${m.loss_rel_diff.toExponential(2)} | ${m.transformers_loss?.toFixed(6) ?? 'not installed'} |`);
    lines.push('', '| model | method | engine ms/step | PyTorch fp32 | PyTorch bf16 | engine / PyTorch fp32 |', '| --- | --- | --- | --- | --- | --- |');
    for (const m of torch.models) {
      for (const method of ['full', 'lora']) {
        const engine = train?.rows.find((r) => r.model === m.name && r.method === method && r.batch === m.batch);
        const fp32 = m.steps.find((s) => s.method === method && s.precision === 'fp32')!;
        const bf16 = m.steps.find((s) => s.method === method && s.precision === 'bf16')!;
        const ratio = engine ? (engine.step_ms / fp32.step_ms).toFixed(2) : 'n/a';
        lines.push(`| ${m.name} | ${method} | ${engine?.step_ms.toFixed(1) ?? 'n/a'} | ${fp32.step_ms.toFixed(1)} | ${bf16.step_ms.toFixed(1)} | ${ratio} |`);
      }
    }
  }
  writeFileSync(join(out, 'summary.md'), lines.join('\n') + '\n');
  console.log(lines.join('\n'));
  return true;
}

/** What torch_reference.py writes. */
interface TorchReference {
  torch: string;
  device: string;
  steps_timed: number;
  models: { name: string; batch: string; engine_loss: number; torch_loss: number; loss_rel_diff: number; transformers_loss: number | null; steps: { method: string; precision: string; step_ms: number }[] }[];
}

const commands: Record<string, () => Promise<boolean>> = { tests, bench, reference, summary };
if (!commands[command]) {
  console.error(`usage: node kit.mjs ${Object.keys(commands).join('|')} [--out DIR] [--filter REGEX] [--preset software|hardware]`);
  process.exit(2);
}
const ok = await commands[command]();
process.exit(ok ? 0 : 1);
