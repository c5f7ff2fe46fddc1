/**
 * Phi-3, Phi-3.5 and Phi-4-mini (Phi3ForCausalLM): the Llama-style decoder with q, k and v fused into one
 * qkv_proj and gate and up into one gate_up_proj (gate first), no biases, `sliding_window` on every layer
 * when set, `partial_rotary_factor` applied with every RoPE type (Phi-4-mini rotates 3/4 of each head) and
 * LongRoPE on the long-context variants (transformers 5.18's configuration_phi3.py, modeling_phi3.py and
 * modeling_rope_utils.py).
 */
import { DECODER_FIELDS, decoderConfig, decoderParts, windows } from './decoder.js';
import type { FamilyConfig } from './family.js';
import { configInt, dropoutField, type Json } from '../hf-config.js';

/** Phi3Config reads the RoPE types 'su' and 'yarn' of early Phi-3 configs as 'longrope' (convert_rope_params_to_dict). */
function longropeNames(raw: Json): Json {
  const out: Json = {};
  for (const key of ['rope_scaling', 'rope_parameters']) {
    const dict = raw[key];
    if (!dict || typeof dict !== 'object' || Array.isArray(dict)) continue;
    const d = dict as Json;
    const renamed = Object.fromEntries(['type', 'rope_type'].filter((k) => d[k] === 'su' || d[k] === 'yarn').map((k) => [k, 'longrope']));
    if (Object.keys(renamed).length) out[key] = { ...d, ...renamed };
  }
  return out;
}

export const phi3: FamilyConfig = {
  architecture: 'Phi3ForCausalLM',
  modelType: 'phi3',
  parts: decoderParts,
  fields: {
    ...DECODER_FIELDS,
    // Not a Phi3Config field, but modeling_phi3.py reads it when a config has it.
    head_dim: 'read',
    sliding_window: 'read',
    // The pre-training context LongRoPE switches its factors at (read with rope_scaling).
    original_max_position_embeddings: 'read',
    resid_pdrop: dropoutField('resid_pdrop'), embd_pdrop: dropoutField('embd_pdrop'),
    // Published Phi-3 and Phi-4-mini configs carry these; transformers' Phi3 builds its layers without biases whatever they say.
    ...Object.fromEntries(['attention_bias', 'mlp_bias', 'lm_head_bias'].map((k) => [k, { warning: (v: unknown) => (v ? `${String(v)} is ignored: transformers' Phi3ForCausalLM has no biases, and neither does this engine` : null) }])),
    // Settings of Microsoft's own modeling code in Phi-4-mini's config, which transformers' Phi3 does not read.
    full_attn_mod: 'inert', interpolate_factor: 'inert',
  },
  parse(raw, warnings) {
    const numLayers = configInt(raw, 'num_hidden_layers');
    const window = raw.sliding_window == null ? null : configInt(raw, 'sliding_window');
    return decoderConfig({ ...raw, ...longropeNames(raw), rms_norm_eps: raw.rms_norm_eps ?? 1e-5, max_position_embeddings: raw.max_position_embeddings ?? 4096 }, this.architecture, () => ({
      qkvBias: false, outputBias: false, mlpBias: false, fusedProjections: true, ...windows(window, new Array<boolean>(numLayers).fill(true)),
    }), warnings, undefined, { partialRotary: true, longrope: true });
  },
};
