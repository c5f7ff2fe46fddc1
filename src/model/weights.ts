/**
 * The tensors each architecture needs, by Hugging Face name and shape, and the check that a checkpoint
 * provides them. Shapes are as stored: Linear weights are [out, in]; GPT-2's Conv1D weights are [in, out].
 */
import { InvalidModelFileError } from '../io/safetensors.js';
import type { ModelConfig } from './config.js';

export interface WeightSpec {
  name: string;
  shape: number[];
}

export function expectedWeights(c: ModelConfig): WeightSpec[] {
  const H = c.hiddenSize;
  const I = c.intermediateSize;
  const V = c.vocabSize;
  const out: WeightSpec[] = [];
  const add = (name: string, ...shape: number[]) => out.push({ name, shape });
  if (c.family === 'gpt2') {
    add('transformer.wte.weight', V, H);
    add('transformer.wpe.weight', c.maxPositions, H);
    for (let i = 0; i < c.numLayers; i++) {
      const p = `transformer.h.${i}`;
      add(`${p}.ln_1.weight`, H);
      add(`${p}.ln_1.bias`, H);
      add(`${p}.attn.c_attn.weight`, H, 3 * H);
      add(`${p}.attn.c_attn.bias`, 3 * H);
      add(`${p}.attn.c_proj.weight`, H, H);
      add(`${p}.attn.c_proj.bias`, H);
      add(`${p}.ln_2.weight`, H);
      add(`${p}.ln_2.bias`, H);
      add(`${p}.mlp.c_fc.weight`, H, I);
      add(`${p}.mlp.c_fc.bias`, I);
      add(`${p}.mlp.c_proj.weight`, I, H);
      add(`${p}.mlp.c_proj.bias`, H);
    }
    add('transformer.ln_f.weight', H);
    add('transformer.ln_f.bias', H);
    if (!c.tieWordEmbeddings) add('lm_head.weight', V, H);
    return out;
  }
  const q = c.numHeads * c.headDim;
  const kv = c.numKvHeads * c.headDim;
  add('model.embed_tokens.weight', V, H);
  for (let i = 0; i < c.numLayers; i++) {
    const p = `model.layers.${i}`;
    add(`${p}.input_layernorm.weight`, H);
    add(`${p}.self_attn.q_proj.weight`, q, H);
    add(`${p}.self_attn.k_proj.weight`, kv, H);
    add(`${p}.self_attn.v_proj.weight`, kv, H);
    if (c.qkvBias) {
      add(`${p}.self_attn.q_proj.bias`, q);
      add(`${p}.self_attn.k_proj.bias`, kv);
      add(`${p}.self_attn.v_proj.bias`, kv);
    }
    add(`${p}.self_attn.o_proj.weight`, H, q);
    if (c.outputBias) add(`${p}.self_attn.o_proj.bias`, H);
    add(`${p}.post_attention_layernorm.weight`, H);
    add(`${p}.mlp.gate_proj.weight`, I, H);
    add(`${p}.mlp.up_proj.weight`, I, H);
    add(`${p}.mlp.down_proj.weight`, H, I);
    if (c.mlpBias) {
      add(`${p}.mlp.gate_proj.bias`, I);
      add(`${p}.mlp.up_proj.bias`, I);
      add(`${p}.mlp.down_proj.bias`, H);
    }
  }
  add('model.norm.weight', H);
  if (!c.tieWordEmbeddings) add('lm_head.weight', V, H);
  return out;
}

/**
 * Where each expected weight lives in the checkpoint. GPT-2 checkpoints come with and without the
 * 'transformer.' prefix; both resolve. Throws on missing tensors and on shapes the config contradicts.
 */
export function resolveWeights(
  c: ModelConfig,
  available: Map<string, { shape: number[] }>,
  where = 'checkpoint',
): Map<string, string> {
  const resolved = new Map<string, string>();
  const missing: string[] = [];
  for (const spec of expectedWeights(c)) {
    const candidates = c.family === 'gpt2' ? [spec.name, spec.name.replace(/^transformer\./, '')] : [spec.name];
    const found = candidates.find((n) => available.has(n));
    if (!found) {
      missing.push(spec.name);
      continue;
    }
    const shape = available.get(found)!.shape;
    if (shape.length !== spec.shape.length || shape.some((d, i) => d !== spec.shape[i])) {
      throw new InvalidModelFileError(
        where,
        `tensor '${found}' has shape ${JSON.stringify(shape)} but config.json implies ${JSON.stringify(spec.shape)} (config and weights disagree)`,
      );
    }
    resolved.set(spec.name, found);
  }
  if (missing.length) {
    const shown = missing.slice(0, 5).join(', ');
    throw new InvalidModelFileError(where, `missing ${missing.length} tensor(s) the config requires: ${shown}${missing.length > 5 ? ', ...' : ''}`);
  }
  return resolved;
}
