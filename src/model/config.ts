/**
 * Hugging Face config.json -> one normalized description of the architectures the engine implements:
 * the Llama family (Llama, Qwen2, Mistral: RMSNorm, RoPE rotate-half, SwiGLU, GQA) and GPT-2
 * (LayerNorm, learned positions, GELU). Defaults follow transformers' config classes.
 */
import { WebGPUFinetuneError } from '../errors.js';
import { brief, describeValue } from '../io/strict-json.js';
import { gptqQuantization } from './gptq.js';

export const SUPPORTED_ARCHITECTURES = ['LlamaForCausalLM', 'Qwen2ForCausalLM', 'MistralForCausalLM', 'GPT2LMHeadModel'] as const;
export type Architecture = (typeof SUPPORTED_ARCHITECTURES)[number];

export class UnsupportedArchitectureError extends WebGPUFinetuneError {
  constructor(found: string) {
    super(
      'unsupported-architecture',
      `Unsupported model architecture ${found}. Supported: ${SUPPORTED_ARCHITECTURES.join(', ')}.`,
    );
  }
}

export class InvalidConfigError extends WebGPUFinetuneError {
  constructor(message: string) {
    super('invalid-config', `config.json: ${message}`);
  }
}

export interface ModelConfig {
  architecture: Architecture;
  family: 'llama' | 'gpt2';
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  /** Key/value heads (GQA); equal to numHeads without GQA. */
  numKvHeads: number;
  headDim: number;
  maxPositions: number;
  norm: 'rmsnorm' | 'layernorm';
  normEps: number;
  /** 'silu' (SwiGLU MLP) or a GELU variant ('gelu_new' is the tanh approximation GPT-2 uses). */
  activation: 'silu' | 'gelu_new' | 'gelu';
  /** RoPE base frequency; null for learned absolute positions (GPT-2). */
  ropeTheta: number | null;
  tieWordEmbeddings: boolean;
  /** Biases on the q, k, v projections (Qwen2, GPT-2) and on the output and MLP projections (GPT-2). */
  qkvBias: boolean;
  outputBias: boolean;
  mlpBias: boolean;
  /** The sliding attention window (Mistral, some Qwen2 layers), or null. */
  slidingWindow: number | null;
  /** Per layer: the window its attention applies (query i sees keys j with i - j < window), or null. */
  layerWindows: (number | null)[];
  bosTokenId: number | null;
  eosTokenIds: number[];
  /** The parsed config.json, for fields the engine does not interpret. */
  raw: Record<string, unknown>;
  /**
   * Set when the checkpoint stores its linear weights 4-bit: in this engine's packed format
   * (quantization_config with quant_method 'webgpu-finetune'; see model/quantized-weights.ts) or as
   * GPTQ (quant_method 'gptq'; see model/gptq.ts).
   */
  quantization?: StoredQuantization;
}

/** How a checkpoint stores its 4-bit linear weights, and the engine format they load into. */
export interface StoredQuantization {
  format: 'int4' | 'nf4';
  groupSize: 32 | 64 | 128;
  /** int4: added to each stored zero point (GPTQ stores zero - 1); 0 otherwise. */
  zeroBias: 0 | 1;
  /** nf4: the absmax array is double-quantized. */
  doubleQuant?: boolean;
  /** Whose tensor names and layouts the file uses. */
  packing: 'webgpu-finetune' | 'gptq';
}

type Json = Record<string, unknown>;

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

/** Config files larger than this are refused before parsing (real ones are a few kilobytes). */
export const MAX_CONFIG_BYTES = 16 << 20;

function int(raw: Json, key: string, fallback?: number): number {
  const v = raw[key] ?? fallback;
  const max = MAX[key] ?? MAX_INT;
  if (!Number.isSafeInteger(v) || (v as number) <= 0 || (v as number) > max) {
    throw new InvalidConfigError(`'${key}' must be a positive integer up to ${max}, got ${describeValue(raw[key])}`);
  }
  return v as number;
}

