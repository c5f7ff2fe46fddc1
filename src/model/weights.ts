/**
 * The tensors each architecture needs, by Hugging Face name and shape, and the check that a checkpoint
 * provides them. Shapes are as stored: Linear weights are [out, in]; GPT-2's Conv1D weights are [in, out].
 */
import { InvalidModelFileError } from '../io/safetensors.js';
import { brief } from '../io/strict-json.js';
import type { ModelConfig } from './config.js';
import { hfMappings } from './layout.js';
import { quantizedModules } from './quantized-weights.js';

export interface WeightSpec {
  name: string;
  /** null: any shape (a bitsandbytes quantization state, checked as it is read). */
  shape: number[] | null;
  /**
   * U32: packed 32-bit words of a 4-bit checkpoint (stored U32 or I32); U8: bytes (bitsandbytes' codes);
   * F16: exactly F16 (GPTQ's scales); otherwise any float dtype.
   */
  dtype?: 'U32' | 'U8' | 'F32' | 'F16';
  /** A checkpoint may leave it out. */
  optional?: boolean;
}

/** Every tensor a checkpoint of this config holds: a 4-bit one has packed arrays for its linear weights. */
export function expectedWeights(c: ModelConfig): WeightSpec[] {
  const packed = c.quantization ? quantizedModules(c, c.quantization) : [];
  const replaced = new Set(packed.map((p) => p.hfName));
  return [
    ...hfMappings(c).filter((m) => !replaced.has(m.hfName)).map((m) => ({ name: m.hfName, shape: m.hfShape })),
    ...packed.flatMap((p) => p.tensors.map((t) => ({ name: t.name, shape: t.shape, dtype: t.dtype, optional: t.optional }))),
  ];
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
      if (!spec.optional) missing.push(spec.name);
      continue;
    }
    const shape = available.get(found)!.shape;
    if (spec.shape && (shape.length !== spec.shape.length || shape.some((d, i) => d !== spec.shape![i]))) {
      throw new InvalidModelFileError(
        where,
        `tensor '${found}' has shape ${brief(JSON.stringify(shape))} but config.json implies ${JSON.stringify(spec.shape)} (config and weights disagree)`,
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
