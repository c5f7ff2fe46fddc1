/**
 * Seeded tiny models in exact Hugging Face format (config.json, model.safetensors, tokenizer.json,
 * tokenizer_config.json, generation_config.json): the fixtures for tests, benchmarks and the demo.
 * The same options and seed always give the same bytes.
 */
import { writeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import { byteTokenizerFiles, SPECIAL_TOKENS } from '../data/byte-tokenizer.js';
import { randn, rng } from '../util/random.js';
import { parseConfig, type ModelConfig } from './config.js';
import { expectedWeights } from './weights.js';

export interface TinyModelOptions {
  architecture: 'llama' | 'qwen2' | 'qwen3' | 'mistral' | 'gemma2' | 'gemma3' | 'phi3' | 'gpt2';
  seed?: number;
  hiddenSize?: number;
  intermediateSize?: number;
  numLayers?: number;
  numHeads?: number;
  /** Llama family only (GQA when below numHeads). */
  numKvHeads?: number;
  /** Per-head size when not hidden / heads (config.json's head_dim). */
  headDim?: number;
  maxPositions?: number;
  tieWordEmbeddings?: boolean;
  /** Sliding attention window: every layer for Mistral; for Qwen2 the layers from maxWindowLayers on. */
  slidingWindow?: number;
  maxWindowLayers?: number;
  /** RoPE base (default 10000) and scaling, as config.json's rope_theta and rope_scaling (Llama family). */
  ropeTheta?: number;
  ropeScaling?: Record<string, unknown>;
  /**
   * Gemma: the attention scale's query_pre_attn_scalar (default the head size), Gemma 2's soft caps on
   * attention scores and final logits (default 50 and 30), and Gemma 3's sliding layers (all but every
   * `slidingWindowPattern`-th; default 6) with their RoPE base (default 10000, beside rope_theta's 1e6).
   */
  queryPreAttnScalar?: number;
  attnSoftcap?: number | null;
  finalSoftcap?: number | null;
  slidingWindowPattern?: number;
  ropeLocalTheta?: number;
  /** Phi-3: the part of each head RoPE rotates, and the pre-training context (LongRoPE's switch point). */
  partialRotaryFactor?: number;
  originalMaxPositions?: number;
  /** Standard deviation of the random weights (HF's initializer_range). */
  initStd?: number;
  dtype?: 'F32' | 'F16' | 'BF16';
}

const VOCAB = 256 + SPECIAL_TOKENS.length;
const EOS = 256;

export function tinyConfig(o: TinyModelOptions): Record<string, unknown> {
  const H = o.hiddenSize ?? 64;
  const heads = o.numHeads ?? 4;
  const common = { vocab_size: VOCAB, bos_token_id: EOS, eos_token_id: EOS, torch_dtype: 'float32', initializer_range: o.initStd ?? 0.02 };
  if (o.architecture === 'gpt2') {
    return {
      architectures: ['GPT2LMHeadModel'],
      model_type: 'gpt2',
      n_embd: H,
      n_head: heads,
      n_layer: o.numLayers ?? 2,
      n_positions: o.maxPositions ?? 256,
      n_inner: o.intermediateSize ?? 4 * H,
      activation_function: 'gelu_new',
      layer_norm_epsilon: 1e-5,
      tie_word_embeddings: o.tieWordEmbeddings ?? true,
      ...common,
    };
  }
  if (o.architecture === 'gemma2' || o.architecture === 'gemma3') return gemmaConfig(o, common);
  const architecture = { llama: 'LlamaForCausalLM', qwen2: 'Qwen2ForCausalLM', qwen3: 'Qwen3ForCausalLM', mistral: 'MistralForCausalLM', phi3: 'Phi3ForCausalLM' }[o.architecture];
  const window =
    o.slidingWindow === undefined
      ? {}
      : o.architecture === 'qwen2' || o.architecture === 'qwen3'
        ? { use_sliding_window: true, sliding_window: o.slidingWindow, max_window_layers: o.maxWindowLayers ?? 0 }
        : { sliding_window: o.slidingWindow };
  return {
    architectures: [architecture],
    model_type: o.architecture,
    hidden_size: H,
    intermediate_size: o.intermediateSize ?? Math.round((8 * H) / 3 / 4) * 4,
    num_hidden_layers: o.numLayers ?? 2,
    num_attention_heads: heads,
    num_key_value_heads: o.numKvHeads ?? Math.max(1, heads / 2),
    // Qwen3's head_dim defaults to 128 whatever the width: a tiny one states its own.
    ...(o.headDim !== undefined || o.architecture === 'qwen3' ? { head_dim: o.headDim ?? H / heads } : {}),
    max_position_embeddings: o.maxPositions ?? 256,
    rms_norm_eps: 1e-6,
    rope_theta: o.ropeTheta ?? 10000.0,
    ...(o.ropeScaling ? { rope_scaling: o.ropeScaling } : {}),
    ...(o.partialRotaryFactor !== undefined ? { partial_rotary_factor: o.partialRotaryFactor } : {}),
    ...(o.originalMaxPositions !== undefined ? { original_max_position_embeddings: o.originalMaxPositions } : {}),
    hidden_act: 'silu',
    tie_word_embeddings: o.tieWordEmbeddings ?? false,
    ...window,
    ...common,
  };
}

/** A tiny Gemma 2 or Gemma 3 text config with every structural field of the real ones. */
function gemmaConfig(o: TinyModelOptions, common: Record<string, unknown>): Record<string, unknown> {
  const H = o.hiddenSize ?? 64;
  const heads = o.numHeads ?? 4;
  const headDim = o.headDim ?? H / heads;
  const gemma2 = o.architecture === 'gemma2';
  return {
    architectures: [gemma2 ? 'Gemma2ForCausalLM' : 'Gemma3ForCausalLM'],
    model_type: gemma2 ? 'gemma2' : 'gemma3_text',
    hidden_size: H,
    intermediate_size: o.intermediateSize ?? 4 * H,
    num_hidden_layers: o.numLayers ?? 2,
    num_attention_heads: heads,
    num_key_value_heads: o.numKvHeads ?? Math.max(1, heads / 2),
    head_dim: headDim,
    max_position_embeddings: o.maxPositions ?? 256,
    rms_norm_eps: 1e-6,
    hidden_activation: 'gelu_pytorch_tanh',
    query_pre_attn_scalar: o.queryPreAttnScalar ?? headDim,
    sliding_window: o.slidingWindow ?? 4096,
    rope_theta: o.ropeTheta ?? (gemma2 ? 10000.0 : 1e6),
    ...(o.ropeScaling ? { rope_scaling: o.ropeScaling } : {}),
    ...(gemma2
      ? { attn_logit_softcapping: o.attnSoftcap === undefined ? 50.0 : o.attnSoftcap, final_logit_softcapping: o.finalSoftcap === undefined ? 30.0 : o.finalSoftcap }
      : { rope_local_base_freq: o.ropeLocalTheta ?? 10000.0, sliding_window_pattern: o.slidingWindowPattern ?? 6, final_logit_softcapping: o.finalSoftcap ?? null }),
    tie_word_embeddings: o.tieWordEmbeddings ?? true,
    ...common,
  };
}

/**
 * A safetensors file with every weight a config needs: normal(0, std) matrices, unit norm weights, zero
 * biases. Also how benchmarks get a model of a real configuration without downloading it.
 */
export function randomWeightsFile(config: ModelConfig, o: { seed?: number; std?: number; dtype?: 'F32' | 'F16' | 'BF16' } = {}): Uint8Array {
  const rand = rng(o.seed ?? 0);
  const tensors: Record<string, TensorToWrite> = {};
  for (const w of expectedWeights(config)) {
    if (!w.shape) throw new Error(`randomWeightsFile writes unquantized weights; '${w.name}' is a quantization state`);
    const n = w.shape.reduce((a, b) => a * b, 1);
    const isNormWeight = /(layernorm|norm|ln_\d|ln_f)\.weight$/.test(w.name);
    // A norm's scale is 1: its weight, or (Gemma's 1 + w) a zero weight.
    const data = isNormWeight ? new Float32Array(n).fill(1 - config.normWeightOffset) : w.name.endsWith('.bias') ? new Float32Array(n) : randn(n, rand, o.std ?? 0.02);
    tensors[w.name] = { dtype: o.dtype ?? 'F32', shape: w.shape, data };
  }
  return writeSafetensors(tensors, { format: 'pt' });
}

export function tinyModelFiles(o: TinyModelOptions): Record<string, string | Uint8Array> {
  const raw = tinyConfig(o);
  const config = parseConfig(raw);
  const tokenizer = byteTokenizerFiles(o.architecture === 'gpt2' ? 'GPT2Tokenizer' : 'PreTrainedTokenizerFast', config.maxPositions);
  return {
    'config.json': JSON.stringify(raw, null, 2),
    'generation_config.json': JSON.stringify({ bos_token_id: EOS, eos_token_id: EOS }, null, 2),
    'model.safetensors': randomWeightsFile(config, { seed: o.seed, std: o.initStd, dtype: o.dtype }),
    ...tokenizer,
  };
}
