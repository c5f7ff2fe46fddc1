/**
 * Qwen3 (0.6B to 32B dense): Qwen2's decoder with a per-head RMSNorm on the queries and keys before RoPE
 * (q_norm, k_norm over head_dim, with rms_norm_eps), an explicit head_dim (default 128, not hidden /
 * heads), `attention_bias` on q, k, v and o (default none) and Qwen2's sliding windows
 * (transformers 5.18's configuration_qwen3.py and modeling_qwen3.py).
 */
import { DECODER_FIELDS, decoderConfig, decoderParts } from './decoder.js';
import type { FamilyConfig } from './family.js';
import { qwenWindows } from './qwen2.js';
import { configBool, configInt } from '../hf-config.js';

export const qwen3: FamilyConfig = {
  architecture: 'Qwen3ForCausalLM',
  modelType: 'qwen3',
  parts: decoderParts,
  fields: {
    ...DECODER_FIELDS,
    head_dim: 'read', attention_bias: 'read',
    use_sliding_window: 'read', sliding_window: 'read', max_window_layers: 'read', layer_types: 'read',
  },
  parse(raw, warnings) {
    const { types, slidingWindow, layerWindows } = qwenWindows(raw, configInt(raw, 'num_hidden_layers'));
    const bias = configBool(raw, 'attention_bias', false);
    // Qwen3Config's head_dim defaults to 128 whatever the hidden size.
    return decoderConfig({ ...raw, head_dim: raw.head_dim ?? 128 }, this.architecture, () => ({
      qkvBias: bias, outputBias: bias, mlpBias: false, qkNorm: true, slidingWindow, layerWindows,
    }), warnings, types);
  },
};
