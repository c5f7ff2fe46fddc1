/**
 * What the Llama-style families (Llama, Qwen2, Mistral) share in their configs: RMSNorm, rotary positions,
 * a SwiGLU MLP and grouped-query attention, read from either config layout (../hf-config.ts). Each family
 * states which fields its transformers config class has and how it reads them; a field another family
 * reads (attention_bias on Qwen2, say) is unknown to it, as it is to transformers.
 */
import type { LayerRope, ModelConfig } from '../config.js';
import { COMMON_FIELDS, dropoutField, InvalidConfigError, standardRope, UnsupportedConfigError, type FieldTable, type RopeLayout, type RopeSettings } from '../hf-config.js';
import { brief, describeValue } from '../../io/strict-json.js';
import type { RopeScaling } from '../../kernels/rope.js';
import type { DecoderOps, FamilyPart, FamilyParts } from './family.js';
import { swigluBackward, swigluForward } from '../../kernels/activation.js';
import { rope } from '../../kernels/rope.js';
import { configBool, configInt, configNumber, type Json } from '../hf-config.js';

/** The fields every Llama-style config class has, and how each is read. */
export const DECODER_FIELDS: FieldTable = {
  ...COMMON_FIELDS,
  hidden_size: 'read', intermediate_size: 'read', num_hidden_layers: 'read', num_attention_heads: 'read', num_key_value_heads: 'read',
  max_position_embeddings: 'read', rms_norm_eps: 'read',
  hidden_act: { supported: 'silu', ok: (v) => v === undefined || v === 'silu' },
  // RoPE in either layout, read through standardRope.
  rope_parameters: 'read', rope_scaling: 'read', rope_theta: 'read', partial_rotary_factor: 'read',
  attention_dropout: dropoutField('attention_dropout'),
};

/** What a family decides beyond the shared fields; the optional ones default to Llama's. */
export type DecoderChoices = Pick<ModelConfig, 'qkvBias' | 'outputBias' | 'mlpBias' | 'slidingWindow' | 'layerWindows'> &
  Partial<Pick<ModelConfig, 'qkNorm' | 'fusedProjections' | 'activation' | 'normWeightOffset' | 'embedScale' | 'postNorms' | 'attentionScale' | 'attentionSoftcap' | 'finalLogitSoftcap'>>;

/** How a family's RoPE is laid out: Gemma 3 splits it by layer type, and its layers may differ. */
export interface DecoderRope {
  layout?: RopeLayout;
  /** Layers may use different RoPE (layerRopes); otherwise a difference is refused. */
  perLayer?: boolean;
  /** partial_rotary_factor rotates that part of each head with every RoPE type (Phi-3's rotary embedding). */
  partialRotary?: boolean;
  /** LongRoPE (Phi-3.5, Phi-4-mini) is implemented for the family. */
  longrope?: boolean;
}

/**
 * The shared part of a Llama-style config. `layerTypes` are the config's per-layer attention types when
 * the family reads them (Qwen2); RoPE may then be given per layer type.
 */
