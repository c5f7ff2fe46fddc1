/**
 * 4-bit checkpoints bitsandbytes saved (transformers' BitsAndBytesConfig with load_in_4bit, the
 * `*-bnb-4bit` uploads), loaded onto this engine's NF4 weights (shaders/nf4.wgsl) by rearranging bytes,
 * never by re-quantizing: the dequantized values are bitsandbytes' own.
 *
 * config.json carries "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": true,
 * "bnb_4bit_quant_type": "nf4" | "fp4", "bnb_4bit_use_double_quant": bool, "bnb_4bit_quant_storage":
 * "uint8", "llm_int8_skip_modules": [...]}. Each quantized linear `<module>` (nn.Linear, or Conv1D
 * transposed to [out, in] first) stores, for its N x K weight flattened row-major (bitsandbytes'
 * QuantState.as_dict(packed=True), functional.py):
 *   weight                              U8 [ceil(N K / 2), 1]  two codes per byte, the first in the
 *                                                              high nibble
 *   weight.absmax                       F32 [T], or U8 [T] double-quantized: one per block of
 *                                       `blocksize` (64) consecutive values, T = ceil(N K / 64)
 *   weight.quant_map                    F32 [16]   the code table (NF4's, or FP4's divided by 12)
 *   weight.nested_absmax                F32 [ceil(T / 256)]  double quantization: a scale per 256 blocks
 *   weight.nested_quant_map             F32 [256]  its 8-bit dynamic map
 *   weight.quant_state.bitsandbytes__<type>  U8: JSON of quant_type, blocksize, dtype, shape and, double-
 *                                       quantized, nested_blocksize, nested_dtype, nested_offset
 * Dequantized: w = quant_map[code] * absmax_b, with absmax_b = nested_quant_map[c_b] * nested_absmax_j
 * + nested_offset when double-quantized (backends/default/ops.py). Modules llm_int8_skip_modules
 * names stay 16-bit, as transformers leaves them (quantizers_utils.should_convert_module).
 */
import { InvalidModelFileError } from '../io/safetensors.js';
import { brief } from '../io/strict-json.js';
import { FP4_CODES, NF4_BLOCK, NF4_CODES, nf4Layout, type Nf4Codes } from '../kernels/nf4.js';
import { InvalidConfigError, type ModelConfig, type StoredQuantization } from './config.js';
import { paramSpecs } from './layout.js';
import { linearMappings } from './linear-weights.js';
import type { QuantizedModule } from './quantized-weights.js';

type Json = Record<string, unknown>;

/** Double quantization's blocks of absmax values (quantize_4bit's compress_statistics). */
const NESTED_BLOCK = 256;

/** The NF4 weights a bitsandbytes quantization_config describes; what this engine cannot run is refused by name. */
export function bitsandbytesQuantization(q: Json): StoredQuantization {
  const refuse = (what: string) => new InvalidConfigError(`this bitsandbytes checkpoint ${what}; supported: 4-bit (load_in_4bit) NF4 or FP4, with or without double quantization, stored uint8`);
  if (q.load_in_8bit === true) throw refuse('is 8-bit (load_in_8bit, LLM.int8)');
  if (q.load_in_4bit !== true) throw refuse('does not set load_in_4bit');
  const type = q.bnb_4bit_quant_type ?? 'fp4'; // BitsAndBytesConfig's default
  if (type !== 'nf4' && type !== 'fp4') throw refuse(`has bnb_4bit_quant_type '${brief(String(type))}'`);
  const storage = q.bnb_4bit_quant_storage ?? 'uint8';
  if (storage !== 'uint8') throw refuse(`packs its codes into ${brief(String(storage))} (bnb_4bit_quant_storage)`);
  const doubleQuant = q.bnb_4bit_use_double_quant ?? false;
  if (typeof doubleQuant !== 'boolean') throw refuse(`has bnb_4bit_use_double_quant ${brief(String(doubleQuant))}`);
  const skip = q.llm_int8_skip_modules ?? null;
  if (skip !== null && !(Array.isArray(skip) && skip.every((s) => typeof s === 'string'))) throw refuse('has an llm_int8_skip_modules that is not a list of names');
  for (const s of (skip ?? []) as string[]) {
    try {
      new RegExp(s);
    } catch {
      throw refuse(`has llm_int8_skip_modules entry '${brief(s)}', which is not a pattern`);
    }
  }
  return { format: 'nf4', groupSize: 64, zeroBias: 0, packing: 'bitsandbytes', codes: type, ...(doubleQuant ? { doubleQuant } : {}), ...(skip ? { skipModules: skip as string[] } : {}) };
}

