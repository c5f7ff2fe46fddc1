/**
 * Hugging Face config.json -> one normalized description of the architectures the engine implements:
 * the Llama family (Llama, Qwen2, Mistral: RMSNorm, RoPE rotate-half, SwiGLU, GQA) and GPT-2
 * (LayerNorm, learned positions, GELU). Either config layout is read (transformers 4's top-level RoPE keys,
 * transformers 5's rope_parameters; see hf-config.ts); each family (families/) says which fields its
 * transformers config class has and how each is read, refused or reported. Defaults follow transformers'
 * config classes.
 */
import { WebGPUFinetuneError } from '../errors.js';
import { brief } from '../io/strict-json.js';
import { FAMILIES } from './families/index.js';
import { bitsandbytesQuantization } from './bitsandbytes.js';
import { gptqQuantization } from './gptq.js';
import { checkConfigFields, ConflictingConfigError, InvalidConfigError, standardDtype, tokenIds } from './hf-config.js';
import { describeValue } from '../io/strict-json.js';
import type { Nf4Codes } from '../kernels/nf4.js';
import type { RopeScaling } from '../kernels/rope.js';

export { ConflictingConfigError, InvalidConfigError, UnsupportedConfigError } from './hf-config.js';

export const SUPPORTED_ARCHITECTURES = ['LlamaForCausalLM', 'Qwen2ForCausalLM', 'Qwen3ForCausalLM', 'MistralForCausalLM', 'Gemma2ForCausalLM', 'Gemma3ForCausalLM', 'Phi3ForCausalLM', 'GPT2LMHeadModel'] as const;
export type Architecture = (typeof SUPPORTED_ARCHITECTURES)[number];

export class UnsupportedArchitectureError extends WebGPUFinetuneError {
  constructor(found: string) {
    super(
      'unsupported-architecture',
      `Unsupported model architecture ${found}. Supported: ${SUPPORTED_ARCHITECTURES.join(', ')}.`,
    );
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
  /**
   * The MLP's activation: of the gate in the Llama family's gated MLP ('silu': SwiGLU; a GELU: Gemma's
   * GeGLU), of the whole hidden layer in GPT-2. 'gelu_new' is the tanh approximation (GPT-2's gelu_new,
   * Gemma's gelu_pytorch_tanh).
   */
  activation: 'silu' | 'gelu_new' | 'gelu';
  /** The leading values of each head that RoPE rotates: headDim, or fewer with partial rotation (Phi-4-mini). */
  rotaryDim: number;
  /** RoPE base frequency; null for learned absolute positions (GPT-2). */
  ropeTheta: number | null;
  /** How the RoPE frequencies are rescaled for a longer context (Llama 3.1's 'llama3', 'linear'), or null. */
  ropeScaling: RopeScaling | null;
  /**
   * Each layer's RoPE where the layers differ (Gemma 3: sliding layers at rope_local_base_freq, full ones
   * at rope_theta with rope_scaling); null when every layer uses ropeTheta and ropeScaling.
   */
  layerRopes: LayerRope[] | null;
  /** RMSNorms scale by weight + normWeightOffset: 1 in Gemma, x * rstd * (1 + w) with w stored; 0 elsewhere. */
  normWeightOffset: number;
  /** The token embeddings are multiplied by this: Gemma's sqrt(hidden_size) as an f32; 1 elsewhere. */
  embedScale: number;
  /** Gemma 2 and 3: a norm on the attention's output and on the MLP's output before each residual add. */
  postNorms: boolean;
  /** Attention scores are q . k times this: 1 / sqrt(headDim), or Gemma's 1 / sqrt(query_pre_attn_scalar). */
  attentionScale: number;
  /** Soft caps, c * tanh(x / c), on the attention scores and on the final logits (Gemma 2), or null. */
  attentionSoftcap: number | null;
  finalLogitSoftcap: number | null;
  tieWordEmbeddings: boolean;
  /** Biases on the q, k, v projections (Qwen2, GPT-2) and on the output and MLP projections (GPT-2). */
  qkvBias: boolean;
  /** A per-head RMSNorm on the queries and keys before RoPE, weights [headDim] (Qwen3's q_norm, k_norm). */
  qkNorm: boolean;
  /** Phi-3: q, k and v are one Hugging Face weight (qkv_proj), and gate and up another (gate_up_proj). */
  fusedProjections: boolean;
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
   * Where the engine departs from what the file says, or meets a field it does not know: each a sentence
   * for the user (the command line prints them when it loads a model). Settings that would change the
   * math and are not implemented are errors, never warnings.
   */
  warnings: string[];
  /**
   * Set when the checkpoint stores its linear weights 4-bit: in this engine's packed format
   * (quantization_config with quant_method 'webgpu-finetune'; see model/quantized-weights.ts) or as
   * GPTQ (quant_method 'gptq'; see model/gptq.ts) or by bitsandbytes (quant_method 'bitsandbytes'; see
   * model/bitsandbytes.ts).
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
  packing: 'webgpu-finetune' | 'gptq' | 'bitsandbytes';
  /** bitsandbytes: its code table, NF4 (the default) or FP4. */
  codes?: Nf4Codes;
  /** bitsandbytes: patterns of the modules it left unquantized (llm_int8_skip_modules). */
  skipModules?: string[];
}

/** One layer's RoPE: its base and scaling. */
export interface LayerRope {
  theta: number;
  scaling: RopeScaling | null;
}

/** Layer i's RoPE: its own where layers differ (layerRopes), else the model's; null without RoPE (GPT-2). */
export function layerRope(c: Pick<ModelConfig, 'ropeTheta' | 'ropeScaling' | 'layerRopes'>, i: number): LayerRope | null {
  if (c.ropeTheta === null) return null;
  return c.layerRopes?.[i] ?? { theta: c.ropeTheta, scaling: c.ropeScaling };
}

type Json = Record<string, unknown>;

/** Config files larger than this are refused before parsing (real ones are a few kilobytes). */
export const MAX_CONFIG_BYTES = 16 << 20;

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
  const family = familyOf(raw);
  const architecture = family.architecture;
  const warnings = checkConfigFields(raw, family.fields, architecture);
  standardDtype(raw); // both layouts' dtype keys must agree
  const parsed = family.parse(raw, warnings);
  const bosTokenId = tokenIds(raw, 'bos_token_id', false)[0] ?? null;
  return { architecture, raw, ...quantization(raw.quantization_config), bosTokenId, eosTokenIds: tokenIds(raw, 'eos_token_id'), ...parsed, warnings };
}

