/**
 * Every field of PEFT's LoraConfig (peft 0.21, src/peft/tuners/lora/config.py) and what reading an
 * adapter_config.json does with it: read, of no effect on the adapter's math here, or refused by name
 * when set to a value whose math this engine does not implement. A field PEFT adds later is named in a
 * warning (test/interop/fields.node.test.ts fails until it is classified here).
 */
import { UnsupportedAdapterError } from '../../errors.js';
import { checkFields, describeJson, unset, type FieldTable } from '../../io/config-fields.js';
import { JsonNumber, type StrictJson } from '../../io/strict-json.js';
import { initMutatesBase, LORA_INITS } from './init.js';

type Value = StrictJson | undefined;

/**
 * Initialisations whose saved adapter is plain LoRA on the unchanged base: PEFT's update_layer
 * (tuners/lora/layer.py) only draws A and B for these (eva zeroes B until its data-driven step, which a
 * saved adapter's tensors replace), never touching the base weight.
 */
const PLAIN_INITS = new Set<unknown>([true, false, 'gaussian', 'orthogonal', 'eva']);

/**
 * Initialisations PEFT repeats on load to rewrite the base into W - s B0 A0 before the saved A and B
 * apply, which this engine repeats too (LoRA's `init`): deterministic decompositions (exact SVD, QR),
 * whose residual is the same whatever sign conventions the two libraries' factorizations take (B0 A0 is
 * a projection).
 */
export const REPEATABLE_INITS = new Set<unknown>(LORA_INITS.filter((init) => initMutatesBase(init)));

/** Initialisations that rewrite the base weight in a way this engine cannot repeat (randomized, data-driven). */
function unrepeatable(v: Value): boolean {
  return typeof v === 'string' && !REPEATABLE_INITS.has(v) && (v.startsWith('pissa') || ['corda', 'loftq', 'lora_ga'].includes(v.toLowerCase()));
}

const onlyUnset = (what: string) => ({ supported: `unset: ${what} is not implemented`, ok: unset });

export const LORA_CONFIG_FIELDS: FieldTable<Value> = {
  peft_type: 'read', task_type: 'read', r: 'read', lora_alpha: 'read', lora_dropout: 'read', use_rslora: 'read',
  rank_pattern: 'read', alpha_pattern: 'read', use_dora: 'read',
  // Which modules are adapted is read from the tensors the file holds (exclude_modules and target_modules
  // only decide what PEFT creates; a module without tensors stays at B = 0, the base).
  target_modules: 'inert', exclude_modules: 'inert',
  // PEFT sets it from the layer type itself (Conv1D: true, Linear: false; tuners/lora/model.py).
  fan_in_fan_out: 'inert',
  init_lora_weights: {
    supported: "true, false, 'gaussian', 'orthogonal' or 'eva' (an adapter on the unchanged base), or 'pissa' or 'olora' (on the residual, which loading repeats)",
    ok: (v) => PLAIN_INITS.has(v instanceof JsonNumber ? v.value : v) || REPEATABLE_INITS.has(v),
  },
  bias: { supported: "'none': LoRA biases and trained base biases are not implemented", ok: (v) => v === undefined || v === null || v === 'none' },
  lora_bias: onlyUnset('a bias on lora_B'),
  modules_to_save: onlyUnset('training whole extra modules'),
  trainable_token_indices: onlyUnset('training token embeddings'),
  layers_to_transform: onlyUnset('adapting a subset of layers'),
  layer_replication: onlyUnset('layer replication'),
  target_parameters: onlyUnset('adapting parameters outside linear layers'),
  alora_invocation_tokens: onlyUnset('activated LoRA (aLoRA)'),
  use_qalora: onlyUnset('QA-LoRA'),
  megatron_config: onlyUnset('Megatron parallel layers'),
  loftq_config: onlyUnset('LoftQ'),
  velora_config: onlyUnset('VeLoRA'),
  monteclora_config: onlyUnset('MonteCLoRA'),
  use_bdlora: onlyUnset('block-diagonal LoRA'),
  arrow_config: onlyUnset('Arrow routing'),
  kasa_config: onlyUnset('KaSA'),
  // Settings of an initialisation or of options refused above: no effect on a saved adapter's math.
  eva_config: 'inert', corda_config: 'inert', lora_ga_config: 'inert', qalora_group_size: 'inert', layers_pattern: 'inert',
  ensure_weight_tying: 'inert', megatron_core: 'inert',
  auto_mapping: 'inert', peft_version: 'inert', base_model_name_or_path: 'inert', revision: 'inert', inference_mode: 'inert', runtime_config: 'inert',
};

/** Checks an adapter_config.json's fields: throws UnsupportedAdapterError for unimplemented math, returns warnings. */
export function checkLoraConfigFields(json: Map<string, StrictJson>): string[] {
  const init = json.get('init_lora_weights');
  if (unrepeatable(init)) {
    throw new UnsupportedAdapterError('init_lora_weights', String(init), `LoRA adapter: init_lora_weights is ${describeJson(init)}, so PEFT applies it to a base it rewrites on load (W - s B0 A0) by a decomposition this engine cannot repeat exactly; save it converted to plain LoRA in PEFT (save_pretrained(..., path_initial_model_for_weight_conversion=<the initial adapter>)) and load that`);
  }
  return checkFields(json, LORA_CONFIG_FIELDS, {
    file: 'adapter_config.json',
    definedBy: "PEFT 0.21's LoraConfig",
    refuse: (field, value, supported) => new UnsupportedAdapterError(field, describeJson(value as Value), `LoRA adapter: ${field} is ${describeJson(value as Value)}; this engine supports ${supported}`),
  });
}
