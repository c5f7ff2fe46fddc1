/**
 * Planned peak GPU memory of one QLoRA step (NF4 base, LoRA rank 16 on every linear layer, AdamW, batch
 * 1 x 512) for the exact configurations of Llama-3.2-1B, Qwen3-0.6B and Gemma-3-1B, with and without
 * gradient checkpointing: the bytes the engine allocates, summed from its own layouts (nf4Bytes of each
 * linear weight, the 16-bit frozen embedding, f32 norms, the RoPE tables, the adapters with their
 * gradients and AdamW moments, and the activation arena's plan). A measured step at this scale takes
 * hours on SwiftShader, so these are planned figures; the same plan for Qwen2.5-0.5B is printed beside
 * the measured peak of bench/results/memory-node.json, whose transient buffers (a few MiB) it leaves out.
 * Writes bench/results/memory-plan.json. Runs without a GPU.
 */
import { existsSync, readFileSync } from 'node:fs';
import { nf4Bytes, nf4Layout } from '../src/kernels/nf4.js';
import { Activations } from '../src/model/activations.js';
import { layerRope, parseConfig, type ModelConfig } from '../src/model/config.js';
import { paramSpecs } from '../src/model/layout.js';
import { linearModules } from '../src/methods/targets.js';
import { QWEN25_05B_CONFIG, type MemoryBenchResult } from './memory.js';
import { writeResult } from './runner.js';

/** Published config.json files (transformers 4 layout), abridged to what the model's math reads. */
const CONFIGS = {
  'Llama-3.2-1B': {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 2048, intermediate_size: 8192, num_hidden_layers: 16, num_attention_heads: 32,
    num_key_value_heads: 8, head_dim: 64, vocab_size: 128256, max_position_embeddings: 131072, rms_norm_eps: 1e-5, rope_theta: 500000.0,
    rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
    tie_word_embeddings: true, hidden_act: 'silu', bos_token_id: 128000, eos_token_id: 128001, torch_dtype: 'bfloat16',
  },
  'Qwen3-0.6B': {
    architectures: ['Qwen3ForCausalLM'], model_type: 'qwen3', hidden_size: 1024, intermediate_size: 3072, num_hidden_layers: 28, num_attention_heads: 16,
    num_key_value_heads: 8, head_dim: 128, vocab_size: 151936, max_position_embeddings: 40960, rms_norm_eps: 1e-6, rope_theta: 1000000, tie_word_embeddings: true,
    hidden_act: 'silu', attention_bias: false, use_sliding_window: false, sliding_window: null, max_window_layers: 28, bos_token_id: 151643, eos_token_id: 151645, torch_dtype: 'bfloat16',
  },
  'Gemma-3-1B': {
    architectures: ['Gemma3ForCausalLM'], model_type: 'gemma3_text', hidden_size: 1152, intermediate_size: 6912, num_hidden_layers: 26, num_attention_heads: 4,
    num_key_value_heads: 1, head_dim: 256, vocab_size: 262144, max_position_embeddings: 32768, rms_norm_eps: 1e-6, query_pre_attn_scalar: 256, sliding_window: 512,
    sliding_window_pattern: 6, rope_theta: 1000000, rope_local_base_freq: 10000, rope_scaling: null, final_logit_softcapping: null, attn_logit_softcapping: null,
    hidden_activation: 'gelu_pytorch_tanh', tie_word_embeddings: true, bos_token_id: 2, eos_token_id: [1, 106], torch_dtype: 'bfloat16',
  },
  'Qwen2.5-0.5B': QWEN25_05B_CONFIG,
} as const;

const [B, S, RANK] = [1, 512, 16];
const align = (bytes: number) => Math.ceil(bytes / 256) * 256;

export interface PlannedRow {
  model: string;
  /** Backpropagation (QLoRA), or zeroth-order on the same adapter (two forward passes, no optimizer state). */
  method: 'qlora' | 'zo-qlora';
  checkpointed: boolean;
  peak_bytes: number;
  weights_bytes: number;
  adapters_and_optimizer_bytes: number;
  activations_bytes: number;
  backward_scratch_bytes: number;
  /** The largest single tensor: what must fit one storage binding. */
  largest_tensor: string;
  largest_tensor_bytes: number;
}

