/**
 * Gemma 2 (2B, 9B, 27B): the Llama-style decoder with Gemma's changes (transformers 5.18's
 * configuration_gemma2.py and modeling_gemma2.py):
 * - RMSNorm computed as x * rstd * (1 + w), the weight stored as w;
 * - token embeddings multiplied by sqrt(hidden_size), an f32;
 * - a norm before and after both attention and the MLP (input_layernorm, post_attention_layernorm,
 *   pre_feedforward_layernorm, post_feedforward_layernorm);
 * - a GeGLU MLP (hidden_activation, gelu_pytorch_tanh by default);
 * - attention scaled by 1 / sqrt(query_pre_attn_scalar), not 1 / sqrt(head_dim);
 * - soft-capping, c * tanh(x / c), of the attention scores (attn_logit_softcapping, 50) and of the
 *   final logits (final_logit_softcapping, 30);
 * - sliding windows on the layers layer_types names (by default every other one, from the first).
 */
import { DECODER_FIELDS, type DecoderChoices, decoderConfig, decoderParts, windows } from './decoder.js';
import type { FamilyConfig } from './family.js';
import { LAYER_TYPES, layerTypesOf } from './qwen2.js';
import { brief, describeValue } from '../../io/strict-json.js';
import { configBool, configInt, configNumber, InvalidConfigError, type FieldTable, type Json } from '../hf-config.js';

/** transformers' ACT2FN names of the GELUs Gemma's MLP may gate with, by the engine's name. */
const GATE_ACTIVATIONS: Record<string, 'gelu_new' | 'gelu'> = { gelu_pytorch_tanh: 'gelu_new', gelu_new: 'gelu_new', gelu: 'gelu' };

/** The fields Gemma 2 and Gemma 3 share. */
export const GEMMA_FIELDS: FieldTable = {
  ...DECODER_FIELDS,
  head_dim: 'read', attention_bias: 'read', query_pre_attn_scalar: 'read', sliding_window: 'read', layer_types: 'read',
  hidden_activation: 'read', final_logit_softcapping: 'read', attn_logit_softcapping: 'read',
  // Gemma's config classes have no hidden_act (their modeling reads hidden_activation); Hub configs carry one anyway.
  hidden_act: { warning: (v) => (v == null || Object.hasOwn(GATE_ACTIVATIONS, String(v)) ? null : `'${brief(String(v))}' is ignored: transformers' Gemma reads hidden_activation, and so does this engine`) },
  use_bidirectional_attention: { supported: 'false: causal attention', ok: (v) => v == null || v === false },
  // The cache layout transformers' generate() picks (hybrid: sliding and full layers); not the model's math.
  cache_implementation: 'inert',
  // An older name of sliding_window that transformers no longer reads.
  sliding_window_size: 'inert',
};

/** What Gemma 2 and Gemma 3 decide alike, from a config and its per-layer attention types. */
export function gemmaChoices(raw: Json, types: readonly string[], hiddenSize: number): DecoderChoices {
  const act = String(raw.hidden_activation ?? 'gelu_pytorch_tanh');
  if (!Object.hasOwn(GATE_ACTIVATIONS, act)) throw new InvalidConfigError(`hidden_activation '${brief(act)}' is not supported (${Object.keys(GATE_ACTIVATIONS).join(', ')})`);
  const bias = configBool(raw, 'attention_bias', false);
  const window = raw.sliding_window == null ? null : configInt(raw, 'sliding_window');
  return {
    activation: GATE_ACTIVATIONS[act],
    qkvBias: bias,
    outputBias: bias,
    mlpBias: false,
    normWeightOffset: 1,
    // Gemma2TextScaledWordEmbedding: torch.tensor(hidden_size ** 0.5), a float32.
    embedScale: Math.fround(Math.sqrt(hiddenSize)),
    postNorms: true,
    attentionScale: 1 / Math.sqrt(configNumber(raw, 'query_pre_attn_scalar', 256)),
    ...windows(window, types.map((t) => t === 'sliding_attention')),
  };
}

/** A soft cap: a positive number, or null for none. */
export function softcap(raw: Json, key: string, fallback: number | null): number | null {
  const v = raw[key] === undefined ? fallback : raw[key];
  if (v === null) return null;
  if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) throw new InvalidConfigError(`'${key}' must be a positive number or null, got ${describeValue(v)}`);
  return v;
}

export const gemma2: FamilyConfig = {
  architecture: 'Gemma2ForCausalLM',
  modelType: 'gemma2',
  parts: decoderParts,
  fields: GEMMA_FIELDS,
  parse(raw, warnings) {
    const numLayers = configInt(raw, 'num_hidden_layers');
    // Gemma2Config.__post_init__: sliding on even layers (0, 2, ...), full on odd ones.
    const types = layerTypesOf(raw, numLayers) ?? Array.from({ length: numLayers }, (_, i) => LAYER_TYPES[(i + 1) % 2 ? 1 : 0]);
    const hiddenSize = configInt(raw, 'hidden_size');
    const defaults = { head_dim: raw.head_dim ?? 256, tie_word_embeddings: raw.tie_word_embeddings ?? true, max_position_embeddings: raw.max_position_embeddings ?? 8192 };
    return decoderConfig({ ...raw, ...defaults }, this.architecture, () => ({
      ...gemmaChoices(raw, types, hiddenSize),
      attentionSoftcap: softcap(raw, 'attn_logit_softcapping', 50),
      finalLogitSoftcap: softcap(raw, 'final_logit_softcapping', 30),
    }), warnings);
  },
};
