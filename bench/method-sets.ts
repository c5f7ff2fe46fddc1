/**
 * A set of methods alone, side by side in one run, on each model of the training benchmark's preset, with
 * the same rows and ratios as bench:train computes among all methods, in a fraction of its time.
 * `frugal`: inference, full fine-tuning, LoRA, zeroth-order on LoRA and on the full model, LISA (2 layers)
 * and GaLore (r = hidden / 8). `adapters`: LoRA and DoRA on the f32 base and on the NF4 base (QLoRA,
 * QDoRA). `precision` (needs shader-f16): full fine-tuning and LoRA in f32 and in mixed precision.
 * bench/method-sets-node.ts runs one from the command line; the GPU kit runs `precision`.
 */
import { memorySource } from '../src/io/sources.js';
import { openCheckpoint } from '../src/model/checkpoint.js';
import { tinyModelFiles } from '../src/model/tiny.js';
import type { Gpu } from '../src/gpu/gpu.js';
import type { FineTuneOptions } from '../src/train/finetuner.js';
import { adapterRatios, BENCH_OPTIONS, frugalRatios, measureInference, measureStep, trainBenchModels, type BenchModel, type RowOf, type TrainPreset, type TrainRow } from './train.js';
import { Activations } from '../src/model/activations.js';
import type { ModelConfig } from '../src/model/config.js';

interface MethodSet {
  variants(hiddenSize: number): [string, FineTuneOptions][];
  ratios(row: RowOf, m: BenchModel, config: ModelConfig): Record<string, number>;
}

export const METHOD_SETS: Record<string, MethodSet> = {
  precision: {
    variants: () => [
      ['full', { method: 'full', optimizer: { lr: 1e-4 } }],
      ['full-mixed', { method: 'full', precision: 'mixed', optimizer: { lr: 1e-4 } }],
      ['lora', { method: 'lora', ...BENCH_OPTIONS.lora, optimizer: { lr: 1e-4 } }],
      ['lora-mixed', { method: 'lora', ...BENCH_OPTIONS.lora, precision: 'mixed', optimizer: { lr: 1e-4 } }],
    ],
    ratios: (row, m, config) => ({
      full_mixed_vs_f32_step: row('full-mixed').step_ms / row('full').step_ms,
      lora_mixed_vs_f32_step: row('lora-mixed').step_ms / row('lora').step_ms,
      full_mixed_vs_f32_peak_memory: row('full-mixed').peak_gpu_bytes / row('full').peak_gpu_bytes,
      lora_mixed_vs_f32_peak_memory: row('lora-mixed').peak_gpu_bytes / row('lora').peak_gpu_bytes,
      // The training arena of the benchmark's batch, planned: what f16 linear inputs save.
      mixed_vs_f32_training_activations: Activations.bytesFor(config, m.B, m.S, 'train', true) / Activations.bytesFor(config, m.B, m.S, 'train'),
    }),
  },
  frugal: {
    variants: (hiddenSize) => [
      ['full', { method: 'full', optimizer: { lr: 1e-4 } }],
      ['lora', { method: 'lora', ...BENCH_OPTIONS.lora, optimizer: { lr: 1e-4 } }],
      ['zo', { method: 'zo', ...BENCH_OPTIONS.zo, optimizer: { lr: 1e-4 } }],
      ['zo-full', { method: 'zo', zo: { target: 'full' }, optimizer: { lr: 1e-6 } }],
      ['lisa', { method: 'lisa', ...BENCH_OPTIONS.lisa, optimizer: { lr: 1e-4 } }],
      ['galore', { method: 'galore', galore: { rank: hiddenSize / 8 }, optimizer: { lr: 1e-4 } }],
    ],
    ratios: frugalRatios,
  },
  adapters: {
    variants: () => {
      const lora = BENCH_OPTIONS.lora!.lora;
      return [
        ['lora', { method: 'lora', lora, optimizer: { lr: 1e-4 } }],
        ['dora', { method: 'lora', lora: { ...lora, dora: true }, optimizer: { lr: 1e-4 } }],
        ['qlora-nf4', { method: 'lora', lora, quantize: 'nf4', optimizer: { lr: 1e-4 } }],
        ['qdora-nf4', { method: 'lora', lora: { ...lora, dora: true }, quantize: 'nf4', optimizer: { lr: 1e-4 } }],
      ];
    },
    ratios: adapterRatios,
  },
};

export interface MethodSetResult {
  device: string;
  preset: TrainPreset;
  rows: TrainRow[];
  ratios: Record<string, number>;
}

/** Runs set `name` on each model of `preset`, `steps` timed steps per configuration. */
export async function runMethodSet(gpu: Gpu, name: string, preset: TrainPreset, log: (line: string) => void = () => {}): Promise<MethodSetResult> {
  const set = METHOD_SETS[name];
  if (!set) throw new Error(`unknown method set '${name}' (${Object.keys(METHOD_SETS).join(', ')})`);
  const steps = preset === 'software' ? 2 : 10;
  const rows: TrainRow[] = [];
  const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
  const ratios: Record<string, number> = {};
  for (const m of trainBenchModels(preset)) {
    const ckpt = await openCheckpoint(memorySource(tinyModelFiles(m.options)));
    const inference = await measureInference(gpu, ckpt, m, steps);
    rows.push(inference);
    log(`${m.name} inference: ${inference.step_ms.toFixed(0)} ms/forward, peak ${mib(inference.peak_gpu_bytes)}`);
    for (const [method, opts] of set.variants(ckpt.config.hiddenSize)) {
      const row = await measureStep(gpu, ckpt, m, method, opts, steps, 1);
      rows.push(row);
      log(`${m.name} ${method}: ${row.step_ms.toFixed(0)} ms/step, peak ${mib(row.peak_gpu_bytes)}, optimizer state ${mib(row.optimizer_state_bytes)}${row.refresh_step_ms ? `, refresh step ${row.refresh_step_ms.toFixed(0)} ms` : ''}`);
    }
    const of = set.ratios((method) => rows.find((r) => r.model === m.name && r.method === method)!, m, ckpt.config);
    for (const [k, v] of Object.entries(of)) ratios[`${m.name}: ${k}`] = v;
  }
  return { device: gpu.describe(), preset, rows, ratios };
}

/** The result as a table of rows and a list of ratios. */
export function formatMethodSet(r: MethodSetResult): string {
  const lines = [`${'model'.padEnd(16)} ${'method'.padEnd(10)} ${'step ms'.padStart(10)} ${'peak MiB'.padStart(10)} ${'opt. state MiB'.padStart(15)}`];
  for (const row of r.rows) lines.push(`${row.model.padEnd(16)} ${row.method.padEnd(10)} ${row.step_ms.toFixed(1).padStart(10)} ${(row.peak_gpu_bytes / 2 ** 20).toFixed(1).padStart(10)} ${(row.optimizer_state_bytes / 2 ** 20).toFixed(2).padStart(15)}`);
  lines.push('', 'ratios:');
  for (const [k, v] of Object.entries(r.ratios)) lines.push(`  ${k.padEnd(52)} ${v.toFixed(3)}`);
  return lines.join('\n');
}