function num(raw: Json, key: string, fallback: number): number {
  const v = raw[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new InvalidConfigError(`'${key}' must be a positive number, got ${describeValue(v)}`);
  return v;
}

function tokenIds(v: unknown): number[] {
  if (v === undefined || v === null) return [];
  return (Array.isArray(v) ? v : [v]).filter((x): x is number => Number.isInteger(x));
}

export function parseConfig(input: string | Json): ModelConfig {
  let raw: Json;
  if (typeof input === 'string') {
    if (input.length > MAX_CONFIG_BYTES) throw new InvalidConfigError(`${input.length} characters is over the ${MAX_CONFIG_BYTES} limit for a config file`);
    try {
      raw = JSON.parse(input) as Json;
    } catch (e) {
      throw new InvalidConfigError(`not valid JSON (${e instanceof Error ? e.message : e})`);
    }
  } else raw = input;
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new InvalidConfigError('not a JSON object');
  const archs = raw.architectures;
  const name = Array.isArray(archs) && typeof archs[0] === 'string' ? archs[0] : `model_type '${brief(String(raw.model_type))}'`;
  if (!(SUPPORTED_ARCHITECTURES as readonly string[]).includes(name)) throw new UnsupportedArchitectureError(brief(name));
  const architecture = name as Architecture;
  const common = { architecture, raw, ...quantization(raw.quantization_config), bosTokenId: Number.isInteger(raw.bos_token_id) ? (raw.bos_token_id as number) : null, eosTokenIds: tokenIds(raw.eos_token_id) };

  if (architecture === 'GPT2LMHeadModel') {
    const hiddenSize = int(raw, 'n_embd');
    const numHeads = int(raw, 'n_head');
    const numLayers = int(raw, 'n_layer');
    if (hiddenSize % numHeads) throw new InvalidConfigError(`n_embd ${hiddenSize} is not divisible by n_head ${numHeads}`);
    const act = String(raw.activation_function ?? 'gelu_new');
    if (act !== 'gelu_new' && act !== 'gelu') throw new InvalidConfigError(`activation_function '${brief(act)}' is not supported (gelu_new, gelu)`);
    return {
      ...common,
      family: 'gpt2',
      vocabSize: int(raw, 'vocab_size'),
      hiddenSize,
      intermediateSize: raw.n_inner == null ? 4 * hiddenSize : int(raw, 'n_inner'),
      numLayers,
      numHeads,
      numKvHeads: numHeads,
      headDim: hiddenSize / numHeads,
      maxPositions: int(raw, 'n_positions', 1024),
      norm: 'layernorm',
      normEps: num(raw, 'layer_norm_epsilon', 1e-5),
      activation: act,
      ropeTheta: null,
      tieWordEmbeddings: raw.tie_word_embeddings !== false,
      qkvBias: true,
      outputBias: true,
      mlpBias: true,
      slidingWindow: null,
      layerWindows: new Array<null>(numLayers).fill(null),
    };
  }

  const hiddenSize = int(raw, 'hidden_size');
  const numHeads = int(raw, 'num_attention_heads');
  const numKvHeads = int(raw, 'num_key_value_heads', numHeads);
  if (numHeads % numKvHeads) throw new InvalidConfigError(`num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
  const headDim = raw.head_dim == null ? hiddenSize / numHeads : int(raw, 'head_dim');
  if (!Number.isInteger(headDim)) throw new InvalidConfigError(`hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads}`);
  if (headDim % 2) throw new InvalidConfigError(`head_dim ${headDim} must be even for rotary embeddings`);
  const act = String(raw.hidden_act ?? 'silu');
  if (act !== 'silu') throw new InvalidConfigError(`hidden_act '${brief(act)}' is not supported (silu)`);
  const scaling = raw.rope_scaling as Json | null | undefined;
  if (scaling && scaling.rope_type !== 'default' && scaling.type !== 'default') {
    throw new InvalidConfigError(`rope_scaling of type ${describeValue(scaling.rope_type ?? scaling.type)} is not supported yet (plain RoPE only)`);
  }
  const isQwen2 = architecture === 'Qwen2ForCausalLM';
  const attentionBias = raw.attention_bias === true;
  const numLayers = int(raw, 'num_hidden_layers');
  const { slidingWindow, layerWindows } = slidingWindows(raw, architecture, numLayers);
  return {
    ...common,
    family: 'llama',
    vocabSize: int(raw, 'vocab_size'),
    hiddenSize,
    intermediateSize: int(raw, 'intermediate_size'),
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    maxPositions: int(raw, 'max_position_embeddings', 2048),
    norm: 'rmsnorm',
    normEps: num(raw, 'rms_norm_eps', 1e-6),
    activation: 'silu',
    ropeTheta: num(raw, 'rope_theta', 10000),
    tieWordEmbeddings: raw.tie_word_embeddings === true,
    qkvBias: isQwen2 || attentionBias,
    outputBias: attentionBias,
    mlpBias: raw.mlp_bias === true,
    slidingWindow,
    layerWindows,
  };
}

/**
 * Which layers attend within a sliding window, as Hugging Face decides it: an explicit `layer_types` list
 * wins; otherwise Mistral windows every layer, and Qwen2 with `use_sliding_window` the layers from
 * `max_window_layers` on.
 */
/** The 4-bit format of a checkpoint this engine saved, or a GPTQ one; other schemes are refused by name. */
function quantization(qc: unknown): Pick<ModelConfig, 'quantization'> {
  if (qc === undefined || qc === null) return {};
  const q = qc as Json;
  if (typeof qc === 'object' && !Array.isArray(qc) && q.quant_method === 'gptq') return { quantization: gptqQuantization(q) };
  if (typeof qc !== 'object' || Array.isArray(qc) || q.quant_method !== 'webgpu-finetune') {
    const method = typeof qc === 'object' && !Array.isArray(qc) ? String(q.quant_method) : typeof qc;
    throw new InvalidConfigError(`quantization_config with quant_method '${brief(method)}' is not supported: load the unquantized model (quantize: 'nf4' quantizes it as it loads), a GPTQ 4-bit checkpoint, or a 4-bit checkpoint this engine saved`);
  }
  if (q.format !== 'nf4' && q.format !== 'int4') throw new InvalidConfigError(`quantization_config.format must be 'nf4' or 'int4', got '${brief(String(q.format))}'`);
  const groupSize = q.format === 'nf4' ? 64 : q.group_size;
  if (groupSize !== 32 && groupSize !== 64 && groupSize !== 128) throw new InvalidConfigError(`quantization_config.group_size must be 32, 64 or 128, got '${brief(String(q.group_size))}'`);
  const zeroBias = q.zero_bias ?? 0;
  if (zeroBias !== 0 && !(zeroBias === 1 && q.format === 'int4')) throw new InvalidConfigError(`quantization_config.zero_bias must be 0${q.format === 'int4' ? ' or 1' : ' for nf4'}, got '${brief(String(q.zero_bias))}'`);
  const doubleQuant = q.double_quant ?? false;
  if (doubleQuant !== false && !(doubleQuant === true && q.format === 'nf4')) throw new InvalidConfigError(`quantization_config.double_quant must be ${q.format === 'nf4' ? 'true or false' : 'false for int4'}, got '${brief(String(q.double_quant))}'`);
  return { quantization: { format: q.format, groupSize, zeroBias, packing: 'webgpu-finetune', ...(doubleQuant ? { doubleQuant } : {}) } };
}

function slidingWindows(raw: Json, architecture: string, numLayers: number): Pick<ModelConfig, 'slidingWindow' | 'layerWindows'> {
  const none = { slidingWindow: null, layerWindows: new Array<null>(numLayers).fill(null) };
  if (raw.sliding_window == null) return none;
  const window = int(raw, 'sliding_window');
  let sliding: boolean[];
  if (Array.isArray(raw.layer_types)) {
    if (raw.layer_types.length !== numLayers) throw new InvalidConfigError(`layer_types lists ${raw.layer_types.length} layers, num_hidden_layers is ${numLayers}`);
    sliding = raw.layer_types.map((t, i) => {
      if (t !== 'sliding_attention' && t !== 'full_attention') throw new InvalidConfigError(`layer_types[${i}] '${brief(String(t))}' is not supported (full_attention, sliding_attention)`);
      return t === 'sliding_attention';
    });
  } else if (architecture === 'MistralForCausalLM') {
    sliding = new Array<boolean>(numLayers).fill(true);
  } else if (raw.use_sliding_window === true) {
    const from = int(raw, 'max_window_layers', 28);
    sliding = Array.from({ length: numLayers }, (_, i) => i >= from);
  } else {
    return none;
  }
  if (!sliding.includes(true)) return none;
  return { slidingWindow: window, layerWindows: sliding.map((s) => (s ? window : null)) };
}
