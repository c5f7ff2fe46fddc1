/**
 * `npm run bench:cpu`: what WebGPU on a CPU (SwiftShader, through Dawn) costs against PyTorch on the
 * same CPU, side by side in one run: the browser benchmark's LoRA run (r8 on every linear layer of the
 * shipped base, 8 x 64 tokens a step) in the engine, then in PyTorch + PEFT (bench/pytorch_cpu.py, run
 * with the reference environment's Python: `npm run test:reference` makes it). Writes bench/results/cpu.json.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { FineTuneSession, requestDevice } from '../src/node.js';
import { fileUrlPath, shippedDatasetUrl, shippedModelUrl } from '../src/model/shipped.js';
import { benchSpec, BROWSER_BENCH_STEPS, timeRun, type RunFigures } from './browser.js';
import { writeResult } from './runner.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const python = process.env.REFERENCE_PYTHON ?? `${root}.venv-reference/t5/bin/python`;
if (!existsSync(python)) throw new Error(`no Python with torch and peft at ${python}: run npm run test:reference once, or set REFERENCE_PYTHON`);

const gpu = await requestDevice({ powerPreference: 'high-performance' });
const dataset = { name: 'next-letter.jsonl', bytes: new Uint8Array(readFileSync(fileUrlPath(shippedDatasetUrl()))) };
const session = await FineTuneSession.open(benchSpec(fileUrlPath(shippedModelUrl()), dataset), { gpu });
const { losses: _, ...engine } = await timeRun(`engine, ${gpu.describe()}`, session);
session.destroy();
gpu.destroy();
const torch = JSON.parse(execFileSync(python, [`${root}bench/pytorch_cpu.py`, root, String(BROWSER_BENCH_STEPS)], { encoding: 'utf8' }).trim().split('\n').at(-1)!) as Omit<RunFigures, 'losses'>;
const rows = [engine, torch];
const lines = [`LoRA r8 all-linear on tiny-llama-skills, ${BROWSER_BENCH_STEPS} steps of 8 x 64 tokens, on this machine's CPU`, ''];
for (const r of rows) lines.push(`${r.where.padEnd(60)} ${r.step_ms.toFixed(1).padStart(9)} ms/step ${r.tokens_per_s.toFixed(0).padStart(7)} tokens/s`);
const ratio = torch.tokens_per_s / engine.tokens_per_s;
lines.push('', `pytorch_cpu_vs_swiftshader_throughput: ${ratio.toFixed(1)}`);
console.log(lines.join('\n'));
writeResult('cpu.json', { rows, ratios: { pytorch_cpu_vs_swiftshader_throughput: ratio } });