export function decoderConfig(raw: Json, architecture: ModelConfig['architecture'], choices: (numLayers: number) => DecoderChoices, warnings: string[], layerTypes?: string[], rope: DecoderRope = {}): FamilyPart {
  const hiddenSize = configInt(raw, 'hidden_size');
  const numHeads = configInt(raw, 'num_attention_heads');
  const numKvHeads = configInt(raw, 'num_key_value_heads', numHeads);
  if (numHeads % numKvHeads) throw new InvalidConfigError(`num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
  const headDim = raw.head_dim == null ? hiddenSize / numHeads : configInt(raw, 'head_dim');
  if (!Number.isInteger(headDim)) throw new InvalidConfigError(`hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads}`);
  if (headDim % 2) throw new InvalidConfigError(`head_dim ${headDim} must be even for rotary embeddings`);
  const numLayers = configInt(raw, 'num_hidden_layers');
  return {
    family: 'llama',
    vocabSize: configInt(raw, 'vocab_size'),
    hiddenSize,
    intermediateSize: configInt(raw, 'intermediate_size'),
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    maxPositions: configInt(raw, 'max_position_embeddings', 2048),
    norm: 'rmsnorm',
    normEps: configNumber(raw, 'rms_norm_eps', 1e-6),
    activation: 'silu',
    ...ropeOf(raw, architecture, { numLayers, headDim, maxPositions: configInt(raw, 'max_position_embeddings', 2048) }, warnings, layerTypes, rope),
    tieWordEmbeddings: configBool(raw, 'tie_word_embeddings', false),
    qkNorm: false,
    fusedProjections: false,
    normWeightOffset: 0,
    embedScale: 1,
    postNorms: false,
    attentionScale: 1 / Math.sqrt(headDim),
    attentionSoftcap: null,
    finalLogitSoftcap: null,
    ...choices(numLayers),
  };
}

/**
 * The RoPE of every layer: its base, on the whole head or (`partialRotary`) on part of it, plain
 * ('default') or rescaled for a longer context ('linear', Llama 3.1's 'llama3', 'dynamic' (plain up to
 * max_position_embeddings, as far as the engine runs), and LongRoPE where the family has it); YaRN is
 * refused by name until implemented. Layers differ only where the family allows it (`perLayer`).
 */
function ropeOf(raw: Json, architecture: string, shape: { numLayers: number; headDim: number; maxPositions: number }, warnings: string[], layerTypes: string[] | undefined, options: DecoderRope): Pick<ModelConfig, 'ropeTheta' | 'ropeScaling' | 'layerRopes' | 'rotaryDim'> {
  const { numLayers, headDim } = shape;
  const rope = standardRope(raw, options.layout ?? { defaultTheta: 10000 }, layerTypes);
  const perLayer: (RopeSettings | null)[] = rope.byLayerType
    ? Array.from({ length: numLayers }, (_, i) => {
        const type = layerTypes?.[i] ?? '';
        if (!rope.byLayerType!.has(type)) throw new InvalidConfigError(`rope_parameters has no entry for layer ${i}'s type '${type}'`);
        return rope.byLayerType!.get(type)!;
      })
    : new Array<RopeSettings | null>(numLayers).fill(rope.flat);
  const layers: LayerRope[] = [];
  let rotaryDim = headDim;
  const types = Object.keys(SCALED_ROPE_KEYS).filter((t) => t !== 'longrope' || options.longrope);
  for (const [i, s] of perLayer.entries()) {
    if (!s) throw new UnsupportedConfigError(`rope_parameters.${layerTypes?.[i]}`, null, 'every layer of this architecture uses RoPE');
    if (!types.includes(s.ropeType) && s.ropeType !== 'default') {
      throw new UnsupportedConfigError(`${s.key}.rope_type`, s.ropeType, `'default', ${types.map((t) => `'${t}'`).join(', ')}; the other scaled RoPE types are not implemented yet${s.ropeType === 'longrope' ? ' (LongRoPE is implemented for Phi-3)' : ''}`);
    }
    const partial = s.parameters.partial_rotary_factor;
    if (options.partialRotary && partial != null) {
      if (typeof partial !== 'number' || !(partial > 0 && partial <= 1)) throw new InvalidConfigError(`'${s.key}.partial_rotary_factor' must be a number in (0, 1], got ${describeValue(partial)}`);
      // transformers: dim = int(head_dim * partial_rotary_factor).
      rotaryDim = Math.trunc(headDim * partial);
      if (rotaryDim < 2 || rotaryDim % 2) throw new InvalidConfigError(`'${s.key}.partial_rotary_factor' ${partial} rotates ${rotaryDim} of ${headDim} values per head: RoPE needs an even number of them`);
    }
    const layer = { theta: s.theta, scaling: scalingOf(s, rotaryDim, shape.maxPositions) };
    const first = layers[0];
    if (first && !options.perLayer) {
      if (s.theta !== first.theta) throw new UnsupportedConfigError(`${s.key}.rope_theta`, s.theta, `one RoPE base for all layers (another layer type has ${first.theta})`);
      if (JSON.stringify(layer.scaling) !== JSON.stringify(first.scaling)) throw new UnsupportedConfigError(`${s.key}.rope_type`, s.ropeType, 'the same RoPE scaling on every layer');
    }
    layers.push(layer);
    if (i > 0 && s === perLayer[i - 1]) continue;
    if (!options.partialRotary && partial !== undefined && partial !== 1) {
      if (s.ropeType !== 'default') throw new UnsupportedConfigError(`${s.key}.partial_rotary_factor`, partial, `the whole head rotating: transformers' ${architecture} rotates the whole head with cos and sin for part of it, which it cannot broadcast`);
      warnings.push(`config.json ${s.key}.partial_rotary_factor ${String(partial)} is ignored: transformers' ${architecture} applies it only with scaled RoPE types, and so does this engine (the whole head rotates)`);
    }
    // transformers' validation accepts each type's keys alone and ignores (with a warning) the rest.
    const known = ['rope_type', 'rope_theta', 'partial_rotary_factor', ...((SCALED_ROPE_KEYS as Record<string, readonly string[]>)[s.ropeType] ?? [])];
    const ignored = Object.keys(s.parameters).filter((k) => !known.includes(k));
    if (ignored.length) warnings.push(`config.json ${s.key}: ${ignored.map((k) => `'${brief(k)}'`).join(', ')} ${ignored.length > 1 ? 'are' : 'is'} ignored with RoPE type '${s.ropeType}', as transformers ignores ${ignored.length > 1 ? 'them' : 'it'}`);
  }
  const first = layers[0] ?? { theta: 10000, scaling: null };
  const uniform = layers.every((l) => l.theta === first.theta && JSON.stringify(l.scaling) === JSON.stringify(first.scaling));
  return { ropeTheta: first.theta, ropeScaling: first.scaling, layerRopes: uniform ? null : layers, rotaryDim };
}

