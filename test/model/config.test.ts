import { describe, expect, it } from 'vitest';
import { InvalidModelFileError } from '../../src/io/safetensors.js';
import { ConflictingConfigError, InvalidConfigError, parseConfig, UnsupportedArchitectureError, UnsupportedConfigError } from '../../src/model/config.js';
import { standardRope } from '../../src/model/hf-config.js';
import { expectedWeights, resolveWeights } from '../../src/model/weights.js';

// Field values of published checkpoints' config.json files (abridged to the fields that matter).
const QWEN2_05B = {
  architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', hidden_size: 896, intermediate_size: 4864,
  num_hidden_layers: 24, num_attention_heads: 14, num_key_value_heads: 2, vocab_size: 151936,
  max_position_embeddings: 32768, rope_theta: 1000000.0, rms_norm_eps: 1e-6, tie_word_embeddings: true,
  sliding_window: 32768, use_sliding_window: false, hidden_act: 'silu', bos_token_id: 151643, eos_token_id: 151643,
};
// Qwen3-0.6B's config.json (transformers 4 layout, as published).
const QWEN3_06B = {
  architectures: ['Qwen3ForCausalLM'], model_type: 'qwen3', attention_bias: false, attention_dropout: 0.0, bos_token_id: 151643, eos_token_id: 151645,
  head_dim: 128, hidden_act: 'silu', hidden_size: 1024, initializer_range: 0.02, intermediate_size: 3072, max_position_embeddings: 40960,
  max_window_layers: 28, num_attention_heads: 16, num_hidden_layers: 28, num_key_value_heads: 8, rms_norm_eps: 1e-6, rope_scaling: null,
  rope_theta: 1000000, sliding_window: null, tie_word_embeddings: true, torch_dtype: 'bfloat16', transformers_version: '4.51.0', use_cache: true,
  use_sliding_window: false, vocab_size: 151936,
};
// Gemma-2-2B's and Gemma-3-1B's config.json (transformers 4 layout, as published).
const GEMMA2_2B = {
  architectures: ['Gemma2ForCausalLM'], attention_bias: false, attention_dropout: 0.0, attn_logit_softcapping: 50.0, bos_token_id: 2, cache_implementation: 'hybrid',
  eos_token_id: 1, final_logit_softcapping: 30.0, head_dim: 256, hidden_act: 'gelu_pytorch_tanh', hidden_activation: 'gelu_pytorch_tanh', hidden_size: 2304,
  initializer_range: 0.02, intermediate_size: 9216, max_position_embeddings: 8192, model_type: 'gemma2', num_attention_heads: 8, num_hidden_layers: 26,
  num_key_value_heads: 4, pad_token_id: 0, query_pre_attn_scalar: 256, rms_norm_eps: 1e-6, rope_theta: 10000.0, sliding_window: 4096, torch_dtype: 'float32',
  transformers_version: '4.42.4', use_cache: true, vocab_size: 256000,
};
const GEMMA3_1B = {
  architectures: ['Gemma3ForCausalLM'], attention_bias: false, attention_dropout: 0.0, attn_logit_softcapping: null, bos_token_id: 2, cache_implementation: 'hybrid',
  eos_token_id: [1, 106], final_logit_softcapping: null, head_dim: 256, hidden_activation: 'gelu_pytorch_tanh', hidden_size: 1152, initializer_range: 0.02,
  intermediate_size: 6912, max_position_embeddings: 32768, model_type: 'gemma3_text', num_attention_heads: 4, num_hidden_layers: 26, num_key_value_heads: 1,
  pad_token_id: 0, query_pre_attn_scalar: 256, rms_norm_eps: 1e-6, rope_local_base_freq: 10000, rope_scaling: null, rope_theta: 1000000, sliding_window: 512,
  sliding_window_pattern: 6, torch_dtype: 'bfloat16', transformers_version: '4.50.0.dev0', use_cache: true, vocab_size: 262144,
};
// Phi-3-mini-4k-instruct's config.json (as published, auto_map left out).
const PHI3_MINI = {
  architectures: ['Phi3ForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 1, embd_pdrop: 0.0, eos_token_id: 32000, hidden_act: 'silu',
  hidden_size: 3072, initializer_range: 0.02, intermediate_size: 8192, max_position_embeddings: 4096, model_type: 'phi3', num_attention_heads: 32,
  num_hidden_layers: 32, num_key_value_heads: 32, original_max_position_embeddings: 4096, pad_token_id: 32000, resid_pdrop: 0.0, rms_norm_eps: 1e-5,
  rope_scaling: null, rope_theta: 10000.0, sliding_window: 2047, tie_word_embeddings: false, torch_dtype: 'bfloat16', transformers_version: '4.40.2', use_cache: true, vocab_size: 32064,
};
const TINYLLAMA = {
  architectures: ['LlamaForCausalLM'], hidden_size: 2048, intermediate_size: 5632, num_hidden_layers: 22,
  num_attention_heads: 32, num_key_value_heads: 4, vocab_size: 32000, max_position_embeddings: 2048,
  rms_norm_eps: 1e-5, hidden_act: 'silu', tie_word_embeddings: false, bos_token_id: 1, eos_token_id: 2, rope_scaling: null,
};
const MISTRAL = {
  architectures: ['MistralForCausalLM'], hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32,
  num_attention_heads: 32, num_key_value_heads: 8, vocab_size: 32000, rope_theta: 10000.0, sliding_window: 4096,
};
const GPT2 = {
  architectures: ['GPT2LMHeadModel'], n_embd: 768, n_head: 12, n_layer: 12, n_positions: 1024, vocab_size: 50257,
  layer_norm_epsilon: 1e-5, activation_function: 'gelu_new', n_inner: null, bos_token_id: 50256, eos_token_id: 50256,
};

describe('config.json', () => {
  it('reads Qwen2 (GQA, tied embeddings, qkv bias, rope_theta)', () => {
    const c = parseConfig(JSON.stringify(QWEN2_05B));
    expect(c).toMatchObject({ family: 'llama', numKvHeads: 2, headDim: 64, ropeTheta: 1e6, tieWordEmbeddings: true, qkvBias: true, outputBias: false, slidingWindow: null, eosTokenIds: [151643] });
  });

  it('reads Llama with the defaults transformers uses', () => {
    const c = parseConfig(TINYLLAMA);
    expect(c).toMatchObject({ numKvHeads: 4, headDim: 64, ropeTheta: 10000, normEps: 1e-5, tieWordEmbeddings: false, qkvBias: false, bosTokenId: 1 });
  });

  it('reads Mistral with its sliding window', () => {
    const c = parseConfig(MISTRAL);
    expect(c).toMatchObject({ slidingWindow: 4096, numKvHeads: 8, normEps: 1e-6, maxPositions: 2048 });
    expect(c.layerWindows).toEqual(new Array(32).fill(4096));
    expect(parseConfig({ ...MISTRAL, sliding_window: null }).layerWindows).toEqual(new Array(32).fill(null));
  });

  it('windows the layers Hugging Face windows: Qwen2 from max_window_layers on, or as layer_types says', () => {
    const qwen = { ...QWEN2_05B, num_hidden_layers: 4, use_sliding_window: true, sliding_window: 8, max_window_layers: 2 };
    expect(parseConfig(qwen).layerWindows).toEqual([null, null, 8, 8]);
    expect(parseConfig(QWEN2_05B).layerWindows.every((w) => w === null)).toBe(true);
    const types = { ...qwen, layer_types: ['sliding_attention', 'full_attention', 'full_attention', 'sliding_attention'] };
    expect(parseConfig(types)).toMatchObject({ slidingWindow: 8, layerWindows: [8, null, null, 8] });
    expect(() => parseConfig({ ...types, layer_types: ['full_attention'] })).toThrow(/layer_types lists 1 layers/);
    expect(() => parseConfig({ ...types, layer_types: ['chunked_attention', 'full_attention', 'full_attention', 'full_attention'] })).toThrow(/not supported/);
    expect(() => parseConfig({ ...MISTRAL, sliding_window: -3 })).toThrow(/positive integer/);
  });

  it('reads GPT-2 (layer norm, learned positions, 4x MLP, tied head)', () => {
    const c = parseConfig(GPT2);
    expect(c).toMatchObject({ family: 'gpt2', intermediateSize: 3072, headDim: 64, ropeTheta: null, norm: 'layernorm', tieWordEmbeddings: true, activation: 'gelu_new' });
  });

  it('names the supported architectures when it meets another', () => {
    const err = (() => {
      try {
        parseConfig({ architectures: ['BertForMaskedLM'], hidden_size: 768 });
      } catch (e) {
        return e as Error;
      }
    })();
    expect(err).toBeInstanceOf(UnsupportedArchitectureError);
    expect(err!.message).toMatch(/BertForMaskedLM.*LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, MistralForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, Phi3ForCausalLM, GPT2LMHeadModel/);
    expect(() => parseConfig({ model_type: 'bert' })).toThrow(UnsupportedArchitectureError);
  });

  it.each([
    ['not JSON', '{"architectures": ['],
    ['a missing field', JSON.stringify({ ...TINYLLAMA, hidden_size: undefined })],
    ['heads not a multiple of kv heads', JSON.stringify({ ...TINYLLAMA, num_key_value_heads: 5 })],
    ['an unsupported activation', JSON.stringify({ ...TINYLLAMA, hidden_act: 'relu' })],
    ['llama3 RoPE scaling without its frequency factors', JSON.stringify({ ...TINYLLAMA, rope_scaling: { rope_type: 'llama3', factor: 8 } })],
    ['linear RoPE scaling without a factor', JSON.stringify({ ...TINYLLAMA, rope_scaling: { rope_type: 'linear' } })],
  ])('rejects %s', (_what, text) => {
    expect(() => parseConfig(text)).toThrow(InvalidConfigError);
  });
});

/** The error a call throws (the test fails if it throws none). */
function thrown(f: () => unknown): Error & Record<string, unknown> {
  try {
    f();
  } catch (e) {
    return e as Error & Record<string, unknown>;
  }
  throw new Error('expected an error');
}

// TinyLlama in transformers 5's layout, as save_pretrained writes it.
const { rope_scaling: _, ...TINYLLAMA_BASE } = TINYLLAMA;
const LLAMA5 = { ...TINYLLAMA_BASE, model_type: 'llama', head_dim: 64, dtype: 'bfloat16', rope_parameters: { rope_theta: 500000.0, rope_type: 'default' } };
// Llama 3.2 1B's RoPE, as transformers 5 writes it.
const LLAMA31_ROPE = { rope_type: 'llama3', rope_theta: 500000.0, factor: 32.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192 };

describe('config layouts: transformers 4 (top-level RoPE keys) and 5 (rope_parameters)', () => {
  it('reads rope_theta from rope_parameters, from the top level, or the default', () => {
    expect(parseConfig(LLAMA5).ropeTheta).toBe(500000);
    expect(parseConfig({ ...TINYLLAMA, rope_theta: 500000, torch_dtype: 'bfloat16' }).ropeTheta).toBe(500000);
    expect(parseConfig({ ...LLAMA5, rope_parameters: { rope_type: 'default' }, rope_theta: 250000 }).ropeTheta).toBe(250000);
    expect(parseConfig({ ...LLAMA5, rope_parameters: { type: 'default', rope_theta: 7 } }).ropeTheta).toBe(7);
    expect(parseConfig({ ...LLAMA5, rope_parameters: null }).ropeTheta).toBe(10000);
    expect(() => parseConfig({ ...LLAMA5, rope_scaling: { rope_type: 'default' } })).toThrow(/rope_parameters.rope_theta is set beside rope_scaling/);
    // Both layouts stating the same value is one setting, not two.
    expect(parseConfig({ ...LLAMA5, rope_theta: 500000.0, torch_dtype: 'bfloat16', rope_scaling: { rope_type: 'default' } }).ropeTheta).toBe(500000);
  });

  it.each([
    ['rope_theta', { rope_theta: 10000 }, ['rope_theta', 'rope_parameters.rope_theta']],
    ['the dtype', { torch_dtype: 'float32' }, ['dtype', 'torch_dtype']],
    ['rope_scaling', { rope_scaling: { rope_type: 'linear', factor: 2 } }, ['rope_scaling.rope_type', 'rope_parameters.rope_type']],
    ['type and rope_type', { rope_parameters: { rope_type: 'default', type: 'linear' } }, ['rope_parameters.rope_type', 'rope_parameters.type']],
    ['partial_rotary_factor', { partial_rotary_factor: 0.5, rope_parameters: { rope_type: 'default', rope_theta: 10000, partial_rotary_factor: 1 } }, ['partial_rotary_factor', 'rope_parameters.partial_rotary_factor']],
    ['architectures and model_type', { model_type: 'qwen2' }, ['architectures', 'model_type']],
  ])('refuses a config whose layouts disagree: %s, naming both keys', (_what, change, keys) => {
    const e = thrown(() => parseConfig({ ...LLAMA5, ...change }));
    expect(e).toBeInstanceOf(ConflictingConfigError);
    expect(e.fields).toEqual(keys);
    for (const k of keys) expect(e.message).toContain(k);
  });

  it.each([
    ['yarn in rope_parameters', { rope_parameters: { rope_type: 'yarn', rope_theta: 500000, factor: 4, original_max_position_embeddings: 8192 } }, 'rope_parameters.rope_type', 'yarn'],
    ['longrope by its old key', { rope_parameters: undefined, rope_scaling: { type: 'longrope', short_factor: [1], long_factor: [2] } }, 'rope_scaling.rope_type', 'longrope'],
    ['llama3 with part of the head rotating', { rope_parameters: { ...LLAMA31_ROPE, partial_rotary_factor: 0.5 } }, 'rope_parameters.partial_rotary_factor', 0.5],
    ['a GELU MLP', { hidden_act: 'gelu' }, 'hidden_act', 'gelu'],
    ['pruned heads', { pruned_heads: { 0: [1] } }, 'pruned_heads', { 0: [1] }],
  ])('refuses %s by name', (_what, change, field, value) => {
    const e = thrown(() => parseConfig({ ...LLAMA5, ...change }));
    expect(e).toBeInstanceOf(UnsupportedConfigError);
    expect(e).toMatchObject({ code: 'unsupported-config', field, value });
  });

  it('reads Qwen3: per-head q/k norms, head_dim 128 whatever the width, biases only when attention_bias says', () => {
    const c = parseConfig(QWEN3_06B);
    expect(c).toMatchObject({ architecture: 'Qwen3ForCausalLM', qkNorm: true, headDim: 128, numHeads: 16, numKvHeads: 8, qkvBias: false, outputBias: false, mlpBias: false, tieWordEmbeddings: true, slidingWindow: null, ropeTheta: 1e6, eosTokenIds: [151645] });
    expect(c.warnings).toEqual([]);
    const { head_dim: _h, ...noHeadDim } = QWEN3_06B;
    expect(parseConfig({ ...noHeadDim, hidden_size: 512 }).headDim).toBe(128);
    expect(parseConfig({ ...QWEN3_06B, attention_bias: true })).toMatchObject({ qkvBias: true, outputBias: true, mlpBias: false });
    expect(parseConfig({ ...QWEN3_06B, use_sliding_window: true, sliding_window: 4096, max_window_layers: 26 }).layerWindows.filter((w) => w !== null)).toHaveLength(2);
    expect(parseConfig({ ...QWEN2_05B }).qkNorm).toBe(false);
  });

  it("reads Gemma 2: (1 + w) norms before and after each sublayer, GeGLU, scaled embeddings, query_pre_attn_scalar, soft caps, every other layer windowed", () => {
    const c = parseConfig(GEMMA2_2B);
    expect(c).toMatchObject({
      architecture: 'Gemma2ForCausalLM', family: 'llama', activation: 'gelu_new', normWeightOffset: 1, embedScale: 48, postNorms: true, attentionScale: 1 / 16,
      attentionSoftcap: 50, finalLogitSoftcap: 30, qkNorm: false, headDim: 256, tieWordEmbeddings: true, slidingWindow: 4096, layerRopes: null, ropeTheta: 10000,
    });
    expect(c.layerWindows.slice(0, 4)).toEqual([4096, null, 4096, null]);
    expect(c.warnings).toEqual([]);
    // Defaults are Gemma2Config's: both soft caps on, a 256-wide head, tied embeddings; null turns a cap off.
    const { attn_logit_softcapping: _a, final_logit_softcapping: _f, head_dim: _h, ...bare } = GEMMA2_2B;
    expect(parseConfig(bare)).toMatchObject({ attentionSoftcap: 50, finalLogitSoftcap: 30, headDim: 256 });
    expect(parseConfig({ ...GEMMA2_2B, attn_logit_softcapping: null })).toMatchObject({ attentionSoftcap: null, finalLogitSoftcap: 30 });
    expect(parseConfig({ ...GEMMA2_2B, layer_types: new Array(26).fill('full_attention') }).slidingWindow).toBeNull();
    expect(parseConfig({ ...GEMMA2_2B, hidden_act: 'silu' }).warnings).toEqual([expect.stringMatching(/hidden_act: 'silu' is ignored: transformers' Gemma reads hidden_activation/)]);
    expect(Math.fround(parseConfig({ ...GEMMA2_2B, hidden_size: 2048 }).embedScale)).toBe(Math.fround(Math.sqrt(2048)));
    expect(() => parseConfig({ ...GEMMA2_2B, final_logit_softcapping: 0 })).toThrow(/'final_logit_softcapping' must be a positive number or null/);
    expect(() => parseConfig({ ...GEMMA2_2B, hidden_activation: 'relu' })).toThrow(/hidden_activation 'relu' is not supported/);
    expect(thrown(() => parseConfig({ ...GEMMA2_2B, use_bidirectional_attention: true }))).toMatchObject({ code: 'unsupported-config', field: 'use_bidirectional_attention' });
  });

  it('reads Gemma 3: q/k norms, five sliding layers to one full, and the sliding layers on their own RoPE base', () => {
    const c = parseConfig(GEMMA3_1B);
    expect(c).toMatchObject({ architecture: 'Gemma3ForCausalLM', qkNorm: true, normWeightOffset: 1, postNorms: true, attentionSoftcap: null, finalLogitSoftcap: null, slidingWindow: 512, eosTokenIds: [1, 106] });
    expect(c.warnings).toEqual([]);
    const full = c.layerWindows.flatMap((w, i) => (w === null ? [i] : []));
    expect(full).toEqual([5, 11, 17, 23]);
    expect(c.layerRopes!.map((r) => r.theta)).toEqual(c.layerWindows.map((w) => (w === null ? 1e6 : 1e4)));
    // Linear scaling on the global layers only (the 4B-27B configs), the local ones plain.
    const scaled = parseConfig({ ...GEMMA3_1B, rope_scaling: { rope_type: 'linear', factor: 8 } });
    expect(scaled.layerRopes![5]).toEqual({ theta: 1e6, scaling: { type: 'linear', factor: 8 } });
    expect(scaled.layerRopes![0]).toEqual({ theta: 1e4, scaling: null });
    expect(parseConfig({ ...GEMMA3_1B, sliding_window_pattern: 2 }).layerWindows.slice(0, 4)).toEqual([512, null, 512, null]);
    // transformers' Gemma3 never applies attn_logit_softcapping: ignored, with a warning.
    const capped = parseConfig({ ...GEMMA3_1B, attn_logit_softcapping: 50 });
    expect(capped.attentionSoftcap).toBeNull();
    expect(capped.warnings).toEqual([expect.stringMatching(/attn_logit_softcapping: 50 is ignored/)]);
    expect(parseConfig({ ...GEMMA3_1B, rope_local_base_freq: 1e6 }).layerRopes).toBeNull();
  });

  it("reads Phi-3: fused qkv_proj and gate_up_proj, a window on every layer; Phi-4-mini's partial rotation and LongRoPE", () => {
    const c = parseConfig(PHI3_MINI);
    expect(c).toMatchObject({ architecture: 'Phi3ForCausalLM', fusedProjections: true, headDim: 96, rotaryDim: 96, numKvHeads: 32, qkvBias: false, slidingWindow: 2047, tieWordEmbeddings: false, normEps: 1e-5, ropeScaling: null });
    expect(c.layerWindows.every((w) => w === 2047)).toBe(true);
    expect(c.warnings).toEqual([]);
    expect(expectedWeights(c).map((w) => w.name).filter((n) => n.startsWith('model.layers.0.'))).toEqual([
      'model.layers.0.input_layernorm.weight', 'model.layers.0.self_attn.qkv_proj.weight', 'model.layers.0.self_attn.o_proj.weight',
      'model.layers.0.post_attention_layernorm.weight', 'model.layers.0.mlp.gate_up_proj.weight', 'model.layers.0.mlp.down_proj.weight',
    ]);
    expect(expectedWeights(c).find((w) => w.name.endsWith('0.self_attn.qkv_proj.weight'))!.shape).toEqual([3 * 3072, 3072]);
    expect(parseConfig({ ...PHI3_MINI, attention_bias: true }).warnings).toEqual([expect.stringMatching(/attention_bias: true is ignored/)]);
    // Phi-4-mini: 24 heads of 128 with 8 key/value heads, 3/4 of each rotating, LongRoPE over 48 pairs from a 4096-token context.
    const factors = (f: number) => Array.from({ length: 48 }, (_, j) => 1 + f * j);
    const phi4 = parseConfig({
      ...PHI3_MINI, hidden_size: 3072, num_attention_heads: 24, num_key_value_heads: 8, partial_rotary_factor: 0.75, max_position_embeddings: 131072,
      rope_scaling: { type: 'longrope', short_factor: factors(0.01), long_factor: factors(0.5) }, sliding_window: 262144, tie_word_embeddings: true,
      full_attn_mod: 1, interpolate_factor: 1, lm_head_bias: false, mlp_bias: false, vocab_size: 200064,
    });
    expect(phi4).toMatchObject({ headDim: 128, rotaryDim: 96, numKvHeads: 8, tieWordEmbeddings: true });
    expect(phi4.warnings).toEqual([]);
    // factor defaults to 131072 / 4096 = 32, the attention factor to sqrt(1 + ln 32 / ln 4096).
    expect(phi4.ropeScaling).toEqual({ type: 'longrope', shortFactor: factors(0.01), longFactor: factors(0.5), originalMaxPositions: 4096, attentionFactor: Math.sqrt(1 + Math.log(32) / Math.log(4096)) });
    expect(() => parseConfig({ ...PHI3_MINI, partial_rotary_factor: 0.75, rope_scaling: { type: 'longrope', short_factor: [1], long_factor: [1] } })).toThrow(/'rope_scaling.short_factor' must list 36 positive numbers/);
    expect(() => parseConfig({ ...PHI3_MINI, partial_rotary_factor: 0.01 })).toThrow(/rotates 0 of 96 values per head/);
    // Early Phi-3 configs name LongRoPE 'su' (or 'yarn'): Phi3Config reads both as 'longrope'.
    const su = { type: 'su', short_factor: factors(0.01).slice(0, 48), long_factor: factors(0.5).slice(0, 48) };
    expect(parseConfig({ ...PHI3_MINI, max_position_embeddings: 131072, rope_scaling: su }).ropeScaling).toMatchObject({ type: 'longrope', originalMaxPositions: 4096 });
    // LongRoPE is Phi-3's here: another family's is refused by name.
    expect(thrown(() => parseConfig({ ...TINYLLAMA, rope_scaling: { type: 'longrope', short_factor: [1], long_factor: [2] } }))).toMatchObject({ code: 'unsupported-config', field: 'rope_scaling.rope_type', value: 'longrope' });
  });

  it("reads Llama 3.1's and linear RoPE scaling in either layout, and refuses parameters that cannot hold", () => {
    const llama3 = { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositions: 8192 };
    expect(parseConfig({ ...LLAMA5, rope_parameters: LLAMA31_ROPE })).toMatchObject({ ropeTheta: 500000, ropeScaling: llama3 });
    const { rope_type: _t, rope_theta: _r, ...scaling4 } = LLAMA31_ROPE;
    expect(parseConfig({ ...TINYLLAMA, rope_theta: 500000, rope_scaling: { rope_type: 'llama3', ...scaling4 } })).toMatchObject({ ropeTheta: 500000, ropeScaling: llama3 });
    // transformers falls back to max_position_embeddings for a missing original context.
    const { original_max_position_embeddings: _o, ...noContext } = LLAMA31_ROPE;
    expect(parseConfig({ ...LLAMA5, rope_parameters: noContext }).ropeScaling).toMatchObject({ originalMaxPositions: LLAMA5.max_position_embeddings });
    expect(parseConfig({ ...TINYLLAMA, rope_scaling: { type: 'linear', factor: 4 } }).ropeScaling).toEqual({ type: 'linear', factor: 4 });
    // Dynamic NTK scaling: plain RoPE up to max_position_embeddings, the only lengths the engine runs.
    expect(parseConfig({ ...TINYLLAMA, rope_scaling: { type: 'dynamic', factor: 2 } }).ropeScaling).toEqual({ type: 'dynamic', factor: 2 });
    expect(parseConfig(LLAMA5).ropeScaling).toBeNull();
    expect(() => parseConfig({ ...LLAMA5, rope_parameters: { ...LLAMA31_ROPE, high_freq_factor: 1 } })).toThrow(/high_freq_factor \(1\) must be above low_freq_factor \(1\)/);
    expect(() => parseConfig({ ...LLAMA5, rope_parameters: { ...LLAMA31_ROPE, factor: '32' } })).toThrow(/'rope_parameters.factor' must be a number for RoPE type 'llama3'/);
    expect(() => parseConfig({ ...LLAMA5, rope_parameters: { rope_type: 'linear', factor: 0 } })).toThrow(/'rope_parameters.factor' must be positive, got 0/);
    expect(() => parseConfig({ ...LLAMA5, rope_parameters: { ...LLAMA31_ROPE, original_max_position_embeddings: 81.5 } })).toThrow(/must be a positive integer, got 81.5/);
  });

  it('reads RoPE given per layer type, and refuses different settings per layer type', () => {
    const qwen = { ...QWEN2_05B, num_hidden_layers: 2, layer_types: ['full_attention', 'sliding_attention'], use_sliding_window: true, sliding_window: 8, rope_theta: undefined };
    const rope = (a: number, b: number) => ({ full_attention: { rope_type: 'default', rope_theta: a }, sliding_attention: { rope_type: 'default', rope_theta: b } });
    expect(parseConfig({ ...qwen, rope_parameters: rope(5e5, 5e5) })).toMatchObject({ ropeTheta: 5e5, layerWindows: [null, 8] });
    expect(thrown(() => parseConfig({ ...qwen, rope_parameters: rope(5e5, 1e4) }))).toMatchObject({ field: 'rope_parameters.sliding_attention.rope_theta' });
  });

  it("reads Gemma 3's split RoPE the same from either layout", () => {
    const layout = { defaultTheta: 10000, splitByLayerType: { fullTheta: 1e6, slidingTheta: 1e4 } };
    const types = ['sliding_attention', 'full_attention'];
    const v4 = standardRope({ rope_theta: 1e6, rope_local_base_freq: 1e4, rope_scaling: { rope_type: 'linear', factor: 8 }, layer_types: types }, layout, types);
    const v5 = standardRope({ rope_parameters: { full_attention: { rope_type: 'linear', factor: 8, rope_theta: 1e6 }, sliding_attention: { rope_type: 'default', rope_theta: 1e4 } } }, layout, types);
    const plain = (r: typeof v4) => Object.fromEntries([...r.byLayerType!].map(([k, s]) => [k, s && { type: s.ropeType, theta: s.theta, factor: s.parameters.factor }]));
    expect(plain(v4)).toEqual({ full_attention: { type: 'linear', theta: 1e6, factor: 8 }, sliding_attention: { type: 'default', theta: 1e4, factor: undefined } });
    expect(plain(v5)).toEqual(plain(v4));
    expect(plain(standardRope({}, layout, types))).toEqual({ full_attention: { type: 'default', theta: 1e6, factor: undefined }, sliding_attention: { type: 'default', theta: 1e4, factor: undefined } });
    expect(() => standardRope({ rope_local_base_freq: 5, rope_parameters: { sliding_attention: { rope_theta: 6 } } }, layout, types)).toThrow(ConflictingConfigError);
  });

  it('reads a config with model_type and no architectures as AutoModelForCausalLM does', () => {
    const { architectures: _a, ...bare } = LLAMA5;
    expect(parseConfig(bare).architecture).toBe('LlamaForCausalLM');
  });
});

describe('config fields', () => {
  it('names unknown fields and departures from transformers in warnings', () => {
    expect(parseConfig(LLAMA5).warnings).toEqual([]);
    expect(parseConfig({ ...LLAMA5, rope_interleaved: false }).warnings).toEqual([expect.stringMatching(/'rope_interleaved' is unknown to this engine and ignored/)]);
    expect(parseConfig({ ...LLAMA5, attention_dropout: 0.1 }).warnings).toEqual([expect.stringMatching(/attention_dropout 0.1 is not applied/)]);
    expect(parseConfig({ ...GPT2, resid_pdrop: 0.1, embd_pdrop: 0.1, attn_pdrop: 0.1 }).warnings).toEqual(['resid_pdrop', 'embd_pdrop', 'attn_pdrop'].map((k) => expect.stringContaining(`${k} 0.1 is not applied`)));
    expect(parseConfig({ ...LLAMA5, partial_rotary_factor: 0.5 }).warnings).toEqual([expect.stringMatching(/partial_rotary_factor 0.5 is ignored/)]);
    expect(parseConfig({ ...LLAMA5, rope_parameters: { rope_type: 'default', factor: 2 } }).warnings).toEqual([expect.stringMatching(/'factor' is ignored with RoPE type 'default'/)]);
    expect(parseConfig({ ...LLAMA5, rope_parameters: { rope_type: 'linear', factor: 2, low_freq_factor: 1 } }).warnings).toEqual([expect.stringMatching(/'low_freq_factor' is ignored with RoPE type 'linear'/)]);
  });

  it("reads only the fields a family's transformers class has: Qwen2 never biases o or the MLP, Llama has no windows", () => {
    const qwen = parseConfig({ ...QWEN2_05B, attention_bias: true, mlp_bias: true });
    expect(qwen).toMatchObject({ qkvBias: true, outputBias: false, mlpBias: false });
    expect(qwen.warnings).toEqual([expect.stringContaining("'attention_bias' is unknown"), expect.stringContaining("'mlp_bias' is unknown")]);
    const llama = parseConfig({ ...LLAMA5, sliding_window: 4, layer_types: ['sliding_attention'] });
    expect(llama.layerWindows.every((w) => w === null)).toBe(true);
    // Qwen2 windows nothing unless use_sliding_window, whatever layer_types says (Qwen2Config.__post_init__).
    const types = { ...QWEN2_05B, num_hidden_layers: 2, sliding_window: 8, layer_types: ['sliding_attention', 'full_attention'] };
    expect(parseConfig(types).layerWindows).toEqual([null, null]);
    expect(parseConfig({ ...types, use_sliding_window: true }).layerWindows).toEqual([8, null]);
  });

  it('windows every Mistral layer, as transformers does, and says that layer_types is ignored', () => {
    const c = parseConfig({ ...MISTRAL, num_hidden_layers: 2, layer_types: ['full_attention', 'sliding_attention'] });
    expect(c.layerWindows).toEqual([4096, 4096]);
    expect(c.warnings).toEqual([expect.stringMatching(/layer_types is ignored/)]);
  });

  it("reads GPT-2's sizes under their standard names too, and refuses attention scalings it does not implement", () => {
    const { n_embd: _e, n_layer: _l, ...rest } = GPT2;
    expect(parseConfig({ ...rest, hidden_size: 96, num_hidden_layers: 3 })).toMatchObject({ hiddenSize: 96, numLayers: 3 });
    expect(thrown(() => parseConfig({ ...GPT2, hidden_size: 64 }))).toBeInstanceOf(ConflictingConfigError);
    expect(thrown(() => parseConfig({ ...GPT2, scale_attn_by_inverse_layer_idx: true }))).toMatchObject({ field: 'scale_attn_by_inverse_layer_idx' });
    expect(thrown(() => parseConfig({ ...GPT2, scale_attn_weights: false }))).toMatchObject({ field: 'scale_attn_weights' });
    expect(parseConfig({ ...GPT2, activation_function: 'gelu_pytorch_tanh' }).activation).toBe('gelu_new');
  });

  it.each([
    [MISTRAL, 'tie_word_embeddings', 'true', /'tie_word_embeddings' must be true or false, got "true"/],
    [GPT2, 'tie_word_embeddings', 0, /'tie_word_embeddings' must be true or false, got 0/],
    [MISTRAL, 'eos_token_id', 'three', /'eos_token_id' must be a token id or a list of them, got "three"/],
    [MISTRAL, 'eos_token_id', [2, -1], /'eos_token_id' must be a token id or a list of them/],
    [MISTRAL, 'bos_token_id', [1], /'bos_token_id' must be a token id, got an array of 1/],
    [{ ...MISTRAL, architectures: ['LlamaForCausalLM'] }, 'attention_bias', 'false', /'attention_bias' must be true or false/],
    [{ ...MISTRAL, architectures: ['LlamaForCausalLM'] }, 'mlp_bias', 1, /'mlp_bias' must be true or false/],
    [{ ...MISTRAL, architectures: ['Qwen2ForCausalLM'] }, 'use_sliding_window', 'yes', /'use_sliding_window' must be true or false/],
    [MISTRAL, 'architectures', 'MistralForCausalLM', /'architectures' must be a list of class names, got "MistralForCausalLM"/],
    [{ ...MISTRAL, architectures: undefined }, 'model_type', 5, /'model_type' must be a string, got 5/],
  ])('refuses a field of the wrong JSON type, naming it: %#', (config, key, value, message) => {
    const e = thrown(() => parseConfig({ ...config, model_type: (config as { architectures?: string[] }).architectures?.[0] === 'GPT2LMHeadModel' ? 'gpt2' : undefined, [key]: value }));
    expect(e).toBeInstanceOf(InvalidConfigError);
    expect((e as Error).message).toMatch(message);
  });
});

describe('batches', () => {
  it('reject bad rows with clear errors', async () => {
    const { prepareBatch } = await import('../../src/model/batch.js');
    expect(() => prepareBatch({ ids: [1, 2, 99], B: 1 }, 10, 64)).toThrow(/outside the vocabulary/);
    expect(() => prepareBatch({ ids: [[1, 2], [3]] }, 10, 64)).toThrow(/different lengths/);
    expect(() => prepareBatch({ ids: [1, 2, 3], B: 2 }, 10, 64)).toThrow(/do not form 2 rows/);
    expect(() => prepareBatch({ ids: [1, 2, 3], B: 1, lossMask: [1] }, 10, 64)).toThrow(/lossMask/);
    expect(() => prepareBatch({ ids: new Array(65).fill(1), B: 1 }, 10, 64)).toThrow(/positions/);
  });

  it('derive per-document positions and shifted targets with the loss mask', async () => {
    const { prepareBatch } = await import('../../src/model/batch.js');
    const b = prepareBatch({ ids: [5, 6, 7, 8, 9, 1], B: 1, segments: [0, 0, 0, 1, 1, 1], lossMask: [0, 0, 1, 0, 1, 1] }, 10, 64);
    expect(Array.from(b.positions)).toEqual([0, 1, 2, 0, 1, 2]);
    expect(Array.from(b.targets)).toEqual([-100, 7, -100, 9, 1, -100]);
    expect(b.targetCount).toBe(3);
  });
});

describe('expected weights', () => {
  const tiny = parseConfig({ ...QWEN2_05B, hidden_size: 8, intermediate_size: 12, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, vocab_size: 11 });
  const have = () => new Map(expectedWeights(tiny).map((w) => [w.name, { shape: w.shape! }]));

  it('lists every tensor with HF names and [out, in] shapes', () => {
    const w = expectedWeights(tiny);
    expect(w).toHaveLength(1 + 2 * 12 + 1); // embeddings, 12 per layer (with q/k/v biases), final norm; tied head
    expect(w.find((x) => x.name === 'model.layers.1.self_attn.k_proj.weight')!.shape).toEqual([4, 8]);
    expect(w.find((x) => x.name === 'model.layers.0.mlp.down_proj.weight')!.shape).toEqual([8, 12]);
  });

  it('reports missing tensors and config/weights disagreements', () => {
    const missing = have();
    missing.delete('model.layers.1.mlp.up_proj.weight');
    expect(() => resolveWeights(tiny, missing, 'm.safetensors')).toThrow(/missing 1 tensor.*up_proj/);
    const wrong = have();
    wrong.set('model.embed_tokens.weight', { shape: [12, 8] });
    const err = (() => {
      try {
        resolveWeights(tiny, wrong, 'm.safetensors');
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(InvalidModelFileError);
    expect(String(err)).toMatch(/\[12,8\].*\[11,8\]/);
  });

  it('finds GPT-2 weights with or without the transformer. prefix', () => {
    const c = parseConfig({ ...GPT2, n_embd: 8, n_head: 2, n_layer: 1, n_positions: 16, vocab_size: 10 });
    const bare = new Map(expectedWeights(c).map((w) => [w.name.replace('transformer.', ''), { shape: w.shape! }]));
    const resolved = resolveWeights(c, bare);
    expect(resolved.get('transformer.h.0.attn.c_attn.weight')).toBe('h.0.attn.c_attn.weight');
  });
});
