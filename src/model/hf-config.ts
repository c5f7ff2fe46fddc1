/**
 * The two layouts of Hugging Face config.json files, read into one, and the rules by which each field is
 * read, refused or reported.
 *
 * transformers 4 keeps RoPE settings at the top level (`rope_theta`, `rope_scaling` with `rope_type` or
 * its old name `type`, `partial_rotary_factor`, Gemma 3's `rope_local_base_freq`) and the weights' dtype in
 * `torch_dtype`; transformers 5 writes `rope_parameters` (one dict, or one per layer type named in
 * `layer_types`) and `dtype`. The rules follow transformers 5.18's RotaryEmbeddingConfigMixin
 * (src/transformers/modeling_rope_utils.py: convert_rope_params_to_dict, standardize_rope_params): a value
 * inside `rope_parameters` wins over the top-level key, `rope_scaling` replaces `rope_parameters`,
 * `original_max_position_embeddings` defaults to `max_position_embeddings` for the types that use it.
 * Where transformers silently prefers one of two disagreeing values, this engine refuses the config and
 * names both keys: the file says two things, and only its author knows which was meant.
 */
import { WebGPUFinetuneError } from '../errors.js';
import { checkFields, type FieldRule, type FieldTable as ModelFieldTable } from '../io/config-fields.js';
import { brief, describeValue } from '../io/strict-json.js';

export type Json = Record<string, unknown>;

/** config.json is malformed: a field of the wrong type or out of range, or not JSON at all. */
export class InvalidConfigError extends WebGPUFinetuneError {
  constructor(message: string, code = 'invalid-config') {
    super(code, `config.json: ${message}`);
  }
}

/** config.json sets a field to a value that changes the model's math in a way this engine does not implement. */
export class UnsupportedConfigError extends InvalidConfigError {
  constructor(
    /** The field, as a path ('rope_parameters.rope_type'). */
    readonly field: string,
    readonly value: unknown,
    supported: string,
  ) {
    super(`${field} ${describeValue(value)} is not supported (${supported})`, 'unsupported-config');
  }
}

/** config.json states one setting twice (in both layouts) with different values. */
export class ConflictingConfigError extends InvalidConfigError {
  constructor(readonly fields: [string, string], values: [unknown, unknown], note = '') {
    super(`${fields[0]} (${describeValue(values[0])}) and ${fields[1]} (${describeValue(values[1])}) disagree${note}; keep one of them`, 'config-conflict');
  }
}

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Deep equality of parsed JSON values (numbers by value: 10000 and 10000.0 are one). */
function sameJson(a: unknown, b: unknown): boolean {
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => sameJson(x, b[i]));
  if (isObject(a) && isObject(b)) {
    const keys = new Set([...Object.keys(a), ...Object.keys(b)]);
    return [...keys].every((k) => sameJson(a[k], b[k]));
  }
  return a === b;
}

/**
 * The keys of transformers 5.18's RopeParameters (modeling_rope_utils.py); the interop tests fail when
 * a newer release adds one, so that its meaning is decided here rather than ignored.
 */
export const ROPE_PARAMETER_KEYS = [
  'rope_type', 'rope_theta', 'partial_rotary_factor', 'factor', 'original_max_position_embeddings', 'attention_factor',
  'beta_fast', 'beta_slow', 'short_factor', 'long_factor', 'low_freq_factor', 'high_freq_factor',
] as const;

/** One layer type's RoPE, as transformers 5 standardises it. */
export interface RopeSettings {
  /** 'default' (plain RoPE), 'linear', 'dynamic', 'yarn', 'longrope', 'llama3', ... */
  ropeType: string;
  theta: number;
  /** Every standardised key (rope_type, rope_theta, factor, partial_rotary_factor, ...), for the family to read or refuse. */
  parameters: Json;
  /** Where the settings were read, for messages: 'rope_parameters', 'rope_parameters.sliding_attention', 'rope_scaling'. */
  key: string;
}

/** RoPE as a config gives it: per layer type when split by layer type (Gemma 3), else one for all layers. */
export interface StandardRope {
  flat: RopeSettings | null;
  byLayerType: Map<string, RopeSettings | null> | null;
}

export interface RopeLayout {
  /** The family's theta when a config gives none (transformers' default_theta: 10000 for most). */
  defaultTheta: number;
  /**
   * Gemma 3's split: full-attention layers take rope_theta and rope_scaling, sliding ones plain RoPE at
   * rope_local_base_freq (transformers' Gemma3Config.convert_rope_params_to_dict); the defaults per kind.
   */
  splitByLayerType?: { fullTheta: number; slidingTheta: number };
}

