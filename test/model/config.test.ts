import { describe, expect, it } from 'vitest';
import { InvalidModelFileError } from '../../src/io/safetensors.js';
import { InvalidConfigError, parseConfig, UnsupportedArchitectureError } from '../../src/model/config.js';
import { expectedWeights, resolveWeights } from '../../src/model/weights.js';

// Field values of published checkpoints' config.json files (abridged to the fields that matter).
const QWEN2_05B = {
  architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', hidden_size: 896, intermediate_size: 4864,
  num_hidden_layers: 24, num_attention_heads: 14, num_key_value_heads: 2, vocab_size: 151936,
  max_position_embeddings: 32768, rope_theta: 1000000.0, rms_norm_eps: 1e-6, tie_word_embeddings: true,
  sliding_window: 32768, use_sliding_window: false, hidden_act: 'silu', bos_token_id: 151643, eos_token_id: 151643,
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
    expect(err!.message).toMatch(/BertForMaskedLM.*LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM, GPT2LMHeadModel/);
    expect(() => parseConfig({ model_type: 'llama' })).toThrow(UnsupportedArchitectureError);
  });

  it.each([
    ['not JSON', '{"architectures": ['],
    ['a missing field', JSON.stringify({ ...TINYLLAMA, hidden_size: undefined })],
    ['heads not a multiple of kv heads', JSON.stringify({ ...TINYLLAMA, num_key_value_heads: 5 })],
    ['an unsupported activation', JSON.stringify({ ...TINYLLAMA, hidden_act: 'relu' })],
    ['rope scaling', JSON.stringify({ ...TINYLLAMA, rope_scaling: { rope_type: 'llama3', factor: 8 } })],
  ])('rejects %s', (_what, text) => {
    expect(() => parseConfig(text)).toThrow(InvalidConfigError);
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
  const have = () => new Map(expectedWeights(tiny).map((w) => [w.name, { shape: w.shape }]));

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
    const bare = new Map(expectedWeights(c).map((w) => [w.name.replace('transformer.', ''), { shape: w.shape }]));
    const resolved = resolveWeights(c, bare);
    expect(resolved.get('transformer.h.0.attn.c_attn.weight')).toBe('h.0.attn.c_attn.weight');
  });
});