/** The parameters each implemented scaled RoPE type reads (transformers' _validate_<type>_rope_parameters). */
const SCALED_ROPE_KEYS = {
  linear: ['factor'],
  dynamic: ['factor'],
  llama3: ['factor', 'low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings'],
  longrope: ['short_factor', 'long_factor', 'original_max_position_embeddings', 'factor', 'attention_factor'],
} as const;

/** A layer's RoPE scaling, its parameters checked; null for plain RoPE. */
function scalingOf(s: RopeSettings, rotaryDim: number, maxPositions: number): RopeScaling | null {
  if (s.ropeType === 'default') return null;
  const p = s.parameters;
  const number = (key: string) => {
    const v = p[key];
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new InvalidConfigError(`'${s.key}.${key}' must be a number for RoPE type '${s.ropeType}', got ${describeValue(v)}`);
    return v;
  };
  if (s.ropeType === 'longrope') return longropeOf(s, number, rotaryDim, maxPositions);
  const factor = number('factor');
  // transformers warns below 1 and computes anyway; a factor at or below 0 gives no frequencies at all.
  if (!(factor > 0)) throw new InvalidConfigError(`'${s.key}.factor' must be positive, got ${factor}`);
  if (s.ropeType === 'linear') return { type: 'linear', factor };
  // transformers' _compute_dynamic_ntk_parameters scales the base by ((factor * L / max) - (factor - 1)) for a
  // sequence of L > max_position_embeddings tokens, and by 1 up to there: the only lengths this engine runs.
  if (s.ropeType === 'dynamic') return { type: 'dynamic', factor };
  const lowFreqFactor = number('low_freq_factor');
  const highFreqFactor = number('high_freq_factor');
  if (!(highFreqFactor > lowFreqFactor && lowFreqFactor > 0)) throw new InvalidConfigError(`'${s.key}': high_freq_factor (${highFreqFactor}) must be above low_freq_factor (${lowFreqFactor}), and both positive`);
  const originalMaxPositions = number('original_max_position_embeddings');
  if (!(Number.isInteger(originalMaxPositions) && originalMaxPositions > 0)) throw new InvalidConfigError(`'${s.key}.original_max_position_embeddings' must be a positive integer, got ${originalMaxPositions}`);
  return { type: 'llama3', factor, lowFreqFactor, highFreqFactor, originalMaxPositions };
}

