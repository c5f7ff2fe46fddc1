/**
 * GPTQ 4-bit checkpoints as transformers, AutoGPTQ and GPTQModel save them, loaded onto this engine's
 * int4 weights (shaders/int4.wgsl) by rearranging words, never by re-quantizing.
 *
 * config.json carries "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": G,
 * "desc_act": false, "sym": true | false, "checkpoint_format": "gptq" | "gptq_v2"}. Each quantized
 * linear `<module>` (every linear layer of the decoder blocks; embeddings and the LM head stay dense)
 * stores, for in-features K and out-features N (a Conv1D's [in, out] weight counts the same way):
 *   qweight I32 [K / 8, N]       value (k, n) in word (k / 8, n), bits 4 * (k % 8) (low nibble first)
 *   qzeros  I32 [K / G, N / 8]   zero point of (group g, column n) in word (g, n / 8), bits 4 * (n % 8);
 *                                checkpoint_format "gptq" (the default) stores zero - 1 (masked to 4
 *                                bits, so readers add 1 and get 1..16), "gptq_v2" the zero itself
 *   scales  F16 [K / G, N]
 *   g_idx   I32 [K]              group of each input row: k / G when desc_act is false (optional here)
 * and W[n, k] = scales[g, n] * (q(k, n) - zero(g, n)) with g = k / G. That is int4's format transposed,
 * with GPTQ's zero - 1 carried by the layout's zero bias. A weight the engine splits (GPT-2's c_attn
 * into q, k and v) is split along N.
 */
import { InvalidModelFileError, f32ToF16 } from '../io/safetensors.js';
import { brief } from '../io/strict-json.js';
import { INT4_GROUP_SIZES, int4Layout, type Int4GroupSize, type Int4ZeroBias } from '../kernels/int4.js';
import { InvalidConfigError, type ModelConfig, type StoredQuantization } from './config.js';
import { paramSpecs } from './layout.js';
import { linearMappings } from './linear-weights.js';
import type { QuantizedModule } from './quantized-weights.js';

type Json = Record<string, unknown>;

/** The int4 weights a GPTQ quantization_config describes; what this engine cannot run is refused by name. */
export function gptqQuantization(q: Json): StoredQuantization {
  const refuse = (what: string) => new InvalidConfigError(`this GPTQ checkpoint ${what}; supported: 4-bit, group size ${INT4_GROUP_SIZES.join(', ')}, desc_act false, checkpoint_format 'gptq' or 'gptq_v2'`);
  if (q.bits !== 4) throw refuse(`has ${brief(String(q.bits))}-bit weights`);
  if (q.desc_act === true) throw refuse('uses act-order (desc_act true)');
  if (!INT4_GROUP_SIZES.includes(q.group_size as Int4GroupSize)) throw refuse(`has group size ${brief(String(q.group_size))}`);
  if (q.lm_head === true) throw refuse('quantizes the LM head (lm_head true)');
  if (q.is_marlin_format === true) throw refuse('is in Marlin format');
  if (q.dynamic !== undefined && q.dynamic !== null && Object.keys(q.dynamic as object).length) throw refuse('sets per-module overrides (dynamic)');
  if (q.pack_dtype !== undefined && q.pack_dtype !== 'int32') throw refuse(`packs into ${brief(String(q.pack_dtype))}`);
  const format = q.checkpoint_format ?? q.format ?? 'gptq';
  if (format !== 'gptq' && format !== 'gptq_v2') throw refuse(`has checkpoint_format '${brief(String(format))}'`);
  return { format: 'int4', groupSize: q.group_size as Int4GroupSize, zeroBias: format === 'gptq' ? 1 : 0, packing: 'gptq' };
}

/** Every quantized module of a GPTQ checkpoint: its tensors, and how they become the engine's int4 parts. */
export function gptqModules(config: ModelConfig, q: StoredQuantization): QuantizedModule[] {
  const shapes = new Map(paramSpecs(config).map((s) => [s.name, s.shape]));
  const G = q.groupSize;
  const out: QuantizedModule[] = [];
  for (const m of linearMappings(config)) {
    const module = m.hfName.replace(/\.weight$/, '');
    const parts = m.parts.map((part) => ({ part, N: shapes.get(part)![0] }));
    const K = shapes.get(m.parts[0])![1];
    const N = parts.reduce((s, p) => s + p.N, 0);
    if (K % 8 || parts.some((p) => p.N % 8)) throw new InvalidConfigError(`GPTQ packs 8 values per word: ${module} (${N} x ${K}, parts of ${parts.map((p) => p.N).join(', ')}) does not divide into words`);
    const groups = Math.ceil(K / G);
    out.push({
      hfName: m.hfName,
      parts: parts.map(({ part }) => ({ part })),
      tensors: [
        { name: `${module}.qweight`, array: 'qweight', shape: [K / 8, N], dtype: 'U32' },
        { name: `${module}.qzeros`, array: 'qzeros', shape: [groups, N / 8], dtype: 'U32' },
        { name: `${module}.scales`, array: 'scales', shape: [groups, N], dtype: 'F16' },
        { name: `${module}.g_idx`, array: 'g_idx', shape: [K], dtype: 'U32', optional: true },
      ],
      toParts(arrays) {
        const gIdx = arrays.g_idx as Uint32Array | undefined;
        const wrong = gIdx?.findIndex((g, k) => g !== Math.floor(k / G)) ?? -1;
        if (wrong >= 0) throw new InvalidModelFileError(`${module}.g_idx`, `row ${wrong} is in group ${gIdx![wrong]}, not ${Math.floor(wrong / G)}: act-order weights are not supported`);
        const scales = f32ToF16(arrays.scales as Float32Array);
        let first = 0;
        return parts.map(({ part, N: n }) => {
          const converted = gptqToInt4(arrays.qweight as Uint32Array, arrays.qzeros as Uint32Array, scales, { K, N, G, first, count: n, zeroBias: q.zeroBias });
          first += n;
          return { part, arrays: converted };
        });
      },
    });
  }
  return out;
}

/**
 * Columns [first, first + count) of a GPTQ weight as int4 arrays [count, in] (the layout of
 * int4Layout(count, K, G)). `scales` are the f16 bits of GPTQ's [K / G, N] scales.
 */
export function gptqToInt4(
  qweight: Uint32Array,
  qzeros: Uint32Array,
  scales: Uint16Array,
  o: { K: number; N: number; G: number; first: number; count: number; zeroBias: Int4ZeroBias },
): { qweight: Uint32Array; scales: Uint32Array; zeros: Uint32Array } {
  const { K, N, first, count } = o;
  const l = int4Layout(count, K, o.G, o.zeroBias);
  const q = new Uint32Array(count * l.wordsPerRow);
  const s = new Uint32Array(count * l.scaleWordsPerRow);
  const z = new Uint32Array(count * l.zeroWordsPerRow);
  for (let n = 0; n < count; n++) {
    const c = first + n;
    for (let r = 0; r < l.wordsPerRow; r++) q[n * l.wordsPerRow + r] = qweight[r * N + c];
    for (let g = 0; g < l.groupsPerRow; g++) {
      s[n * l.scaleWordsPerRow + (g >> 1)] |= scales[g * N + c] << (16 * (g & 1));
      const zero = (qzeros[g * (N / 8) + (c >> 3)] >>> (4 * (c & 7))) & 15;
      z[n * l.zeroWordsPerRow + (g >> 3)] |= zero << (4 * (g & 7));
    }
  }
  return { qweight: q, scales: s, zeros: z };
}
