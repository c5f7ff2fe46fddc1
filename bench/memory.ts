/**
 * Peak GPU memory of one training step at a realistic scale, because memory is what limits a browser
 * tab: a model with Qwen2.5-0.5B's exact configuration (random bf16 weights made here; nothing is
 * downloaded), LoRA rank 16 on every linear layer, batch 1 x sequence 512. QLoRA on an NF4 base against
 * LoRA on the bf16 base, each keeping every activation and with gradient checkpointing (each layer
 * recomputed in the backward pass from its input), each with where its bytes go: weights, adapters with their gradients and
 * optimizer state, activations kept for the backward pass, backward scratch, and the rest of the peak
 * (transient buffers of the step).
 */
import { Activations } from '../src/model/activations.js';
import { openCheckpoint } from '../src/model/checkpoint.js';
import { parseConfig } from '../src/model/config.js';
import { randomWeightsFile } from '../src/model/tiny.js';
import { memorySource } from '../src/io/sources.js';
import type { Gpu } from '../src/gpu/gpu.js';
import { FineTuner } from '../src/train/finetuner.js';
import { rng } from '../src/util/random.js';

/** Qwen2.5-0.5B's config.json, as published. */
export const QWEN25_05B_CONFIG = {
  architectures: ['Qwen2ForCausalLM'],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151643,
  hidden_act: 'silu',
  hidden_size: 896,
  initializer_range: 0.02,
  intermediate_size: 4864,
  max_position_embeddings: 32768,
  max_window_layers: 24,
  model_type: 'qwen2',
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

export interface MemoryRow {
  variant: 'qlora-nf4' | 'lora-bf16' | 'qlora-nf4-checkpointed' | 'lora-bf16-checkpointed' | 'zo-qlora-nf4';
  peak_bytes: number;
  weights_bytes: number;
  /** LoRA matrices, their gradients and AdamW's two moments (zeroth-order: the matrices and their unused gradient arena). */
  adapters_and_optimizer_bytes: number;
  /** The forward activations the backward pass reads. */
  activations_bytes: number;
  /** Gradient buffers of the backward pass, reused by every layer. */
  backward_scratch_bytes: number;
  /** The rest of the peak: transient buffers of the step (LoRA intermediates, reductions, pools). */
  other_bytes: number;
  step_s: number;
  loss: number;
}

export interface MemoryBenchResult {
  device: string;
  model: string;
  batch: string;
  lora: string;
  rows: MemoryRow[];
  ratios: Record<string, number>;
}

export const MEMORY_VARIANTS: MemoryRow['variant'][] = ['qlora-nf4', 'lora-bf16', 'qlora-nf4-checkpointed', 'lora-bf16-checkpointed', 'zo-qlora-nf4'];
const B = 1;
const S = 512;

/**
 * Measure `variants` (all by default). Rows of `earlier` (a previous result's) for variants not measured now are kept,
 * so the slow variants can be measured one process at a time into one table.
 */
export async function runMemoryBench(
  gpu: Gpu,
  o: { log?: (line: string) => void; variants?: MemoryRow['variant'][]; earlier?: MemoryRow[] } = {},
): Promise<MemoryBenchResult> {
  const log = o.log ?? (() => undefined);
  const config = parseConfig(JSON.stringify(QWEN25_05B_CONFIG));
  log('making random bf16 weights for Qwen2.5-0.5B\'s configuration');
  const files = { 'config.json': JSON.stringify(QWEN25_05B_CONFIG), 'model.safetensors': randomWeightsFile(config, { seed: 5, dtype: 'BF16' }) };
  const rand = rng(9);
  const ids = Array.from({ length: B * S }, () => Math.floor(rand() * config.vocabSize));
  // Backward scratch: what a training arena adds to an inference one; the rest of an arena is kept activations.
  const scratch = Activations.scratchBytes(config, B, S, gpu.tuning.attentionVariant);
  const measure = o.variants ?? MEMORY_VARIANTS;
  const rows: MemoryRow[] = (o.earlier ?? []).filter((r) => !measure.includes(r.variant));
  for (const variant of measure) {
    const before = gpu.memoryStats().currentBytes;
    // Zeroth-order: the same adapter over the NF4 base trained from two forward passes (inference's activations).
    const zo = variant.startsWith('zo-');
    const lora = { rank: 16, targetModules: ['all-linear'] };
    const ft = await FineTuner.create(gpu, await openCheckpoint(memorySource(files)), {
      ...(zo ? { method: 'zo' as const, zo: { target: 'lora' as const, lora } } : { method: 'lora' as const, lora }),
      optimizer: { lr: 1e-4 },
      ...(variant.includes('qlora-nf4') ? { quantize: 'nf4' as const } : {}),
      gradientCheckpointing: variant.endsWith('-checkpointed'),
    });
    const arena = Activations.bytesFor(config, B, S, zo ? 'inference' : variant.endsWith('-checkpointed') ? 'checkpointed' : 'train', false, gpu.tuning.attentionVariant);
    try {
      const loaded = gpu.memoryStats().currentBytes - before;
      gpu.resetPeakMemory();
      const t0 = performance.now();
      const { loss } = await ft.step({ ids, B, S });
      const stepS = (performance.now() - t0) / 1000;
      const peak = gpu.memoryStats().peakBytes - before;
      const weights = ft.model.weightBytes;
      const row: MemoryRow = {
        variant,
        peak_bytes: peak,
        weights_bytes: weights,
        adapters_and_optimizer_bytes: loaded - weights,
        activations_bytes: zo ? arena : arena - scratch,
        backward_scratch_bytes: zo ? 0 : scratch,
        other_bytes: peak - loaded - arena,
        step_s: stepS,
        loss,
      };
      rows.push(row);
      const mib = (n: number) => `${(n / 2 ** 20).toFixed(0)} MiB`;
      log(`${variant}: peak ${(peak / 1e9).toFixed(3)} GB = weights ${mib(weights)} + adapters and optimizer ${mib(row.adapters_and_optimizer_bytes)} + activations ${mib(row.activations_bytes)} + backward scratch ${mib(row.backward_scratch_bytes)} + other ${mib(row.other_bytes)}; step ${stepS.toFixed(0)} s, loss ${loss.toFixed(3)}`);
    } finally {
      ft.destroy();
    }
  }
  const peakGb = (v: MemoryRow['variant']) => (rows.find((r) => r.variant === v)?.peak_bytes ?? NaN) / 1e9;
  return {
    device: gpu.describe(),
    model: 'Qwen2.5-0.5B configuration (random weights)',
    batch: `${B}x${S}`,
    lora: 'rank 16, all linear layers',
    rows: MEMORY_VARIANTS.flatMap((v) => rows.filter((r) => r.variant === v)),
    ratios: {
      qlora_qwen05b_peak_gb: peakGb('qlora-nf4'),
      lora_bf16_qwen05b_peak_gb: peakGb('lora-bf16'),
      qlora_qwen05b_checkpointed_peak_gb: peakGb('qlora-nf4-checkpointed'),
      lora_bf16_qwen05b_checkpointed_peak_gb: peakGb('lora-bf16-checkpointed'),
      zo_qlora_qwen05b_peak_gb: peakGb('zo-qlora-nf4'),
    },
  };
}

export function formatMemoryBench(r: MemoryBenchResult): string {
  const mib = (n: number) => (n / 2 ** 20).toFixed(0).padStart(9);
  const lines = [`device: ${r.device}`, `${r.model}, batch ${r.batch}, LoRA ${r.lora}`, ''];
  lines.push(`${'variant'.padEnd(10)} ${'peak GB'.padStart(8)} ${'weights'.padStart(9)} ${'adapters'.padStart(9)} ${'acts'.padStart(9)} ${'bwd scr'.padStart(9)} ${'other'.padStart(9)}   (MiB)`);
  for (const x of r.rows) {
    lines.push(`${x.variant.padEnd(10)} ${(x.peak_bytes / 1e9).toFixed(3).padStart(8)} ${mib(x.weights_bytes)} ${mib(x.adapters_and_optimizer_bytes)} ${mib(x.activations_bytes)} ${mib(x.backward_scratch_bytes)} ${mib(x.other_bytes)}`);
  }
  lines.push('', 'ratios:', ...Object.entries(r.ratios).map(([k, v]) => `  ${k}: ${v.toFixed(3)}`));
  return lines.join('\n');
}