/**
 * The family of a config: by `architectures` (the class transformers' save_pretrained records) or, without
 * it, by `model_type` (what AutoModelForCausalLM goes by). Both given must name the same family: a Llama
 * class with a Qwen2 model_type is a Qwen2 model to AutoModelForCausalLM and a Llama one to its class.
 */
function familyOf(raw: Json): (typeof FAMILIES)[number] {
  const archs = raw.architectures;
  const type = raw.model_type;
  if (archs != null && !(Array.isArray(archs) && archs.every((a) => typeof a === 'string'))) throw new InvalidConfigError(`'architectures' must be a list of class names, got ${describeValue(archs)}`);
  if (type != null && typeof type !== 'string') throw new InvalidConfigError(`'model_type' must be a string, got ${describeValue(type)}`);
  if (Array.isArray(archs) && archs.length > 0) {
    const family = FAMILIES.find((f) => f.architecture === archs[0]);
    if (!family) throw new UnsupportedArchitectureError(brief(archs[0]));
    if (type !== undefined && type !== family.modelType) throw new ConflictingConfigError(['architectures', 'model_type'], [archs[0], type], ` (${family.architecture} is model_type '${family.modelType}')`);
    return family;
  }
  const family = FAMILIES.find((f) => f.modelType === type);
  if (!family) throw new UnsupportedArchitectureError(`model_type '${brief(String(type))}'`);
  return family;
}

/** The 4-bit format of a checkpoint this engine saved, or a GPTQ or bitsandbytes one; other schemes are refused by name. */
function quantization(qc: unknown): Pick<ModelConfig, 'quantization'> {
  if (qc === undefined || qc === null) return {};
  const q = qc as Json;
  if (typeof qc === 'object' && !Array.isArray(qc) && q.quant_method === 'gptq') return { quantization: gptqQuantization(q) };
  if (typeof qc === 'object' && !Array.isArray(qc) && q.quant_method === 'bitsandbytes') return { quantization: bitsandbytesQuantization(q) };
  if (typeof qc !== 'object' || Array.isArray(qc) || q.quant_method !== 'webgpu-finetune') {
    const method = typeof qc === 'object' && !Array.isArray(qc) ? String(q.quant_method) : typeof qc;
    throw new InvalidConfigError(`quantization_config with quant_method '${brief(method)}' is not supported: load the unquantized model (quantize: 'nf4' quantizes it as it loads), a GPTQ or bitsandbytes 4-bit checkpoint, or a 4-bit checkpoint this engine saved`);
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

