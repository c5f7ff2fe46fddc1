/**
 * Mistral: every layer attends within `sliding_window` when it is set; transformers' MistralForCausalLM
 * ignores `layer_types` (it warns and windows every layer), and so does this engine, saying so.
 */
import { DECODER_FIELDS, decoderConfig, decoderParts, windows } from './decoder.js';
import type { FamilyConfig } from './family.js';
import { layerTypesOf } from './qwen2.js';
import { configInt } from '../hf-config.js';

export const mistral: FamilyConfig = {
  architecture: 'MistralForCausalLM',
  modelType: 'mistral',
  parts: decoderParts,
  fields: { ...DECODER_FIELDS, head_dim: 'read', sliding_window: 'read', layer_types: 'read' },
  parse(raw, warnings) {
    const numLayers = configInt(raw, 'num_hidden_layers');
    const window = raw.sliding_window == null ? null : configInt(raw, 'sliding_window');
    const types = layerTypesOf(raw, numLayers);
    if (types?.includes('full_attention') && window !== null) {
      warnings.push(`config.json layer_types is ignored: transformers' ${this.architecture} windows every layer to sliding_window ${window} (for per-layer types, transformers uses other architectures), and so does this engine`);
    }
    return decoderConfig(raw, this.architecture, () => ({
      qkvBias: false, outputBias: false, mlpBias: false, ...windows(window, new Array<boolean>(numLayers).fill(true)),
    }), warnings);
  },
};