/** Whether transformers left a module unquantized: an llm_int8_skip_modules entry matches it (should_convert_module). */
function skipped(module: string, patterns: string[]): boolean {
  return patterns.some((p) => new RegExp(`^(?:${p})\\.`).test(module) || new RegExp(`^(?:${p})`).test(module) || module.endsWith(p));
}

/** The quantization state bitsandbytes packs into a U8 tensor as JSON. */
interface QuantStateJson {
  quant_type: string;
  blocksize: number;
  shape: number[];
  nested_blocksize?: number;
  nested_offset?: number;
}

/** Every quantized module of a bitsandbytes checkpoint: its tensors, and how they become the engine's NF4 parts. */
export function bitsandbytesModules(config: ModelConfig, q: StoredQuantization): QuantizedModule[] {
  const shapes = new Map(paramSpecs(config).map((s) => [s.name, s.shape]));
  const codes = q.codes ?? 'nf4';
  const dq = !!q.doubleQuant;
  const out: QuantizedModule[] = [];
  for (const m of linearMappings(config)) {
    const module = m.hfName.replace(/\.weight$/, '');
    if (skipped(module, q.skipModules ?? [])) continue;
    const K = shapes.get(m.parts[0])![1];
    const parts = m.parts.map((part) => ({ part, N: shapes.get(part)![0] }));
    const N = parts.reduce((s, p) => s + p.N, 0);
    const T = Math.ceil((N * K) / NF4_BLOCK);
    if (K % 8) throw new InvalidConfigError(`${module} (${N} x ${K}): bitsandbytes' blocks run across rows, which this engine reads with an in-width that is a multiple of 8`);
    // Each part starts on a block boundary of the flattened weight, and owns its blocks from there.
    let first = 0;
    const placed = parts.map(({ part, N: n }) => {
      const { b0, dqOffset } = partPlacement(first, K, dq);
      if (!Number.isInteger(b0)) throw new InvalidConfigError(`${module} (${N} x ${K}) splits into parts of ${parts.map((p) => p.N).join(', ')} rows, and bitsandbytes' blocks of ${NF4_BLOCK} cross a part boundary`);
      const at = { part, first, count: n, dqOffset };
      first += n;
      return at;
    });
    const state = `${m.hfName}.quant_state.bitsandbytes__${codes}`;
    out.push({
      hfName: m.hfName,
      parts: placed.map((p) => ({ part: p.part, bitsandbytes: { codes, dqOffset: p.dqOffset } })),
      tensors: [
        { name: m.hfName, array: 'weight', shape: [Math.ceil((N * K) / 2), 1], dtype: 'U8' },
        { name: `${m.hfName}.absmax`, array: 'absmax', shape: [T], dtype: dq ? 'U8' : 'F32' },
        { name: `${m.hfName}.quant_map`, array: 'quant_map', shape: [16], dtype: 'F32' },
        ...(dq
          ? [
              { name: `${m.hfName}.nested_absmax`, array: 'nested_absmax', shape: [Math.ceil(T / NESTED_BLOCK)], dtype: 'F32' as const },
              { name: `${m.hfName}.nested_quant_map`, array: 'nested_quant_map', shape: [256], dtype: 'F32' as const },
            ]
          : []),
        { name: state, array: 'quant_state', shape: null, dtype: 'U8' },
      ],
      toParts(arrays) {
        const bad = (what: string) => new InvalidModelFileError(state, what);
        let json: QuantStateJson;
        try {
          json = JSON.parse(new TextDecoder().decode(arrays.quant_state)) as QuantStateJson;
        } catch (e) {
          throw bad(`is not the JSON bitsandbytes packs (${e instanceof Error ? e.message : e})`);
        }
        if (json.quant_type !== codes) throw bad(`says quant_type '${brief(String(json.quant_type))}' where quantization_config says '${codes}'`);
        if (json.blocksize !== NF4_BLOCK) throw bad(`has blocksize ${brief(String(json.blocksize))}; this engine loads blocks of ${NF4_BLOCK} (bitsandbytes' default)`);
        if (!Array.isArray(json.shape) || json.shape.join() !== `${N},${K}`) throw bad(`has shape ${brief(JSON.stringify(json.shape))}, not the ${N} x ${K} the config implies`);
        const table = codes === 'nf4' ? NF4_CODES : FP4_CODES;
        const map = arrays.quant_map as Float32Array;
        const wrong = table.findIndex((c, i) => map[i] !== c);
        if (wrong >= 0) throw bad(`comes with a quant_map whose code ${wrong} is ${map[wrong]}, not ${codes.toUpperCase()}'s ${table[wrong]}`);
        let offset = 0;
        if (dq) {
          if (json.nested_blocksize !== NESTED_BLOCK) throw bad(`has nested_blocksize ${brief(String(json.nested_blocksize))}; double quantization uses ${NESTED_BLOCK}`);
          if (typeof json.nested_offset !== 'number' || !Number.isFinite(json.nested_offset)) throw bad('has no finite nested_offset');
          offset = json.nested_offset;
        }
        return placed.map((p) => ({
          part: p.part,
          arrays: bitsandbytesToNf4(
            { weight: arrays.weight as Uint8Array, absmax: arrays.absmax as Float32Array | Uint8Array, nestedAbsmax: arrays.nested_absmax as Float32Array | undefined, nestedMap: arrays.nested_quant_map as Float32Array | undefined, offset },
            { K, first: p.first, count: p.count, codes },
          ),
        }));
      },
    });
  }
  return out;
}