/** A RoPE dict with `type` read as `rope_type` (its transformers 4 name); both given must agree. */
function ropeTypeOf(dict: Json, key: string): Json {
  const out = { ...dict };
  if (dict.type !== undefined) {
    if (dict.rope_type !== undefined && dict.rope_type !== dict.type) throw new ConflictingConfigError([`${key}.rope_type`, `${key}.type`], [dict.rope_type, dict.type]);
    out.rope_type = dict.type;
    delete out.type;
  }
  out.rope_type ??= 'default';
  if (typeof out.rope_type !== 'string') throw new InvalidConfigError(`'${key}.rope_type' must be a string, got ${describeValue(out.rope_type)}`);
  return out;
}

/**
 * Takes a top-level value (4.x) into a RoPE dict (5.x) unless the dict has it; both present must agree.
 * transformers keeps the dict's value silently (setdefault).
 */
function adopt(dict: Json, dictKey: string, raw: Json, topKey: string, name = topKey): void {
  const top = raw[topKey];
  if (top === undefined || top === null) return;
  const inner = dict[name];
  if (inner === undefined || inner === null) dict[name] = top;
  else if (!sameJson(inner, top)) throw new ConflictingConfigError([topKey, `${dictKey}.${name}`], [top, inner]);
}

function settings(dict: Json, key: string, raw: Json, defaultTheta: number): RopeSettings {
  const parameters = ropeTypeOf(dict, key);
  adopt(parameters, key, raw, 'rope_theta');
  adopt(parameters, key, raw, 'partial_rotary_factor');
  parameters.rope_theta ??= defaultTheta;
  const ropeType = parameters.rope_type as string;
  if (['llama3', 'yarn', 'longrope'].includes(ropeType)) {
    // Phi-3 keeps original_max_position_embeddings at the top level, and transformers lets it win.
    if (raw.original_max_position_embeddings != null) parameters.original_max_position_embeddings = raw.original_max_position_embeddings;
    else parameters.original_max_position_embeddings ??= raw.max_position_embeddings;
  }
  return { ropeType, theta: configNumber(parameters, 'rope_theta', defaultTheta, `${key}.rope_theta`), parameters, key };
}

/**
 * RoPE settings read from either layout (see the file comment). `layerTypes` are the config's layer
 * types: a `rope_parameters` whose keys are among them holds one dict per layer type.
 */
export function standardRope(raw: Json, layout: RopeLayout, layerTypes: readonly string[] = []): StandardRope {
  const scaling = raw.rope_scaling;
  const params = raw.rope_parameters;
  for (const [key, v] of [['rope_scaling', scaling], ['rope_parameters', params]] as const) {
    if (v !== undefined && v !== null && !isObject(v)) throw new InvalidConfigError(`'${key}' must be an object or null, got ${describeValue(v)}`);
  }
  const given = (v: unknown): v is Json => isObject(v) && Object.keys(v).length > 0;
  const nestedKeys = given(params) ? Object.keys(params).filter((k) => layerTypes.includes(k)) : [];
  if (nestedKeys.length && nestedKeys.length !== Object.keys(params as Json).length) {
    const stray = Object.keys(params as Json).find((k) => !nestedKeys.includes(k))!;
    throw new InvalidConfigError(`rope_parameters mixes per-layer-type dicts (${nestedKeys.join(', ')}) with '${brief(stray)}'`);
  }

  if (layout.splitByLayerType) return splitRope(raw, layout.splitByLayerType, nestedKeys.length ? (params as Json) : null, given(scaling) ? scaling : null, given(params) && !nestedKeys.length ? params : null);

  if (nestedKeys.length) {
    if (given(scaling)) throw new InvalidConfigError('rope_scaling (one dict) and rope_parameters (one per layer type) both set RoPE; transformers 5 reads rope_scaling alone: keep one of them');
    const byLayerType = new Map<string, RopeSettings | null>();
    for (const k of nestedKeys) {
      const dict = (params as Json)[k];
      if (dict !== null && !isObject(dict)) throw new InvalidConfigError(`'rope_parameters.${k}' must be an object or null, got ${describeValue(dict)}`);
      byLayerType.set(k, dict === null ? null : settings(dict, `rope_parameters.${k}`, raw, layout.defaultTheta));
    }
    return { flat: null, byLayerType };
  }
  if (given(scaling) && given(params)) {
    // transformers 5 replaces rope_parameters by rope_scaling; both are honoured here only when they agree.
    const a = ropeTypeOf(scaling, 'rope_scaling');
    const b = ropeTypeOf(params, 'rope_parameters');
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
      if (k === 'rope_theta' || k === 'partial_rotary_factor') {
        // transformers takes these from the top level (or its default) and drops rope_parameters' own.
        if (b[k] != null && a[k] == null && raw[k] == null) throw new InvalidConfigError(`rope_parameters.${k} is set beside rope_scaling, which transformers 5 reads instead (dropping rope_parameters): give '${k}' at the top level too, or keep one of the two dicts`);
        continue; // compared with the top-level key in settings()
      }
      if (!sameJson(a[k], b[k])) throw new ConflictingConfigError([`rope_scaling.${k}`, `rope_parameters.${k}`], [a[k], b[k]], ' (transformers 5 reads rope_scaling and drops rope_parameters)');
    }
    return { flat: settings({ ...b, ...a }, 'rope_parameters', raw, layout.defaultTheta), byLayerType: null };
  }
  return { flat: settings(given(scaling) ? scaling : given(params) ? params : {}, given(scaling) ? 'rope_scaling' : 'rope_parameters', raw, layout.defaultTheta), byLayerType: null };
}

