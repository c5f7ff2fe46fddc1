/**
 * Gemma 3 text models (Gemma3ForCausalLM, model_type gemma3_text: 270M, 1B, and the 4B-27B language
 * models): Gemma 2's decoder (gemma2.ts) with a per-head RMSNorm (1 + w) on queries and keys before RoPE,
 * five sliding layers to one full by default (`sliding_window_pattern`), and two RoPEs: full layers at
 * rope_theta with rope_scaling, sliding ones plain at rope_local_base_freq (transformers 5.18's
 * configuration_gemma3.py and modeling_gemma3.py). transformers' Gemma3Attention never passes
 * attn_logit_softcapping to the attention, so it is ignored here too, with a warning.
 */
import { decoderConfig, decoderParts } from './decoder.js';
import type { FamilyConfig } from './family.js';
import { GEMMA_FIELDS, gemmaChoices, softcap } from './gemma2.js';
import { LAYER_TYPES, layerTypesOf } from './qwen2.js';
import { configInt } from '../hf-config.js';

export const gemma3: FamilyConfig = {
  architecture: 'Gemma3ForCausalLM',
  modelType: 'gemma3_text',
  parts: decoderParts,
  fields: {
    ...GEMMA_FIELDS,
    rope_local_base_freq: 'read', sliding_window_pattern: 'read', _sliding_window_pattern: 'read',
    attn_logit_softcapping: { warning: (v) => (v == null ? null : `${String(v)} is ignored: transformers' Gemma3ForCausalLM never applies it, and neither does this engine`) },
  },
  parse(raw, warnings) {
    const numLayers = configInt(raw, 'num_hidden_layers');
    // Gemma3TextConfig.__post_init__: sliding unless (i + 1) is a multiple of the pattern (default 6).
    const key = raw.sliding_window_pattern != null ? 'sliding_window_pattern' : '_sliding_window_pattern';
    const pattern = raw[key] == null ? 6 : configInt(raw, key);
    const types = layerTypesOf(raw, numLayers) ?? Array.from({ length: numLayers }, (_, i) => LAYER_TYPES[(i + 1) % pattern ? 1 : 0]);
    const hiddenSize = configInt(raw, 'hidden_size');
    const defaults = { head_dim: raw.head_dim ?? 256, tie_word_embeddings: raw.tie_word_embeddings ?? true, max_position_embeddings: raw.max_position_embeddings ?? 131072 };
    return decoderConfig({ ...raw, ...defaults }, this.architecture, () => ({
      ...gemmaChoices(raw, types, hiddenSize),
      qkNorm: true,
      finalLogitSoftcap: softcap(raw, 'final_logit_softcapping', null),
    }), warnings, types, { layout: { defaultTheta: 1e6, splitByLayerType: { fullTheta: 1e6, slidingTheta: 1e4 } }, perLayer: true });
  },
};
