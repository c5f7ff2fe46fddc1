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
  it.each([
    ['a file shorter than the length prefix', new Uint8Array(5), /too short/],
    ['a header length past the end', rawFile(good, data, 10_000), /runs past the end/],
    ['a header length over the limit', rawFile(good, data, 2e9), /exceeds/],
    ['a header that is not JSON', (() => { const f = rawFile(good, data); f[8] = 0x7b; f[9] = 0x7b; return f; })(), /not valid UTF-8 JSON/],
    ['a header that is an array', rawFile([1, 2], data), /not a JSON object/],
    ['an unknown dtype', rawFile({ w: { dtype: 'F8', shape: [2], data_offsets: [0, 2] } }, data), /unknown dtype/],
    ['a negative dimension', rawFile({ w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, data), /invalid shape/],
    ['offsets that disagree with the shape', rawFile({ w: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 24] } }, data), /needs 16 bytes/],
    ['a tensor past the end of the data (truncated file)', rawFile({ w: { dtype: 'F32', shape: [2, 4], data_offsets: [0, 32] } }, data), /truncated/],
    ['overlapping tensors', rawFile({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [4], data_offsets: [8, 24] } }, data), /overlap/],
    ['reversed offsets', rawFile({ w: { dtype: 'F32', shape: [0], data_offsets: [8, 4] } }, data), /invalid data_offsets/],
  ])('rejects %s', async (_what, bytes, message) => {
    const err = await readHeader(bytesSource('bad.safetensors', bytes)).catch((e) => e);
    expect(err).toBeInstanceOf(InvalidModelFileError);
    expect(err.message).toMatch(message);
    expect(err.message).toContain('bad.safetensors');
  });

  it('refuses to convert non-float tensors', async () => {
    const src = bytesSource('ints.safetensors', rawFile({ i: { dtype: 'I32', shape: [2], data_offsets: [0, 8] } }, new Uint8Array(8)));
    const h = await readHeader(src);
    await expect(readTensorF32(src, h.byName.get('i')!)).rejects.toThrow(/expected F32, F16 or BF16/);
  });
});