/** Gemma 3's RoPE: global layers rope_theta with rope_scaling, local ones plain RoPE at rope_local_base_freq. */
function splitRope(raw: Json, d: NonNullable<RopeLayout['splitByLayerType']>, nested: Json | null, scaling: Json | null, flatParams: Json | null): StandardRope {
  if (flatParams) throw new InvalidConfigError('rope_parameters must hold one dict per layer type (full_attention, sliding_attention) for this architecture');
  const full: Json = isObject(nested?.full_attention) ? { ...nested.full_attention } : {};
  const sliding: Json = isObject(nested?.sliding_attention) ? { ...nested.sliding_attention } : {};
  if (scaling) {
    const s = ropeTypeOf(scaling, 'rope_scaling');
    for (const [k, v] of Object.entries(s)) {
      if (full[k] !== undefined && !sameJson(full[k], v)) throw new ConflictingConfigError([`rope_scaling.${k}`, `rope_parameters.full_attention.${k}`], [v, full[k]]);
      full[k] = v;
    }
  }
  adopt(sliding, 'rope_parameters.sliding_attention', raw, 'rope_local_base_freq', 'rope_theta');
  const byLayerType = new Map<string, RopeSettings | null>([
    ['full_attention', settings(full, 'rope_parameters.full_attention', raw, d.fullTheta)],
    ['sliding_attention', settings(sliding, 'rope_parameters.sliding_attention', { ...raw, rope_theta: undefined }, d.slidingTheta)],
  ]);
  return { flat: null, byLayerType };
}

/** The weights' dtype as the config names it (`dtype`, transformers 4's `torch_dtype`), or null. */
export function standardDtype(raw: Json): string | null {
  const a = raw.dtype ?? null;
  const b = raw.torch_dtype ?? null;
  if (a !== null && b !== null && a !== b) throw new ConflictingConfigError(['dtype', 'torch_dtype'], [a, b]);
  const v = a ?? b;
  if (v !== null && typeof v !== 'string') throw new InvalidConfigError(`'${a !== null ? 'dtype' : 'torch_dtype'}' must be a string, got ${describeValue(v)}`);
  return v;
}

export type FieldTable = ModelFieldTable<unknown>;
export type { FieldRule };

/** Fields of transformers' PreTrainedConfig, 4.x and 5.x, and keys its tools add: none changes a causal LM's math. */
const INERT_COMMON = [
  'transformers_version', '_name_or_path', '_commit_hash', '_attn_implementation', '_attn_implementation_autoset', 'attn_implementation',
  'output_hidden_states', 'output_attentions', 'return_dict', 'torchscript', 'use_bfloat16', 'tf_legacy_loss',
  'chunk_size_feed_forward', 'is_encoder_decoder', 'is_decoder', 'cross_attention_hidden_size', 'add_cross_attention', 'tie_encoder_decoder',
  'id2label', 'label2id', 'num_labels', 'problem_type', 'finetuning_task', 'task_specific_params', 'tokenizer_class', 'prefix',
  'pad_token_id', 'sep_token_id', 'decoder_start_token_id', 'use_cache', 'initializer_range',
  // Generation defaults (transformers 5 keeps them in generation_config.json); they never change a forward pass.
  'max_length', 'min_length', 'do_sample', 'early_stopping', 'num_beams', 'num_beam_groups', 'diversity_penalty', 'temperature',
  'top_k', 'top_p', 'typical_p', 'repetition_penalty', 'length_penalty', 'no_repeat_ngram_size', 'encoder_no_repeat_ngram_size',
  'bad_words_ids', 'num_return_sequences', 'output_scores', 'return_dict_in_generate', 'forced_bos_token_id', 'forced_eos_token_id',
  'remove_invalid_values', 'exponential_decay_length_penalty', 'suppress_tokens', 'begin_suppress_tokens',
] as const;

