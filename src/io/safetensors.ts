/**
 * safetensors: an 8-byte little-endian header length N, N bytes of JSON
 * ({name: {dtype, shape, data_offsets: [begin, end]}, __metadata__?: {string: string}}), then the data,
 * offsets relative to its start. The header is validated completely (bounds, dtypes, sizes, overlaps)
 * before anything is allocated; tensors are then read one at a time by byte range.
 */
import { WebGPUFinetuneError } from '../errors.js';
import type { ByteSource } from './bytes.js';
import { brief, JsonNumber, parseStrictJson, StrictJsonError, type StrictJson } from './strict-json.js';

/**
 * The safetensors rules a header breaks, named so callers and tests can tell them apart: 'size' (file
 * too short, header length out of bounds), 'utf8', 'header-start' (the JSON must begin with '{'),
 * 'json' (syntax), 'duplicate-key', 'depth', 'structure' (not a map of tensors), 'metadata' (not a map
 * of strings to strings), 'dtype', 'shape', 'offsets' (not non-negative integers written as such, or
 * disagreeing with dtype and shape), 'coverage' (tensor data must tile the data section: no gaps,
 * overlaps or trailing bytes), and 'content' (a valid file that lacks what the model needs).
 */
export type SafetensorsRule =
  | 'size' | 'utf8' | 'header-start' | 'json' | 'duplicate-key' | 'depth' | 'structure' | 'metadata'
  | 'dtype' | 'shape' | 'offsets' | 'coverage' | 'content';

/** A file that is not valid safetensors, or disagrees with what the model needs. */
export class InvalidModelFileError extends WebGPUFinetuneError {
  readonly file: string;
  readonly rule: SafetensorsRule;
  constructor(file: string, message: string, rule: SafetensorsRule = 'content') {
    super('invalid-model-file', `${file}: ${message}`);
    this.file = file;
    this.rule = rule;
  }
}

/** Bits per element of every dtype the format defines (F4 and F6 pack below a byte). */
export const DTYPE_BITS = {
  F64: 64,
  C64: 64,
  F32: 32,
  F16: 16,
  BF16: 16,
  F8_E4M3: 8,
  F8_E5M2: 8,
  F8_E8M0: 8,
  F6_E2M3: 6,
  F6_E3M2: 6,
  F4: 4,
  I64: 64,
  I32: 32,
  I16: 16,
  I8: 8,
  U64: 64,
  U32: 32,
  U16: 16,
  U8: 8,
  BOOL: 8,
} as const;
export type Dtype = keyof typeof DTYPE_BITS;

export interface TensorInfo {
  name: string;
  dtype: Dtype;
  shape: number[];
  /** Absolute byte range in the file. */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** Tensors in file order. */
  tensors: TensorInfo[];
  byName: Map<string, TensorInfo>;
  metadata: Record<string, string>;
  /** Byte offset where the data section starts. */
  dataStart: number;
}

/** Headers larger than this are refused before reading them (the reference implementation's limit). */
export const MAX_HEADER_BYTES = 100_000_000;
/** A valid header nests three levels (file, tensor, shape); anything much deeper is hostile. */
const MAX_HEADER_DEPTH = 8;

