/** Llama (Llama 2, Llama 3.x with its RoPE scaling, TinyLlama, SmolLM, ...): LlamaConfig's fields (transformers' configuration_llama.py). */
import { DECODER_FIELDS, decoderConfig, decoderParts } from './decoder.js';
import type { FamilyConfig } from './family.js';
import { configBool } from '../hf-config.js';

export const llama: FamilyConfig = {
  architecture: 'LlamaForCausalLM',
  modelType: 'llama',
  parts: decoderParts,
  fields: {
    ...DECODER_FIELDS,
    head_dim: 'read', attention_bias: 'read', mlp_bias: 'read',
    // transformers 5's modeling_llama.py never reads it; in 4.x it split the same products into slices.
    pretraining_tp: 'inert',
  },
  parse(raw, warnings) {
    const bias = configBool(raw, 'attention_bias', false);
    return decoderConfig(raw, this.architecture, (numLayers) => ({
      qkvBias: bias, outputBias: bias, mlpBias: configBool(raw, 'mlp_bias', false), slidingWindow: null, layerWindows: new Array<null>(numLayers).fill(null),
    }), warnings);
  },
};