/** Fields every family reads or checks. */
export const COMMON_FIELDS: FieldTable = {
  ...Object.fromEntries(INERT_COMMON.map((k) => [k, 'inert'])),
  architectures: 'read', model_type: 'read', bos_token_id: 'read', eos_token_id: 'read', vocab_size: 'read', tie_word_embeddings: 'read',
  quantization_config: 'read', dtype: 'read', torch_dtype: 'read',
  pruned_heads: { supported: 'no pruned heads', ok: (v) => v == null || (isObject(v) && Object.keys(v).length === 0) },
  auto_map: { warning: () => 'auto_map names custom modeling code, which this engine does not run: it computes transformers\' built-in architecture (what transformers loads without trust_remote_code)' },
};

/** A dropout probability the engine does not apply: named in a warning when above 0. */
export function dropoutField(what: string): FieldRule {
  return { warning: (v) => (typeof v === 'number' && v > 0 ? `${what} ${v} is not applied: this engine trains without dropout in the base model` : null) };
}

/**
 * Checks every field of a config against its family's table: refuses a value the engine does not
 * implement, and returns the warnings to show (the fields it has never heard of among them).
 */
export function checkConfigFields(raw: Json, table: FieldTable, architecture: string): string[] {
  return checkFields(Object.entries(raw), table, {
    file: 'config.json',
    definedBy: `transformers 5.18's config of ${architecture}`,
    refuse: (field, value, supported) => new UnsupportedConfigError(field, value, supported),
  });
}

/** Reading numbers from config.json: present, of the right kind, and within bounds no real model exceeds. */
/**
 * Upper bounds far beyond any real model (the largest have ~130 layers, 2^14-wide hidden states and
 * 2^18-token vocabularies), so absurd configs fail here instead of exhausting memory later.
 */
const MAX: Record<string, number> = {
  num_hidden_layers: 1024, n_layer: 1024,
  num_attention_heads: 4096, num_key_value_heads: 4096, n_head: 4096, head_dim: 4096,
  hidden_size: 1 << 20, n_embd: 1 << 20, intermediate_size: 1 << 22, n_inner: 1 << 22,
  vocab_size: 1 << 24,
};
const MAX_INT = 1 << 30;

export function configInt(raw: Json, key: string, fallback?: number): number {
  const v = raw[key] ?? fallback;
  const max = MAX[key] ?? MAX_INT;
  if (!Number.isSafeInteger(v) || (v as number) <= 0 || (v as number) > max) {
    throw new InvalidConfigError(`'${key}' must be a positive integer up to ${max}, got ${describeValue(raw[key])}`);
  }
  return v as number;
}

/** A positive number; `name` is the field's path for the message (default `key`). */
export function configNumber(raw: Json, key: string, fallback: number, name = key): number {
  const v = raw[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new InvalidConfigError(`'${name}' must be a positive number, got ${describeValue(v)}`);
  return v;
}

/** A boolean field: absent or null is the fallback; anything but true or false (the string "true") is refused. */
export function configBool(raw: Json, key: string, fallback: boolean): boolean {
  const v = raw[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== 'boolean') throw new InvalidConfigError(`'${key}' must be true or false, got ${describeValue(v)}`);
  return v;
}

/** A token id field (bos_token_id, eos_token_id): absent or null, a non-negative integer, or (`many`) a list of them. */
export function tokenIds(raw: Json, key: string, many = true): number[] {
  const v = raw[key];
  if (v === undefined || v === null) return [];
  const ids = Array.isArray(v) && many ? v : [v];
  if (!ids.every((x) => Number.isSafeInteger(x) && (x as number) >= 0)) {
    throw new InvalidConfigError(`'${key}' must be a token id${many ? ' or a list of them' : ''}, got ${describeValue(v)}`);
  }
  return ids as number[];
}
