/**
 * Zeroth-order kernels: the direction generator (GPU equals the host's float64 copy; mean, variance and
 * independence), the perturbation (only trained segments move), the update against a float64 reference,
 * and the loss sums.
 */
import { describe, expect, it } from 'vitest';
import { zoDirectionKey, zoGaussian, zoLossSum, zoPerturb, zoRun, zoUpdate, ZO_SKIP, type ZoSegment } from '../../src/kernels/zo.js';
import { compare, freshSeed, poisoned, randn, REDUCTIONS, rng, testGpu } from '../helpers.js';

/** z of every element of a run of `segments`, on the host (0 where skipped). */
function hostDirection(seed: number, step: number, j: number, n: number, segments: ZoSegment[]): Float64Array {
  const z = new Float64Array(n);
  segments.forEach((s, k) => {
    const end = segments[k + 1]?.start ?? n;
    if (s.tensor === ZO_SKIP) return;
    for (let i = s.start; i < end; i++) z[i] = zoGaussian(zoDirectionKey(seed, step, j), s.tensor, i - s.start);
  });
  return z;
}

describe.each([1, 8])('zeroth-order passes, %i pairs per invocation', (per) => {
  it('the GPU draws what the host draws, and only inside trained segments', async () => {
    const gpu = await testGpu({ elementsPerInvocation: per });
    const seed = freshSeed();
    const n = 3001;
    const segments: ZoSegment[] = [{ start: 0, tensor: 4, decay: true }, { start: 517, tensor: ZO_SKIP, decay: false }, { start: 600, tensor: 0, decay: false }, { start: 2999, tensor: 7, decay: true }];
    const x0 = randn(n, rng(seed));
    const params = gpu.upload(x0);
    const run = zoRun(gpu, params, n, segments);
    await gpu.run((rec) => zoPerturb(rec, run, { seed, step: 12, direction: 2, scale: 0.5 }));
    const got = await gpu.readF32(params);
    const z = hostDirection(seed, 12, 2, n, segments);
    const want = Array.from(x0, (v, i) => v + 0.5 * z[i]);
    expect(compare(got, want).rel, `seed ${seed}`).toBeLessThan(1e-5);
    for (let i = 517; i < 600; i++) expect(got[i]).toBe(x0[i]); // a skipped gap is not touched
    gpu.destroyBuffer(run.segments);
  });

  it('updates as θ - lr (Σ_j c_j z_j + wd θ) with c_j from the +ε and -ε loss sums, the last step back fused (float64 reference)', async () => {
    const gpu = await testGpu({ elementsPerInvocation: per });
    const seed = freshSeed();
    const rand = rng(seed);
    const n = 1501;
    const segments: ZoSegment[] = [{ start: 0, tensor: 1, decay: true }, { start: 700, tensor: 3, decay: false }, { start: 1401, tensor: ZO_SKIP, decay: true }];
    const x0 = randn(n, rand);
    const accHost = Float32Array.from(randn(6, rand), (v) => 100 + v);
    const params = gpu.upload(x0);
    const acc = gpu.upload(accHost);
    const run = zoRun(gpu, params, n, segments);
    const [lr, coef, wd, step, restore] = [0.01, 0.3, 0.1, 5, 0.02];
    await gpu.run((rec) => zoUpdate(rec, run, { seed, step, directions: 3, acc, coef, lr, weightDecay: wd, restore }));
    const z = [0, 1, 2].map((j) => hostDirection(seed, step, j, n, segments));
    const want = Array.from(x0, (w0, i) => {
      const s = [...segments].reverse().find((g) => g.start <= i)!;
      if (s.tensor === ZO_SKIP) return w0;
      const w = w0 + restore * z[2][i];
      let g = 0;
      for (let j = 0; j < 3; j++) g += (accHost[2 * j] - accHost[2 * j + 1]) * coef * z[j][i];
      return w - lr * (g + (s.decay ? wd * w : 0));
    });
    const got = await gpu.readF32(params);
    // The change itself is compared, so the error is relative to what moved, not to θ.
    const change = compare(got.map((v, i) => v - x0[i]), want.map((v, i) => v - x0[i]));
    expect(change.rel, `seed ${seed}`).toBeLessThan(1e-4);
    for (let i = 1401; i < n; i++) expect(got[i]).toBe(x0[i]);
    gpu.destroyBuffer(run.segments);
  });
});

describe('zeroth-order directions', () => {
  it('is standard normal: mean, variance, tails; independent across elements, tensors, directions and steps', () => {
    const seed = 1234; // a fixed seed set: a statistical test that never flakes
    const n = 200_000;
    const draw = (step: number, j: number, t: number) => Float64Array.from({ length: n }, (_, e) => zoGaussian(zoDirectionKey(seed, step, j), t, e));
    const a = draw(0, 0, 0);
    const mean = a.reduce((s, v) => s + v, 0) / n;
    const variance = a.reduce((s, v) => s + (v - mean) ** 2, 0) / n;
    // Standard errors: 1/sqrt(n) = 0.0022 for the mean, sqrt(2/n) = 0.0032 for the variance; 5 of them.
    expect(Math.abs(mean)).toBeLessThan(0.011);
    expect(Math.abs(variance - 1)).toBeLessThan(0.016);
    const beyond2 = a.filter((v) => Math.abs(v) > 2).length / n; // 0.0455 for N(0, 1)
    expect(Math.abs(beyond2 - 0.0455)).toBeLessThan(0.003);
    const corr = (x: Float64Array, y: Float64Array, lag = 0) => {
      let s = 0;
      for (let i = 0; i + lag < n; i++) s += x[i] * y[i + lag];
      return s / (n - lag);
    };
    // Pairs share their uniforms (cosine and sine of one angle): uncorrelated all the same, as are neighbours.
    for (const lag of [1, 2, 3]) expect(Math.abs(corr(a, a, lag)), `lag ${lag}`).toBeLessThan(0.011);
    let evenOdd = 0;
    for (let i = 0; i + 1 < n; i += 2) evenOdd += a[i] ** 2 * a[i + 1] ** 2;
    expect(Math.abs(evenOdd / (n / 2) - 1)).toBeLessThan(0.05); // E[c^2 s^2 r^4] = 1 for Box-Muller pairs
    for (const other of [draw(0, 0, 1), draw(0, 1, 0), draw(1, 0, 0)]) expect(Math.abs(corr(a, other))).toBeLessThan(0.011);
  });
});

describe('zeroth-order loss sums', () => {
  it.each(REDUCTIONS)('sums a pass\'s token losses into its slot and the step\'s accumulator (%s)', async (_, reduction) => {
    const gpu = await testGpu(reduction);
    const seed = freshSeed();
    const rand = rng(seed);
    const n = 1037;
    const losses = randn(n, rand).map(Math.abs);
    const sums = poisoned(gpu, 4);
    const acc = gpu.upload(new Float32Array([1, 2, 3, 4]));
    const lossBuffer = gpu.upload(losses);
    await gpu.run((rec) => {
      zoLossSum(rec, { losses: lossBuffer, n, slot: 2, sums, acc });
      zoLossSum(rec, { losses: lossBuffer, n: 5, slot: 3, sums, acc });
    });
    const total = losses.reduce((s, v) => s + v, 0);
    const first5 = losses.slice(0, 5).reduce((s, v) => s + v, 0);
    const got = await gpu.readF32(sums);
    expect(compare(got.subarray(2), [total, first5]).rel, `seed ${seed}`).toBeLessThan(1e-5);
    expect(compare(await gpu.readF32(acc), [1, 2, 3 + total, 4 + first5]).rel).toBeLessThan(1e-5);
  });
});
