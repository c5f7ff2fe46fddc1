import { describe, expect, it } from 'vitest';
import { packHalves } from '../../src/index.js';
import { freshSeed, poisoned, rng, testGpu } from '../helpers.js';

/**
 * A reference rounding by value, not by bits: every positive 16-bit value decoded to float64 (with the
 * infinity standing as the next power of two past the largest finite, where round-to-nearest-even puts
 * it), and the nearest chosen, ties to the even encoding.
 */
function nearestHalf(format: 'f16' | 'bf16'): (v: number) => number {
  const [expBits, fracBits] = format === 'f16' ? [5, 10] : [8, 7];
  const bias = (1 << (expBits - 1)) - 1;
  const infBits = ((1 << expBits) - 1) << fracBits;
  const values: number[] = [];
  for (let bits = 0; bits <= infBits; bits++) {
    const e = bits >> fracBits;
    const f = bits & ((1 << fracBits) - 1);
    values.push(e === 0 ? f * 2 ** (1 - bias - fracBits) : e === (1 << expBits) - 1 ? 2 ** (bias + 1) : (1 + f / 2 ** fracBits) * 2 ** (e - bias));
  }
  return (v) => {
    if (Number.isNaN(v)) return NaN;
    const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
    const a = Math.abs(v);
    if (a >= values[infBits]) return sign | infBits;
    let lo = 0;
    let hi = infBits;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (values[mid] <= a) lo = mid;
      else hi = mid;
    }
    const [dl, dh] = [a - values[lo], values[hi] - a];
    return sign | (dl < dh ? lo : dh < dl ? hi : lo % 2 === 0 ? lo : hi);
  };
}

describe.each(['f16', 'bf16'] as const)('packHalves to %s', (format) => {
  it('rounds to nearest even as a by-value reference does: ties, subnormals, overflow, signed zeros', async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const ref = nearestHalf(format);
    const special = [0, -0, 65504, -65504, 65519.99, 65520, 65536, 1e5, 2 ** -24, 2 ** -25, 1.5 * 2 ** -25, 2 ** -26, 2 ** -14, 2 ** -15 * 1.0009765625, 3.3895e38, 3.3961e38, -3.4e38, 1e-40, -1e-45, Infinity, -Infinity, NaN];
    // Exact midpoints between neighbouring 16-bit values (representable in f32), where the rule decides.
    const ties = Array.from({ length: 64 }, () => {
      const e = Math.floor(rand() * 20) - 10;
      const f = Math.floor(rand() * 1024);
      const step = format === 'f16' ? 2 ** (e - 10) : 2 ** (e - 7);
      return (1 + (f % (format === 'f16' ? 1024 : 128)) / (format === 'f16' ? 1024 : 128)) * 2 ** e + step / 2;
    });
    const spread = Array.from({ length: 1031 - special.length - ties.length }, () => (rand() - 0.5) * 2 ** (Math.floor(rand() * 60) - 30));
    const xs = Float32Array.from([...special, ...ties, ...spread]);
    const n = xs.length; // odd: the last word's high half stays zero
    const y = poisoned(gpu, Math.ceil(n / 2));
    await gpu.run((rec) => packHalves(rec, { x: gpu.upload(xs), y, n, format }));
    const words = new Uint32Array(await gpu.read(y));
    expect(words[(n - 1) >> 1] >>> 16, 'the padding half').toBe(0);
    for (let i = 0; i < n; i++) {
      const got = (words[i >> 1] >>> (16 * (i & 1))) & 0xffff;
      const want = ref(xs[i]);
      if (Number.isNaN(want)) {
        const [exp, frac] = format === 'f16' ? [0x7c00, 0x3ff] : [0x7f80, 0x7f];
        expect((got & exp) === exp && (got & frac) !== 0, `seed ${seed}: NaN at ${i} gave ${got.toString(16)}`).toBe(true);
      } else expect(got, `seed ${seed}: ${xs[i]} at ${i}`).toBe(want);
    }
  });
});
