/**
 * The memory-frugal methods alone, side by side in one run (Node, Dawn): on each model of the training
 * benchmark's preset, inference, full fine-tuning, LoRA, zeroth-order on LoRA and on the full model,
 * LISA (2 layers) and GaLore (r = hidden / 8), with the same rows and ratios as bench:train computes
 * among all methods, in a fraction of its time. Writes bench/results/frugal-node.json.
 */
import { GALORE_DEFAULTS } from '../src/methods/galore/config.js';
import { memorySource } from '../src/io/sources.js';
import { openCheckpoint } from '../src/model/checkpoint.js';
import { tinyModelFiles } from '../src/model/tiny.js';
import { requestDevice } from '../src/node.js';
import type { FineTuneOptions } from '../src/train/finetuner.js';
import { BENCH_OPTIONS, measureInference, measureStep, trainBenchModels, trainPreset, type TrainRow } from './train.js';
import { writeResult } from './runner.js';

const gpu = await requestDevice({ powerPreference: 'high-performance' });
const preset = trainPreset(gpu, process.argv.includes('--hardware') ? 'hardware' : process.argv.includes('--software') ? 'software' : undefined);
const steps = preset === 'software' ? 2 : 10;
const rows: TrainRow[] = [];
const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
for (const m of trainBenchModels(preset)) {
  const ckpt = await openCheckpoint(memorySource(tinyModelFiles(m.options)));
  const variants: [string, FineTuneOptions][] = [
    ['full', { method: 'full', optimizer: { lr: 1e-4 } }],
    ['lora', { method: 'lora', ...BENCH_OPTIONS.lora, optimizer: { lr: 1e-4 } }],
    ['zo', { method: 'zo', ...BENCH_OPTIONS.zo, optimizer: { lr: 1e-4 } }],
    ['zo-full', { method: 'zo', zo: { target: 'full' }, optimizer: { lr: 1e-6 } }],
    ['lisa', { method: 'lisa', ...BENCH_OPTIONS.lisa, optimizer: { lr: 1e-4 } }],
    ['galore', { method: 'galore', galore: { rank: ckpt.config.hiddenSize / 8 }, optimizer: { lr: 1e-4 } }],
  ];
  const inference = await measureInference(gpu, ckpt, m, steps);
  rows.push(inference);
  console.error(`  ${m.name} inference: ${inference.step_ms.toFixed(0)} ms/forward, peak ${mib(inference.peak_gpu_bytes)}`);
  for (const [method, opts] of variants) {
    const row = await measureStep(gpu, ckpt, m, method, opts, steps, 1);
    rows.push(row);
    console.error(`  ${m.name} ${method}: ${row.step_ms.toFixed(0)} ms/step, peak ${mib(row.peak_gpu_bytes)}, optimizer state ${mib(row.optimizer_state_bytes)}${row.refresh_step_ms ? `, refresh step ${row.refresh_step_ms.toFixed(0)} ms` : ''}`);
  }
}
const ratios: Record<string, number> = {};
for (const m of trainBenchModels(preset)) {
  const row = (method: string) => rows.find((r) => r.model === m.name && r.method === method)!;
  const step = (method: string) => row(method).step_ms;
  const gap = GALORE_DEFAULTS.updateGap;
  Object.assign(ratios, {
    [`${m.name}: zo_lora_peak_vs_inference_peak`]: row('zo').peak_gpu_bytes / row('inference').peak_gpu_bytes,
    [`${m.name}: zo_full_peak_vs_inference_peak`]: row('zo-full').peak_gpu_bytes / row('inference').peak_gpu_bytes,
    // Against two forward passes of the same model (its adapter included), timed alone.
    [`${m.name}: zo_step_vs_two_forwards`]: step('zo') / (2 * row('zo').forward_ms),
    [`${m.name}: zo_full_step_vs_two_forwards`]: step('zo-full') / (2 * row('zo-full').forward_ms),
    [`${m.name}: galore_optimizer_bytes_vs_adamw`]: row('galore').optimizer_state_bytes / row('full').optimizer_state_bytes,
    [`${m.name}: galore_step_vs_full_step`]: step('galore') / step('full'),
    [`${m.name}: galore_step_amortized_vs_full_step`]: (step('galore') * (gap - 1) + row('galore').refresh_step_ms!) / gap / step('full'),
    [`${m.name}: lisa_peak_vs_full_peak`]: row('lisa').peak_gpu_bytes / row('full').peak_gpu_bytes,
    [`${m.name}: lisa_peak_vs_lora_peak`]: row('lisa').peak_gpu_bytes / row('lora').peak_gpu_bytes,
    [`${m.name}: lisa_step_vs_full_step`]: step('lisa') / step('full'),
  });
}
const result = { device: gpu.describe(), preset, rows, ratios };
console.log(`device: ${result.device}\n`);
console.log(`${'model'.padEnd(16)} ${'method'.padEnd(10)} ${'step ms'.padStart(10)} ${'peak MiB'.padStart(10)} ${'opt. state MiB'.padStart(15)}`);
for (const r of rows) console.log(`${r.model.padEnd(16)} ${r.method.padEnd(10)} ${r.step_ms.toFixed(1).padStart(10)} ${(r.peak_gpu_bytes / 2 ** 20).toFixed(1).padStart(10)} ${(r.optimizer_state_bytes / 2 ** 20).toFixed(2).padStart(15)}`);
console.log('\nratios:');
for (const [k, v] of Object.entries(ratios)) console.log(`  ${k.padEnd(52)} ${v.toFixed(3)}`);
writeResult('frugal-node.json', result);
gpu.destroy();
process.exit(0);
