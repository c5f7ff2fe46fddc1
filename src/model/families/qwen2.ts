/**
 * Qwen2 and Qwen2.5: biases on q, k and v (never on o or the MLP, whatever the config says), and sliding
 * windows on the layers `layer_types` names, or with `use_sliding_window` on those from
 * `max_window_layers` on (transformers 5.18's Qwen2Config.__post_init__ and modeling_qwen2.py).
 */
import { InvalidConfigError } from '../hf-config.js';
import { brief } from '../../io/strict-json.js';
import { DECODER_FIELDS, type DecoderChoices, decoderConfig, decoderParts, windows } from './decoder.js';
import type { FamilyConfig } from './family.js';
import { configBool, configInt, type Json } from '../hf-config.js';

export const LAYER_TYPES = ['full_attention', 'sliding_attention'] as const;

/** A config's layer_types, checked: one known type per layer. */
export function layerTypesOf(raw: Json, numLayers: number): string[] | null {
  if (raw.layer_types == null) return null;
  if (!Array.isArray(raw.layer_types)) throw new InvalidConfigError(`'layer_types' must be a list, got ${typeof raw.layer_types}`);
  if (raw.layer_types.length !== numLayers) throw new InvalidConfigError(`layer_types lists ${raw.layer_types.length} layers, num_hidden_layers is ${numLayers}`);
  return raw.layer_types.map((t, i) => {
    if (!(LAYER_TYPES as readonly unknown[]).includes(t)) throw new InvalidConfigError(`layer_types[${i}] '${brief(String(t))}' is not supported (${LAYER_TYPES.join(', ')})`);
    return t as string;
  });
}

/**
 * Qwen's sliding windows: on the layers `layer_types` names, or with `use_sliding_window` on those from
 * `max_window_layers` on (Qwen2Config and Qwen3Config.__post_init__); also the layer types.
 */
export function qwenWindows(raw: Json, numLayers: number): { types: string[]; given: boolean } & Pick<DecoderChoices, 'slidingWindow' | 'layerWindows'> {
  const window = configBool(raw, 'use_sliding_window', false) && raw.sliding_window != null ? configInt(raw, 'sliding_window') : null;
  const given = layerTypesOf(raw, numLayers);
  const from = raw.max_window_layers == null ? 28 : configInt(raw, 'max_window_layers');
  const types = given ?? Array.from({ length: numLayers }, (_, i) => (window !== null && i >= from ? 'sliding_attention' : 'full_attention'));
  return { types, given: given !== null, ...windows(window, types.map((t) => t === 'sliding_attention')) };
}

export const qwen2: FamilyConfig = {
  architecture: 'Qwen2ForCausalLM',
  modelType: 'qwen2',
  parts: decoderParts,
  fields: {
    ...DECODER_FIELDS,
    // Not a Qwen2Config field, but modeling_qwen2.py reads it when a config has it.
    head_dim: 'read',
    use_sliding_window: 'read', sliding_window: 'read', max_window_layers: 'read', layer_types: 'read',
  },
  parse(raw, warnings) {
    const { types, slidingWindow, layerWindows } = qwenWindows(raw, configInt(raw, 'num_hidden_layers'));
    return decoderConfig(raw, this.architecture, () => ({ qkvBias: true, outputBias: false, mlpBias: false, slidingWindow, layerWindows }), warnings, types);
  },
};