/**
 * LongRoPE as transformers' _compute_longrope_parameters reads it: a factor per rotated frequency pair,
 * short and long; `factor` defaulting to max_position_embeddings / original_max_position_embeddings, and
 * `attention_factor` to sqrt(1 + ln(factor) / ln(original)) (1 when the factor is at most 1).
 */
function longropeOf(s: RopeSettings, number: (key: string) => number, rotaryDim: number, maxPositions: number): RopeScaling {
  const factors = (key: string) => {
    const v = s.parameters[key];
    if (!Array.isArray(v) || v.length !== rotaryDim / 2 || !v.every((f) => typeof f === 'number' && Number.isFinite(f) && f > 0)) {
      throw new InvalidConfigError(`'${s.key}.${key}' must list ${rotaryDim / 2} positive numbers (one per rotated pair of a head), got ${describeValue(v)}`);
    }
    return v as number[];
  };
  const originalMaxPositions = number('original_max_position_embeddings');
  if (!(Number.isInteger(originalMaxPositions) && originalMaxPositions > 1)) throw new InvalidConfigError(`'${s.key}.original_max_position_embeddings' must be an integer above 1, got ${originalMaxPositions}`);
  const factor = s.parameters.factor == null ? maxPositions / originalMaxPositions : number('factor');
  const attentionFactor = s.parameters.attention_factor == null ? (factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(originalMaxPositions))) : number('attention_factor');
  if (!(attentionFactor > 0)) throw new InvalidConfigError(`'${s.key}.attention_factor' must be positive, got ${attentionFactor}`);
  return { type: 'longrope', shortFactor: factors('short_factor'), longFactor: factors('long_factor'), originalMaxPositions, attentionFactor };
}

/** Sliding windows per layer: `sliding[i]` says whether layer i attends within `window` tokens. */
export function windows(window: number | null, sliding: boolean[]): Pick<ModelConfig, 'slidingWindow' | 'layerWindows'> {
  if (window === null || !sliding.includes(true)) return { slidingWindow: null, layerWindows: sliding.map(() => null) };
  return { slidingWindow: window, layerWindows: sliding.map((s) => (s ? window : null)) };
}

/** The Llama-style families' parts: rotary positions, and a gated MLP (gate, up, down): SwiGLU, or Gemma's GeGLU. */
export function decoderParts(ops: DecoderOps): FamilyParts {
  const c = ops.config;
  const I = c.intermediateSize;
  const parts: FamilyParts = {
    rotate: (rec, acts, layer, q, k, backward) => {
      const r = { positions: acts.positions, table: ops.ropeTable(layer, acts), T: acts.T, headDim: c.headDim, rotaryDim: c.rotaryDim, maxPositions: c.maxPositions, backward };
      rope(rec, { ...r, x: q, heads: c.numHeads });
      rope(rec, { ...r, x: k, heads: c.numKvHeads });
    },
    mlpUp: (rec, acts, L, l) => {
      ops.linear(rec, acts, l.ln2, `${L}.gate`, l.a, I, c.hiddenSize);
      ops.linear(rec, acts, l.ln2, `${L}.up`, l.b!, I, c.hiddenSize);
      parts.mlpActivate(rec, acts, l);
    },
    mlpActivate: (rec, acts, l) => swigluForward(rec, { gate: l.a, up: l.b!, h: l.h, n: acts.T * I, activation: c.activation }),
    mlpUpBackward: (rec, acts, L, l, g) => {
      swigluBackward(rec, { gate: l.a, up: l.b!, dH: g.dh, dGate: g.da, dUp: g.db, n: acts.T * I, activation: c.activation });
      ops.linearBackward(rec, acts, l.ln2, `${L}.gate`, g.da, g.dln, I, c.hiddenSize);
      ops.linearBackward(rec, acts, l.ln2, `${L}.up`, g.db, g.dln, I, c.hiddenSize, true);
    },
    down: 'down',
  };
  return parts;
}
