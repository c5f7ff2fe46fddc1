/**
 * QLoRA against LoRA in one run (Node: bench/qlora-node.ts; Chromium: bench/qlora-chromium.ts): the same
 * LoRA step (rank 16 on every linear layer) on the large benchmark model over an f32 base, a bf16 base,
 * and 4-bit bases (NF4, NF4 with double-quantized absmax, int4 with groups of 64): step time, tokens/s,
 * linear-weight bytes and peak GPU memory; and loading that model 4-bit, quantized as it loads against
 * from the 4-bit checkpoint it saved and from the same codes in bitsandbytes' format. The full training
 * benchmark (bench/train.ts) has the same rows among all the others; this one is short enough to run in
 * a browser tab on a CPU device.
 */
import { memorySource, openCheckpoint, tinyModelFiles, type FineTuneOptions, type Gpu } from '../src/index.js';
import { BENCH_OPTIONS, benchQuantizedLoad, measureStep, trainBenchModels, trainPreset, type QuantizedLoadRow, type TrainRow } from './train.js';

export interface QloraBenchResult {
  runtime: 'node' | 'chromium';
  device: string;
  rows: TrainRow[];
  quantized_load: QuantizedLoadRow;
  ratios: Record<string, number>;
  date: string;
}

export async function runQloraBench(gpu: Gpu, o: { log?: (line: string) => void } = {}): Promise<QloraBenchResult> {
  const log = o.log ?? (() => undefined);
  const preset = trainPreset(gpu);
  const models = trainBenchModels(preset);
  const m = models[models.length - 1];
  const ckpt = await openCheckpoint(memorySource(tinyModelFiles(m.options)));
  const lora = { method: 'lora' as const, ...BENCH_OPTIONS.lora, optimizer: { lr: 1e-4 } };
  const variants: [string, FineTuneOptions][] = [
    ['lora', lora],
    ['lora-bf16-base', { ...lora, baseDtype: 'bf16' }],
    ['qlora-nf4', { ...lora, quantize: 'nf4' }],
    ['qlora-nf4-dq', { ...lora, quantize: { format: 'nf4', doubleQuant: true } }],
    ['qlora-int4', { ...lora, quantize: 'int4' }],
  ];
  const rows: TrainRow[] = [];
  for (const [name, opts] of variants) {
    const row = await measureStep(gpu, ckpt, m, name, opts, preset === 'software' ? 2 : 10, NaN);
    rows.push(row);
    log(`${m.name} ${name}: ${row.step_ms.toFixed(0)} ms/step, ${row.tokens_per_s.toFixed(0)} tokens/s, linear weights ${(row.linear_weight_bytes / 2 ** 20).toFixed(2)} MiB, peak ${(row.peak_gpu_bytes / 2 ** 20).toFixed(1)} MiB`);
  }
  const load = await benchQuantizedLoad(gpu, m);
  log(`loading ${m.name} nf4: quantized as it loads ${load.quantize_at_load_ms.toFixed(0)} ms, from its 4-bit checkpoint ${load.prequantized_ms.toFixed(0)} ms, from bitsandbytes' ${load.bitsandbytes_ms.toFixed(0)} ms`);
  const row = (name: string) => rows.find((r) => r.method === name)!;
  const step = (name: string) => row(name).step_ms / row('lora').step_ms;
  const bytes = (name: string) => row(name).linear_weight_bytes / row('lora').linear_weight_bytes;
  return {
    runtime: gpu.runtime === 'node' ? 'node' : 'chromium',
    device: gpu.describe(),
    rows,
    quantized_load: load,
    ratios: {
      qlora_vs_lora_step: step('qlora-nf4'),
      qlora_dq_vs_lora_step: step('qlora-nf4-dq'),
      qlora_int4_vs_lora_step: step('qlora-int4'),
      lora_bf16_base_vs_f32_step: step('lora-bf16-base'),
      qlora_base_bytes_vs_f32: bytes('qlora-nf4'),
      qlora_dq_base_bytes_vs_f32: bytes('qlora-nf4-dq'),
      qlora_int4_base_bytes_vs_f32: bytes('qlora-int4'),
      bf16_base_bytes_vs_f32: bytes('lora-bf16-base'),
      qlora_vs_lora_peak_memory: row('qlora-nf4').peak_gpu_bytes / row('lora').peak_gpu_bytes,
      prequantized_vs_quantize_load: load.quantize_at_load_ms / load.prequantized_ms,
      bitsandbytes_vs_quantize_load: load.quantize_at_load_ms / load.bitsandbytes_ms,
    },
    date: new Date().toISOString(),
  };
}

export function formatQloraBench(r: QloraBenchResult): string {
  const lines = [`device: ${r.device} (${r.runtime})`, ''];
  lines.push(`${'model'.padEnd(16)} ${'variant'.padEnd(15)} ${'batch'.padEnd(7)} ${'step ms'.padStart(9)} ${'tokens/s'.padStart(9)} ${'weights MiB'.padStart(12)} ${'peak MiB'.padStart(9)}`);
  for (const x of r.rows) {
    lines.push(`${x.model.padEnd(16)} ${x.method.padEnd(15)} ${x.batch.padEnd(7)} ${x.step_ms.toFixed(0).padStart(9)} ${x.tokens_per_s.toFixed(0).padStart(9)} ${(x.linear_weight_bytes / 2 ** 20).toFixed(2).padStart(12)} ${(x.peak_gpu_bytes / 2 ** 20).toFixed(1).padStart(9)}`);
  }
  const l = r.quantized_load;
  lines.push('', `load ${l.model} nf4: quantize at load ${l.quantize_at_load_ms.toFixed(0)} ms, pre-quantized ${l.prequantized_ms.toFixed(0)} ms, bitsandbytes' checkpoint ${l.bitsandbytes_ms.toFixed(0)} ms`);
  lines.push('', 'ratios:', ...Object.entries(r.ratios).map(([k, v]) => `  ${k}: ${v.toFixed(3)}`));
  return lines.join('\n');
}
