/**
 * Phi-3 (Phi-3-mini-4k, Phi-3-medium-4k): the Llama-style decoder with q, k and v fused into one
 * qkv_proj and gate and up into one gate_up_proj (gate first), no biases, and `sliding_window` on every
 * layer when set (transformers 5.18's configuration_phi3.py and modeling_phi3.py). Phi3's rotary
 * embedding applies `partial_rotary_factor` to every RoPE type (Phi-4-mini rotates 3/4 of each head), and
 * the long-context variants use `longrope`: both are refused by name until implemented.
 */
import { decoderConfig, DECODER_FIELDS, windows } from './decoder.js';
import type { FamilyConfig } from './family.js';
import { configInt, dropoutField, standardRope, UnsupportedConfigError } from '../hf-config.js';

export const phi3: FamilyConfig = {
  architecture: 'Phi3ForCausalLM',
  modelType: 'phi3',
  fields: {
    ...DECODER_FIELDS,
    // Not a Phi3Config field, but modeling_phi3.py reads it when a config has it.
    head_dim: 'read',
    sliding_window: 'read',
    // The pre-training context longrope switches its factors at; only longrope reads it, and longrope is refused.
    original_max_position_embeddings: 'inert',
    resid_pdrop: dropoutField('resid_pdrop'), embd_pdrop: dropoutField('embd_pdrop'),
    // Published Phi-3 configs carry it; transformers' Phi3 builds its projections without biases whatever it says.
    attention_bias: { warning: (v) => (v ? `${String(v)} is ignored: transformers' Phi3ForCausalLM has no biases, and neither does this engine` : null) },
  },
  parse(raw, warnings) {
    const rope = standardRope(raw, { defaultTheta: 10000 });
    const partial = rope.flat?.parameters.partial_rotary_factor;
    if (partial !== undefined && partial !== null && partial !== 1) {
      throw new UnsupportedConfigError(`${rope.flat!.key}.partial_rotary_factor`, partial, `1: transformers' ${this.architecture} rotates only part of each head with it (Phi-4-mini), which this engine does not implement yet`);
    }
    const numLayers = configInt(raw, 'num_hidden_layers');
    const window = raw.sliding_window == null ? null : configInt(raw, 'sliding_window');
    return decoderConfig({ ...raw, rms_norm_eps: raw.rms_norm_eps ?? 1e-5, max_position_embeddings: raw.max_position_embeddings ?? 4096 }, this.architecture, () => ({
      qkvBias: false, outputBias: false, mlpBias: false, fusedProjections: true, ...windows(window, new Array<boolean>(numLayers).fill(true)),
    }), warnings);
  },
};