/** The engine's allocations for a QLoRA NF4 step of `config` (a bf16 checkpoint: the frozen embedding stays 16-bit). */
function plan(model: string, c: ModelConfig, checkpointed: boolean, method: PlannedRow['method'] = 'qlora'): PlannedRow {
  const linear = linearModules(c, ['all-linear'], 'plan');
  let weights = 0;
  let largest: [string, number] = ['', 0];
  const note = (name: string, bytes: number) => {
    weights += bytes;
    if (bytes > largest[1]) largest = [name, bytes];
  };
  for (const [name, s] of linear) note(`${name}.weight`, nf4Bytes(nf4Layout(s.out, s.in)).total);
  for (const p of paramSpecs(c)) {
    const n = p.shape.reduce((a, b) => a * b, 1);
    if (p.name === 'embed' || p.name === 'lm_head') note(p.name, align(n * 2)); // frozen, 16-bit as the checkpoint
    else if (!linear.has(p.name.replace(/\.weight$/, ''))) note(p.name, align(n * 4)); // norms (and biases) in f32
  }
  // RoPE tables: one per distinct base and scaling among the layers, [maxPositions, headDim] f32 each.
  const ropes = new Set(Array.from({ length: c.numLayers }, (_, i) => layerRope(c, i)).filter((r) => r).map((r) => JSON.stringify(r)));
  const ropeBytes = ropes.size * c.maxPositions * c.rotaryDim * 4;
  // LoRA A [r, in] and B [out, r]: the values, their gradients and AdamW's two moments, f32 (zeroth-order:
  // the values and the adapter's gradient arena, which it allocates but never writes; no moments).
  const loraParams = [...linear.values()].reduce((n, s) => n + RANK * (s.in + s.out), 0);
  const zo = method === 'zo-qlora';
  const adapters = (zo ? 2 : 4) * 4 * loraParams + ropeBytes;
  const train = Activations.bytesFor(c, B, S, zo ? 'inference' : checkpointed ? 'checkpointed' : 'train');
  const scratch = zo ? 0 : Activations.scratchBytes(c, B, S);
  return {
    model, method, checkpointed, peak_bytes: weights + adapters + train, weights_bytes: weights, adapters_and_optimizer_bytes: adapters,
    activations_bytes: train - scratch, backward_scratch_bytes: scratch, largest_tensor: largest[0], largest_tensor_bytes: largest[1],
  };
}

const rows = Object.entries(CONFIGS).flatMap(([model, raw]) => [
  ...[false, true].map((checkpointed) => plan(model, parseConfig(JSON.stringify(raw)), checkpointed)),
  plan(model, parseConfig(JSON.stringify(raw)), false, 'zo-qlora'),
]);
const gb = (model: string, method: PlannedRow['method'] = 'qlora') => rows.find((r) => r.model === model && r.method === method && (r.checkpointed || method !== 'qlora'))!.peak_bytes / 1e9;
const measuredFile = new URL('./results/memory-node.json', import.meta.url);
const measured = existsSync(measuredFile) ? (JSON.parse(readFileSync(measuredFile, 'utf8')) as MemoryBenchResult).rows.find((r) => r.variant === 'qlora-nf4') : undefined;
const result = {
  what: `planned allocations of one QLoRA step: NF4 base, LoRA rank ${RANK} on every linear layer with AdamW, batch ${B}x${S}; zo-qlora: the same adapter trained zeroth-order (two forward passes)`,
  rows,
  qwen25_05b_measured_peak_bytes: measured?.peak_bytes ?? null,
  ratios: {
    qlora_llama32_1b_peak_gb: gb('Llama-3.2-1B'),
    qlora_qwen3_06b_peak_gb: gb('Qwen3-0.6B'),
    qlora_gemma3_1b_peak_gb: gb('Gemma-3-1B'),
    qwen25_05b_planned_vs_measured: measured ? rows.find((r) => r.model === 'Qwen2.5-0.5B' && r.method === 'qlora' && !r.checkpointed)!.peak_bytes / measured.peak_bytes : NaN,
    zo_qlora_qwen25_05b_peak_gb: gb('Qwen2.5-0.5B', 'zo-qlora'),
    zo_qlora_llama32_1b_peak_gb: gb('Llama-3.2-1B', 'zo-qlora'),
  },
};
writeResult('memory-plan.json', result);
const mib = (n: number) => (n / 2 ** 20).toFixed(0).padStart(7);
console.log(`${result.what} (planned, MiB)`);
console.log(`${'model'.padEnd(14)} ${'method'.padEnd(8)} ${'ckpt'.padEnd(5)} ${'peak GB'.padStart(8)} ${'weights'.padStart(7)} ${'adapt.'.padStart(7)} ${'acts'.padStart(7)} ${'bwd'.padStart(7)}  largest tensor`);
for (const r of rows) {
  console.log(`${r.model.padEnd(14)} ${r.method.padEnd(8)} ${(r.checkpointed ? 'yes' : 'no').padEnd(5)} ${(r.peak_bytes / 1e9).toFixed(3).padStart(8)} ${mib(r.weights_bytes)} ${mib(r.adapters_and_optimizer_bytes)} ${mib(r.activations_bytes)} ${mib(r.backward_scratch_bytes)}  ${r.largest_tensor} ${mib(r.largest_tensor_bytes)}`);
}
if (measured) console.log(`Qwen2.5-0.5B measured peak ${(measured.peak_bytes / 1e9).toFixed(3)} GB (planned / measured ${result.ratios.qwen25_05b_planned_vs_measured.toFixed(3)})`);
console.log('ratios:', JSON.stringify(result.ratios));