/**
 * Bytes of codes with the two nibbles of each swapped: bitsandbytes puts a byte's first value in the high
 * nibble, the engine's words (read little-endian) in the low one; the swap is its own inverse.
 */
export function swapNibbles(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(Math.ceil(bytes.length / 4) * 4);
  out.set(bytes);
  // Four bytes at a time (the loader's hot loop on a large model).
  const words = new Uint32Array(out.buffer);
  for (let i = 0; i < words.length; i++) {
    const w = words[i];
    words[i] = ((w & 0x0f0f0f0f) << 4) | ((w >>> 4) & 0x0f0f0f0f);
  }
  return out.subarray(0, bytes.length);
}

/**
 * Where rows [first, ...) of a weight with in-width K start among bitsandbytes' blocks: the first block
 * b0, and, double-quantized, how many blocks of its group of 256 come before it (the layout's dqOffset).
 */
export function partPlacement(first: number, K: number, doubleQuant: boolean): { b0: number; dqOffset: number } {
  const b0 = (first * K) / NF4_BLOCK;
  return { b0, dqOffset: doubleQuant ? b0 % NESTED_BLOCK : 0 };
}

/** A bitsandbytes 4-bit weight's stored arrays (nested ones only when double-quantized). */
export interface BitsandbytesArrays {
  weight: Uint8Array;
  /** f32 per block, or u8 codes double-quantized. */
  absmax: Float32Array | Uint8Array;
  nestedAbsmax?: Float32Array;
  nestedMap?: Float32Array;
  /** nested_offset: the mean the double-quantized absmax was centred on. */
  offset: number;
}

/**
 * Rows [first, first + count) of a bitsandbytes weight with in-width K as the engine's NF4 arrays (the
 * layout of nf4Layout(count, K, {doubleQuant, bitsandbytes})): codes re-packed eight to a word, low
 * nibble first; the part's absmax blocks as stored; double-quantized, its codes, the scales of its
 * groups of 256 blocks, the offset and the map. The part starts on a block boundary.
 */
export function bitsandbytesToNf4(a: BitsandbytesArrays, o: { K: number; first: number; count: number; codes: Nf4Codes }): { qweight: Uint32Array; absmax: Float32Array | Uint32Array } {
  const { K, first, count } = o;
  const doubleQuant = a.absmax instanceof Uint8Array;
  const { b0, dqOffset } = partPlacement(first, K, doubleQuant);
  const l = nf4Layout(count, K, { doubleQuant, bitsandbytes: { codes: o.codes, dqOffset } });
  // K is a multiple of 8, so rows hold whole words and the flattened codes are the packed rows.
  const words = count * l.wordsPerRow;
  const bytes = a.weight.subarray((first * K) / 2, (first * K) / 2 + words * 4);
  const qweight = new Uint32Array(swapNibbles(bytes).buffer, 0, words);
  if (!doubleQuant) return { qweight, absmax: (a.absmax as Float32Array).slice(b0, b0 + l.blocks) };
  const absmax = new Uint32Array(l.absmaxWords);
  const codes = new Uint8Array(absmax.buffer, 0, l.blocks);
  codes.set((a.absmax as Uint8Array).subarray(b0, b0 + l.blocks));
  const scalesAt = Math.ceil(l.blocks / 4);
  const g0 = Math.floor(b0 / NESTED_BLOCK);
  const groups = Math.ceil((l.blocks + l.dqOffset) / NESTED_BLOCK);
  const f32 = new Float32Array(absmax.buffer);
  f32.set(a.nestedAbsmax!.subarray(g0, g0 + groups), scalesAt);
  f32[scalesAt + groups] = a.offset;
  f32.set(a.nestedMap!, scalesAt + groups + 1);
  return { qweight, absmax };
}
