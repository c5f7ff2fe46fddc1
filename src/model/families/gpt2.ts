/**
 * GPT-2: LayerNorm, learned positions, a GELU MLP, biases everywhere, tied head by default
 * (transformers' configuration_gpt2.py; its attribute_map lets hidden_size and friends stand for n_embd ...).
 */
import { COMMON_FIELDS, ConflictingConfigError, dropoutField, InvalidConfigError } from '../hf-config.js';
import { brief } from '../../io/strict-json.js';
import type { DecoderOps, FamilyConfig, FamilyParts } from './family.js';
import { geluBackward, geluForward } from '../../kernels/activation.js';
import { configBool, configInt, configNumber, type Json } from '../hf-config.js';

/** GPT-2's names and the standard ones transformers maps onto them. */
const ALIASES = { n_embd: 'hidden_size', n_head: 'num_attention_heads', n_layer: 'num_hidden_layers', n_positions: 'max_position_embeddings' } as const;

/** A GPT-2 size under its own name or its alias; both given must agree. */
function aliased(raw: Json, key: keyof typeof ALIASES, fallback?: number): number {
  const alias = ALIASES[key];
  if (raw[key] != null && raw[alias] != null && raw[key] !== raw[alias]) throw new ConflictingConfigError([key, alias], [raw[key], raw[alias]]);
  return configInt(raw[key] == null && raw[alias] != null ? { [key]: raw[alias] } : raw, key, fallback);
}

/** GELU variants by transformers' names: gelu_pytorch_tanh is gelu_new's tanh form, computed the same way. */
const ACTIVATIONS: Record<string, 'gelu_new' | 'gelu'> = { gelu_new: 'gelu_new', gelu_pytorch_tanh: 'gelu_new', gelu: 'gelu' };

/** GPT-2's parts: learned absolute positions, and a GELU MLP (fc, proj). */
function gpt2Parts(ops: DecoderOps): FamilyParts {
  const c = ops.config;
  const kind = c.activation === 'gelu' ? 'gelu' : 'gelu_new';
  const parts: FamilyParts = {
    positionEmbedding: 'pos_embed',
    rotate: () => {},
    // The activation in fc's product where it can be (see DecoderOps.linear); mlpActivate recomputes it.
    mlpUp: (rec, acts, L, l) => ops.linear(rec, acts, l.ln2, `${L}.fc`, l.a, c.intermediateSize, c.hiddenSize, { kind, out: l.h }),
    mlpActivate: (rec, acts, l) => geluForward(rec, { x: l.a, y: l.h, n: acts.T * c.intermediateSize, kind }),
    mlpUpBackward: (rec, acts, L, l, g, activationDone) => {
      if (!activationDone) geluBackward(rec, { x: l.a, dY: g.dh, dX: g.da, n: acts.T * c.intermediateSize, kind });
      ops.linearBackward(rec, acts, l.ln2, `${L}.fc`, g.da, g.dln, c.intermediateSize, c.hiddenSize);
    },
    down: 'proj',
    activation: kind,
  };
  return parts;
}

export const gpt2: FamilyConfig = {
  architecture: 'GPT2LMHeadModel',
  modelType: 'gpt2',
  fields: {
    ...COMMON_FIELDS,
    ...Object.fromEntries(Object.entries(ALIASES).flatMap(([k, a]) => [[k, 'read'], [a, 'read']])),
    n_inner: 'read', activation_function: 'read', layer_norm_epsilon: 'read',
    resid_pdrop: dropoutField('resid_pdrop'), embd_pdrop: dropoutField('embd_pdrop'), attn_pdrop: dropoutField('attn_pdrop'),
    scale_attn_weights: { supported: 'true: scores scaled by 1/sqrt(head_dim)', ok: (v) => v === undefined || v === true },
    scale_attn_by_inverse_layer_idx: { supported: 'false', ok: (v) => v === undefined || v === false },
    // Upcasts attention to f32 and reorders its scaling: the same math, and this engine computes it in f32.
    reorder_and_upcast_attn: 'inert',
    // The sequence-summary head of GPT2DoubleHeadsModel, and n_ctx, which transformers no longer reads.
    summary_type: 'inert', summary_use_proj: 'inert', summary_activation: 'inert', summary_proj_to_labels: 'inert',
    summary_first_dropout: 'inert', summary_last_dropout: 'inert', n_ctx: 'inert',
  },
  parts: gpt2Parts,
  parse(raw) {
    const hiddenSize = aliased(raw, 'n_embd');
    const numHeads = aliased(raw, 'n_head');
    const numLayers = aliased(raw, 'n_layer');
    if (hiddenSize % numHeads) throw new InvalidConfigError(`n_embd ${hiddenSize} is not divisible by n_head ${numHeads}`);
    const act = String(raw.activation_function ?? 'gelu_new');
    if (!Object.hasOwn(ACTIVATIONS, act)) throw new InvalidConfigError(`activation_function '${brief(act)}' is not supported (${Object.keys(ACTIVATIONS).join(', ')})`);
    return {
      family: 'gpt2',
      vocabSize: configInt(raw, 'vocab_size'),
      hiddenSize,
      intermediateSize: raw.n_inner == null ? 4 * hiddenSize : configInt(raw, 'n_inner'),
      numLayers,
      numHeads,
      numKvHeads: numHeads,
      headDim: hiddenSize / numHeads,
      maxPositions: aliased(raw, 'n_positions', 1024),
      norm: 'layernorm',
      normEps: configNumber(raw, 'layer_norm_epsilon', 1e-5),
      activation: ACTIVATIONS[act],
      ropeTheta: null,
      ropeScaling: null,
      layerRopes: null,
      rotaryDim: hiddenSize / numHeads,
      qkNorm: false,
      fusedProjections: false,
      normWeightOffset: 0,
      embedScale: 1,
      postNorms: false,
      attentionScale: 1 / Math.sqrt(hiddenSize / numHeads),
      attentionSoftcap: null,
      finalLogitSoftcap: null,
      tieWordEmbeddings: configBool(raw, 'tie_word_embeddings', true),
      qkvBias: true,
      outputBias: true,
      mlpBias: true,
      slidingWindow: null,
      layerWindows: new Array<null>(numLayers).fill(null),
    };
  },
};
