import { describe, expect, it } from 'vitest';
import { bytesSource } from '../../src/io/bytes.js';
import {
  bf16ToF32,
  f16ToF32,
  f32ToBf16,
  f32ToF16,
  InvalidModelFileError,
  readHeader,
  readTensorF32,
  writeSafetensors,
} from '../../src/io/safetensors.js';
import { freshSeed, randn, rng } from '../helpers.js';

/** A file from a header object and a data section, byte for byte as the format defines. */
function rawFile(header: unknown, data: Uint8Array, lieAboutLength?: number): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(lieAboutLength ?? json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

/** A file from raw header bytes and a data section. */
function rawHeaderFile(json: Uint8Array, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

describe('safetensors', () => {
  it('round-trips F32, F16 and BF16 tensors with metadata', async () => {
    const seed = freshSeed();
    const rand = rng(seed);
    const a = randn(3 * 17, rand);
    const b = randn(33, rand);
    const c = randn(2 * 2 * 5, rand);
    const bytes = writeSafetensors(
      { 'model.a': { dtype: 'F32', shape: [3, 17], data: a }, b: { dtype: 'F16', shape: [33], data: b }, c: { dtype: 'BF16', shape: [2, 2, 5], data: c } },
      { format: 'pt' },
    );
    expect(Number(new DataView(bytes.buffer).getBigUint64(0, true)) % 8).toBe(0); // data 8-byte aligned
    const src = bytesSource('t.safetensors', bytes);
    const h = await readHeader(src);
    expect(h.metadata).toEqual({ format: 'pt' });
    expect(h.tensors.map((t) => t.name)).toEqual(['model.a', 'b', 'c']);
    expect(h.byName.get('c')!.shape).toEqual([2, 2, 5]);
    expect(Array.from(await readTensorF32(src, h.byName.get('model.a')!))).toEqual(Array.from(a));
    const gotB = await readTensorF32(src, h.byName.get('b')!);
    const gotC = await readTensorF32(src, h.byName.get('c')!);
    for (let i = 0; i < b.length; i++) expect(Math.abs(gotB[i] - b[i])).toBeLessThanOrEqual(Math.abs(b[i]) * 2 ** -11 + 2 ** -25);
    for (let i = 0; i < c.length; i++) expect(Math.abs(gotC[i] - c[i])).toBeLessThanOrEqual(Math.abs(c[i]) * 2 ** -8);
  });

  it('converts half-precision bit patterns exactly', () => {
    const f16 = Uint16Array.from([0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000, 0x7c00, 0xfc00, 0x3555, 0x0400]);
    const want = [1, -2, 65504, 2 ** -24, -0, Infinity, -Infinity, 0.333251953125, 2 ** -14];
    expect(Array.from(f16ToF32(f16))).toEqual(want);
    expect(Number.isNaN(f16ToF32(Uint16Array.from([0x7e00]))[0])).toBe(true);
    expect(Array.from(f32ToF16(Float32Array.from(want)))).toEqual(Array.from(f16));
    // Round to nearest even at the halfway point between 1 and the next f16.
    expect(f32ToF16(Float32Array.from([1 + 2 ** -11]))[0]).toBe(0x3c00);
    expect(f32ToF16(Float32Array.from([1 + 3 * 2 ** -11]))[0]).toBe(0x3c02);
    expect(Array.from(bf16ToF32(Uint16Array.from([0x3f80, 0xc040, 0x7f80])))).toEqual([1, -3, Infinity]);
    expect(Array.from(f32ToBf16(Float32Array.from([1, -3, 1 + 2 ** -8, 1 + 3 * 2 ** -8])))).toEqual([0x3f80, 0xc040, 0x3f80, 0x3f82]);
  });

  const data = new Uint8Array(24);
  const good = { w: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] } };
  /** A file whose header is the given text, verbatim (for what JSON.stringify cannot write). */
  const textFile = (header: string, body = data) => rawHeaderFile(new TextEncoder().encode(header), body);
  it.each([
    ['a file shorter than the length prefix', new Uint8Array(5), 'size', /too short/],
    ['a header length past the end', rawFile(good, data, 10_000), 'size', /runs past the end/],
    ['a header length over the limit', rawFile(good, data, 2e9), 'size', /exceeds/],
    ['a header that is not JSON', (() => { const f = rawFile(good, data); f[9] = 0x7b; return f; })(), 'json', /not valid JSON/],
    ['a header that is not UTF-8', (() => { const f = rawFile(good, data); f[12] = 0xff; return f; })(), 'utf8', /UTF-8/],
    ['a tensor name holding a lone surrogate escape', textFile('{"w\\ud800":{"dtype":"F32","shape":[6],"data_offsets":[0,24]}}'), 'utf8', /tensor name "w\\ud800" holds a lone surrogate escape/],
    ['a lone low surrogate escape in metadata', textFile('{"__metadata__":{"format":"\\udc00pt"},"w":{"dtype":"F32","shape":[6],"data_offsets":[0,24]}}'), 'utf8', /__metadata__ entry "format" holds a lone surrogate/],
    ['a header with a byte-order mark', rawHeaderFile(Uint8Array.from([0xef, 0xbb, 0xbf, ...new TextEncoder().encode(JSON.stringify(good))]), data), 'header-start', /begin with '\{'/],
    ['a header with leading whitespace', textFile(` ${JSON.stringify(good)}`), 'header-start', /begin with '\{'/],
    ['a header that is an array', rawFile([1, 2], data), 'header-start', /begin with/],
    ['a duplicate tensor name', textFile('{"w":{"dtype":"F32","shape":[6],"data_offsets":[0,24]},"w":{"dtype":"F32","shape":[6],"data_offsets":[0,24]}}'), 'duplicate-key', /duplicate key 'w'/],
    ['a duplicate field inside a tensor', textFile('{"w":{"dtype":"F32","shape":[6],"shape":[6],"data_offsets":[0,24]}}'), 'duplicate-key', /duplicate key 'shape'/],
    ['a dimension written as a float', textFile('{"w":{"dtype":"F32","shape":[6.0],"data_offsets":[0,24]}}'), 'shape', /invalid shape/],
    ['a dimension in exponent form', textFile('{"w":{"dtype":"F32","shape":[6e0],"data_offsets":[0,24]}}'), 'shape', /invalid shape/],
    ['an offset written as a float', textFile('{"w":{"dtype":"F32","shape":[6],"data_offsets":[0,24.0]}}'), 'offsets', /invalid data_offsets/],
    ['an offset in exponent form', textFile('{"w":{"dtype":"F32","shape":[6],"data_offsets":[0,2.4e1]}}'), 'offsets', /invalid data_offsets/],
    ['a dimension past 2^53', textFile('{"w":{"dtype":"F32","shape":[9007199254740993],"data_offsets":[0,24]}}'), 'shape', /invalid shape/],
    ['a missing dtype', rawFile({ w: { shape: [6], data_offsets: [0, 24] } }, data), 'dtype', /tensor 'w' has no dtype/],
    ['a missing shape', rawFile({ w: { dtype: 'F32', data_offsets: [0, 24] } }, data), 'shape', /tensor 'w' has no shape/],
    ['missing data_offsets', rawFile({ w: { dtype: 'F32', shape: [6] } }, data), 'offsets', /tensor 'w' has no data_offsets/],
    ['a tensor entry that is not an object', rawFile({ w: [1] }, data), 'structure', /tensor 'w' is not an object/],
    ['an element count that overflows before a zero dimension', rawFile({ w: { dtype: 'F32', shape: [2 ** 40, 2 ** 40, 0], data_offsets: [0, 0] }, a: { dtype: 'F32', shape: [6], data_offsets: [0, 24] } }, data), 'shape', /overflows/],
    ['sub-byte elements that do not fill whole bytes', rawFile({ w: { dtype: 'F4', shape: [3], data_offsets: [0, 2] } }, data), 'shape', /whole bytes/],
    ['an unknown dtype', rawFile({ w: { dtype: 'F8', shape: [2], data_offsets: [0, 2] } }, data), 'dtype', /unknown dtype/],
    ['a negative dimension', rawFile({ w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, data), 'shape', /invalid shape/],
    ['offsets that disagree with the shape', rawFile({ w: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 24] } }, data), 'offsets', /needs 16 bytes/],
    ['a tensor past the end of the data (truncated file)', rawFile({ w: { dtype: 'F32', shape: [2, 4], data_offsets: [0, 32] } }, data), 'offsets', /truncated/],
    ['overlapping tensors', rawFile({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [4], data_offsets: [8, 24] } }, data), 'coverage', /overlap/],
    ['a gap between tensors', rawFile({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [16, 24] } }, data), 'coverage', /gap/],
    ['a gap before the first tensor', rawFile({ a: { dtype: 'F32', shape: [4], data_offsets: [8, 24] } }, data), 'coverage', /gap/],
    ['unindexed trailing bytes', rawFile({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, data), 'coverage', /8 trailing data bytes/],
    ['reversed offsets', rawFile({ w: { dtype: 'F32', shape: [0], data_offsets: [8, 4] } }, data), 'offsets', /end before they begin/],
    ['metadata that is not a map', rawFile({ __metadata__: ['a'], ...good }, data), 'metadata', /map of strings to strings/],
    ['a metadata value that is not a string', rawFile({ __metadata__: { step: 3 }, ...good }, data), 'metadata', /'step' must be a string/],
    ['a header nested too deeply', textFile(`{"w":${'['.repeat(100_000)}${']'.repeat(100_000)}}`), 'depth', /nesting deeper/],
  ])('rejects %s', async (_what, bytes, rule, message) => {
    const err = await readHeader(bytesSource('bad.safetensors', bytes)).catch((e) => e);
    expect(err).toBeInstanceOf(InvalidModelFileError);
    expect(err.rule).toBe(rule);
    expect(err.message).toMatch(message);
    expect(err.message).toContain('bad.safetensors');
    expect(err.message.length).toBeLessThan(300);
  });

  it('reads what the reference implementation reads: unknown tensor fields, sub-byte dtypes, any metadata key', async () => {
    const h = await readHeader(bytesSource('a', textFile(`{"__metadata__":{"__proto__":"x"},"w":${JSON.stringify({ ...good.w, strides: [1] })}}`)));
    expect(h.tensors.map((t) => t.name)).toEqual(['w']);
    expect(Object.hasOwn(h.metadata, '__proto__') && h.metadata['__proto__']).toBe('x');
    const f4 = await readHeader(bytesSource('b', rawFile({ w: { dtype: 'F4', shape: [48], data_offsets: [0, 24] } }, data)));
    expect(f4.tensors[0].end - f4.tensors[0].begin).toBe(24);
  });

  it('accepts null or absent metadata, space padding and empty files of no tensors', async () => {
    expect((await readHeader(bytesSource('a', rawFile({ __metadata__: null, ...good }, data)))).metadata).toEqual({});
    expect((await readHeader(bytesSource('b', textFile(`${JSON.stringify(good)}     `)))).tensors).toHaveLength(1);
    expect((await readHeader(bytesSource('c', rawFile({}, new Uint8Array(0))))).tensors).toHaveLength(0);
    const zero = rawFile({ e: { dtype: 'F32', shape: [0, 5], data_offsets: [0, 0] }, ...good }, data);
    expect((await readHeader(bytesSource('d', zero))).tensors.map((t) => t.name)).toEqual(['e', 'w']);
  });

  it('keeps messages short for huge shapes and names', async () => {
    const huge = rawFile({ w: { dtype: 'F32', shape: new Array(100_001).fill(1), data_offsets: [0, 8] } }, data);
    const err = await readHeader(bytesSource('bad.safetensors', huge)).catch((e) => e);
    expect(err).toBeInstanceOf(InvalidModelFileError);
    expect(err.message.length).toBeLessThan(300);
    const longName = rawFile({ ['x'.repeat(1e6)]: { dtype: 'F32', shape: [1], data_offsets: [0, 8] } }, data);
    const err2 = await readHeader(bytesSource('bad.safetensors', longName)).catch((e) => e);
    expect(err2.message).toMatch(/1000000 chars/);
    expect(err2.message.length).toBeLessThan(300);
  });

  it('refuses to convert non-float tensors', async () => {
    const src = bytesSource('ints.safetensors', rawFile({ i: { dtype: 'I32', shape: [2], data_offsets: [0, 8] } }, new Uint8Array(8)));
    const h = await readHeader(src);
    await expect(readTensorF32(src, h.byName.get('i')!)).rejects.toThrow(/expected F32, F16 or BF16/);
  });
});