export function elementCount(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** A user-controlled JSON value, shortened for a one-line message. */
function show(v: StrictJson | undefined): string {
  return brief(JSON.stringify(v, (_k, x) => (x instanceof JsonNumber ? x.value : x instanceof Map ? Object.fromEntries(x) : x)) ?? 'nothing');
}

/**
 * Read and validate the header of a safetensors source by the format's rules (those of the reference
 * implementation), before any tensor is read or allocated.
 */
export async function readHeader(source: ByteSource): Promise<SafetensorsHeader> {
  const bad = (rule: SafetensorsRule, msg: string) => new InvalidModelFileError(source.name, msg, rule);
  if (source.size < 8) throw bad('size', `${source.size} bytes is too short for a safetensors file`);
  const prefix = await source.read(0, 8);
  const n = Number(new DataView(prefix.buffer, prefix.byteOffset, 8).getBigUint64(0, true));
  if (n > MAX_HEADER_BYTES) throw bad('size', `header length ${n} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  if (8 + n > source.size) throw bad('size', `header length ${n} runs past the end of the ${source.size}-byte file (truncated?)`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(await source.read(8, n));
  } catch (e) {
    if (e instanceof TypeError) throw bad('utf8', 'header is not valid UTF-8');
    throw e;
  }
  if (!text.startsWith('{')) throw bad('header-start', `header must begin with '{', found ${JSON.stringify(brief(text.slice(0, 4), 4))}`);
  let json: StrictJson;
  try {
    json = parseStrictJson(text, MAX_HEADER_DEPTH);
  } catch (e) {
    if (!(e instanceof StrictJsonError)) throw e;
    throw bad(e.rule === 'syntax' ? 'json' : e.rule, `header is not valid JSON: ${e.message}`);
  }
  if (!(json instanceof Map)) throw bad('structure', 'header is not a JSON object');
  const dataStart = 8 + n;
  const dataSize = source.size - dataStart;
  const tensors: TensorInfo[] = [];
  let metadata: Record<string, string> = {};
  // A JSON escape can spell a lone UTF-16 surrogate (\ud800), which no UTF-8 text holds: the reference
  // implementation (serde_json) refuses it, and a name holding one would match no real tensor name.
  const unpaired = (text: string) => /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?:^|[^\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(text);
  for (const [key, value] of json) {
    const name = brief(key);
    if (unpaired(key)) throw bad('utf8', `tensor name ${JSON.stringify(name)} holds a lone surrogate escape, which is not valid UTF-8`);
    if (key === '__metadata__') {
      if (value === null) continue;
      if (!(value instanceof Map)) throw bad('metadata', `__metadata__ must be a map of strings to strings, found ${show(value)}`);
      for (const [k, v] of value) {
        if (typeof v !== 'string') throw bad('metadata', `__metadata__ value '${brief(k)}' must be a string, found ${show(v)}`);
        if (unpaired(k) || unpaired(v)) throw bad('utf8', `__metadata__ entry ${JSON.stringify(brief(k))} holds a lone surrogate escape, which is not valid UTF-8`);
      }
      metadata = Object.fromEntries(value as Map<string, string>); // own properties, '__proto__' included
      continue;
    }
    // Fields other than these three are ignored, as the reference implementation ignores them.
    if (!(value instanceof Map)) throw bad('structure', `tensor '${name}' is not an object`);
    const dtype = value.get('dtype');
    if (dtype === undefined) throw bad('dtype', `tensor '${name}' has no dtype`);
    if (typeof dtype !== 'string' || !Object.hasOwn(DTYPE_BITS, dtype)) throw bad('dtype', `tensor '${name}' has unknown dtype ${show(dtype)}`);
    const shape = value.get('shape');
    if (shape === undefined) throw bad('shape', `tensor '${name}' has no shape`);
    if (!Array.isArray(shape) || !shape.every((d) => d instanceof JsonNumber && d.isIndex)) {
      throw bad('shape', `tensor '${name}' has an invalid shape ${show(shape)} (dimensions are non-negative integers)`);
    }
    const off = value.get('data_offsets');
    if (off === undefined) throw bad('offsets', `tensor '${name}' has no data_offsets`);
    if (!Array.isArray(off) || off.length !== 2 || !off.every((o) => o instanceof JsonNumber && o.isIndex)) {
      throw bad('offsets', `tensor '${name}' has invalid data_offsets ${show(off)} (two non-negative integers)`);
    }
    const [begin, end] = (off as JsonNumber[]).map((o) => o.value);
    if (begin > end) throw bad('offsets', `tensor '${name}' has data_offsets [${begin}, ${end}] that end before they begin`);
    if (end > dataSize) throw bad('offsets', `tensor '${name}' ends at data byte ${end} but the file holds only ${dataSize} data bytes (truncated?)`);
    const dims = (shape as JsonNumber[]).map((d) => d.value);
    // The element count must not overflow on the way, even when a later dimension is 0 (the reference
    // multiplies with overflow checks in that order).
    let elements = 1;
    for (const d of dims) {
      elements *= d;
      if (!Number.isSafeInteger(elements)) throw bad('shape', `tensor '${name}' has a shape ${show(shape)} whose element count overflows`);
    }
    const bits = elements * DTYPE_BITS[dtype as Dtype];
    if (bits % 8) throw bad('shape', `tensor '${name}' (${dtype} ${show(shape)}) does not fill whole bytes`);
    if (end - begin !== bits / 8) {
      throw bad('offsets', `tensor '${name}' (${dtype} ${show(shape)}) needs ${bits / 8} bytes but its offsets span ${end - begin}`);
    }
    tensors.push({ name: key, dtype: dtype as Dtype, shape: dims, begin: dataStart + begin, end: dataStart + end });
  }
  // The data section is exactly the tensors, back to back in offset order.
  tensors.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = dataStart;
  for (const t of tensors) {
    if (t.begin > at) throw bad('coverage', `${t.begin - at} data bytes before tensor '${brief(t.name)}' belong to no tensor (a gap)`);
    if (t.begin < at) throw bad('coverage', `tensor '${brief(t.name)}' overlaps the tensor before it`);
    at = t.end;
  }
  if (at !== source.size) throw bad('coverage', `${source.size - at} trailing data bytes belong to no tensor`);
  return { tensors, byName: new Map(tensors.map((t) => [t.name, t])), metadata, dataStart };
}

/** IEEE binary16 bits to float32. */
export function f16ToF32(src: Uint16Array, out = new Float32Array(src.length)): Float32Array {
  const u = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) {
    const h = src[i];
    const sign = (h & 0x8000) << 16;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) {
      out[i] = (frac * 2 ** -24) * (sign ? -1 : 1); // zero and subnormals
    } else if (exp === 31) {
      u[i] = sign | 0x7f800000 | (frac << 13); // inf, nan
    } else {
      u[i] = sign | ((exp + 112) << 23) | (frac << 13);
    }
  }
  return out;
}

/** bfloat16 bits to float32: the high half of the float32 bits. */
export function bf16ToF32(src: Uint16Array, out = new Float32Array(src.length)): Float32Array {
  const u = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) u[i] = src[i] << 16;
  return out;
}

/** float32 to binary16 bits, round to nearest even (for writing f16 files). */
export function f32ToF16(src: Float32Array): Uint16Array {
  const out = new Uint16Array(src.length);
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const x = u[i];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let frac = x & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (frac ? 0x200 : 0);
      continue;
    }
    const e = exp - 127 + 15;
    if (e >= 31) {
      out[i] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      frac |= 0x800000;
      const shift = 14 - e;
      let half = frac >> shift;
      const rem = frac & ((1 << shift) - 1);
      const mid = 1 << (shift - 1);
      if (rem > mid || (rem === mid && half & 1)) half++;
      out[i] = sign | half;
      continue;
    }
    let half = (e << 10) | (frac >> 13);
    const rem = frac & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
    out[i] = sign | half; // a carry into the exponent is the correct rounding
  }
  return out;
}

/** float32 to bfloat16 bits, round to nearest even. */
export function f32ToBf16(src: Float32Array): Uint16Array {
  const out = new Uint16Array(src.length);
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const x = u[i];
    if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) out[i] = (x >>> 16) | 0x40; // keep NaN a NaN
    else out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
  }
  return out;
}

/** A tensor's bytes copied into a buffer of their own: offsets inside the file need not be aligned. */
async function readAligned(source: ByteSource, info: TensorInfo): Promise<ArrayBuffer> {
  const raw = await source.read(info.begin, info.end - info.begin);
  const bytes = new Uint8Array(raw.byteLength);
  bytes.set(raw);
  return bytes.buffer;
}

/** Read one tensor as float32 (F32, F16 and BF16 sources). */
export async function readTensorF32(source: ByteSource, info: TensorInfo): Promise<Float32Array> {
  const buffer = await readAligned(source, info);
  switch (info.dtype) {
    case 'F32':
      return new Float32Array(buffer);
    case 'F16':
      return f16ToF32(new Uint16Array(buffer));
    case 'BF16':
      return bf16ToF32(new Uint16Array(buffer));
    default:
      throw new InvalidModelFileError(source.name, `tensor '${brief(info.name)}' has dtype ${info.dtype}; expected F32, F16 or BF16`, 'dtype');
  }
}

/** A tensor to write: floats (stored F32, F16 or BF16), 32-bit integers (indices) or bytes. */
export type TensorToWrite =
  | { dtype: 'F32' | 'F16' | 'BF16'; shape: number[]; data: Float32Array }
  | { dtype: 'U32'; shape: number[]; data: Uint32Array }
  | { dtype: 'I32'; shape: number[]; data: Int32Array }
  | { dtype: 'U8'; shape: number[]; data: Uint8Array };

function encodeTensor(t: TensorToWrite): Uint8Array {
  if (t.dtype === 'F16' || t.dtype === 'BF16') return new Uint8Array((t.dtype === 'F16' ? f32ToF16(t.data) : f32ToBf16(t.data)).buffer);
  return new Uint8Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength));
}

/**
 * Read an integer tensor of indices (U32, I32 or I64, as PyTorch writes them) as u32; negative values
 * or values past 2^32 are an error naming the tensor.
 */
export async function readIndexTensor(source: ByteSource, info: TensorInfo): Promise<Uint32Array> {
  if (info.dtype !== 'U32' && info.dtype !== 'I32' && info.dtype !== 'I64') {
    throw new InvalidModelFileError(source.name, `tensor '${brief(info.name)}' has dtype ${info.dtype}; expected integer indices (U32, I32 or I64)`, 'dtype');
  }
  const buffer = await readAligned(source, info);
  if (info.dtype === 'U32') return new Uint32Array(buffer);
  const values = info.dtype === 'I32' ? new Int32Array(buffer) : new BigInt64Array(buffer);
  const out = new Uint32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = Number(values[i]);
    if (!(v >= 0 && v < 2 ** 32)) throw new InvalidModelFileError(source.name, `tensor '${brief(info.name)}' holds index ${v} at ${i}, outside [0, 2^32)`);
    out[i] = v;
  }
  return out;
}

/** Read a tensor of 32-bit words (U32, or I32 as PyTorch packs them) as their u32 bit patterns. */
export async function readWords(source: ByteSource, info: TensorInfo): Promise<Uint32Array> {
  if (info.dtype !== 'U32' && info.dtype !== 'I32') throw new InvalidModelFileError(source.name, `tensor '${brief(info.name)}' has dtype ${info.dtype}; expected 32-bit words (U32 or I32)`, 'dtype');
  return new Uint32Array(await readAligned(source, info));
}

/** Read a tensor of bytes (U8) as stored. */
export async function readBytes(source: ByteSource, info: TensorInfo): Promise<Uint8Array> {
  if (info.dtype !== 'U8') throw new InvalidModelFileError(source.name, `tensor '${brief(info.name)}' has dtype ${info.dtype}; expected bytes (U8)`, 'dtype');
  return new Uint8Array(await readAligned(source, info));
}

/** Bytes a tensor's data takes in a file. */
function storedBytes(t: TensorToWrite): number {
  return t.data.length * (t.dtype === 'U8' ? 1 : t.dtype === 'F16' || t.dtype === 'BF16' ? 2 : 4);
}

/** The index file of a sharded checkpoint, as transformers names it. */
export const SHARD_INDEX = 'model.safetensors.index.json';

/**
 * Tensors as transformers' save_pretrained writes them: one model.safetensors when they fit in
 * maxShardBytes, otherwise shards model-0000i-of-0000n.safetensors filled in order (a tensor larger than
 * the limit gets a shard of its own) and model.safetensors.index.json naming each tensor's shard.
 */
export function shardedSafetensors(tensors: Record<string, TensorToWrite>, maxShardBytes: number, metadata?: Record<string, string>): Record<string, Uint8Array> {
  if (!(maxShardBytes > 0)) throw new RangeError(`maxShardBytes must be positive, got ${maxShardBytes}`);
  const shards: Record<string, TensorToWrite>[] = [];
  let current: Record<string, TensorToWrite> = {};
  let bytes = 0;
  let totalSize = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const size = storedBytes(t);
    if (bytes > 0 && bytes + size > maxShardBytes) {
      shards.push(current);
      current = {};
      bytes = 0;
    }
    current[name] = t;
    bytes += size;
    totalSize += size;
  }
  shards.push(current);
  if (shards.length === 1) return { 'model.safetensors': writeSafetensors(shards[0], metadata) };
  const pad = (i: number) => String(i).padStart(5, '0');
  const files: Record<string, Uint8Array> = {};
  const weightMap: Record<string, string> = {};
  shards.forEach((shard, i) => {
    const file = `model-${pad(i + 1)}-of-${pad(shards.length)}.safetensors`;
    files[file] = writeSafetensors(shard, metadata);
    for (const name of Object.keys(shard)) weightMap[name] = file;
  });
  files[SHARD_INDEX] = new TextEncoder().encode(JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2) + '\n');
  return files;
}

/** Serialize tensors (in the given order) into safetensors bytes. */
export function writeSafetensors(tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    if (t.data.length !== elementCount(t.shape)) {
      throw new RangeError(`tensor '${name}': ${t.data.length} values for shape ${JSON.stringify(t.shape)}`);
    }
    const encoded = encodeTensor(t);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + encoded.byteLength] };
    chunks.push(encoded);
    offset += encoded.byteLength;
  }
  let json = JSON.stringify(header);
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  json += ' '.repeat((8 - ((8 + new TextEncoder().encode(json).byteLength) % 8)) % 8);
  const headerBytes = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + headerBytes.byteLength + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(headerBytes.byteLength), true);
  out.set(headerBytes, 8);
  let at = 8 + headerBytes.byteLength;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}
