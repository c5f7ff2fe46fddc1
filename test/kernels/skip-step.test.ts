/**
 * Skipping a step whose gradient norm is not finite (an overflow), as PyTorch's GradScaler does: the norm
 * reduction marks it (clip factor -1, a count), and every optimizer kernel then leaves its parameters,
 * moments and projections exactly as they were.
 */
import { describe, expect, it } from 'vitest';
import { adamwStep, gradNorm, gradNormScratchSize, sparseAdamwStep } from '../../src/index.js';
import { galoreAdam, galoreCommit, galoreDecay } from '../../src/kernels/galore.js';
import { zoRun, zoUpdate, zoDirectionKey, zoGaussian } from '../../src/kernels/zo.js';
import type { Gpu } from '../../src/gpu/gpu.js';
import { freshSeed, randn, REDUCTIONS, rng, testGpu } from '../helpers.js';
import { clipFactorRef } from '../reference/adamw.js';

const HYPER = { lr: 3e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 };
const bits = async (gpu: Gpu, b: GPUBuffer) => new Uint32Array(await gpu.read(b));

describe.each(REDUCTIONS)('the gradient norm with skipNonFinite, %s', (_, reduction) => {
  it.each([Infinity, -Infinity, NaN])('marks a step whose gradients hold %s and counts it; finite gradients clip as before', async (bad) => {
    const gpu = await testGpu(reduction);
    const seed = freshSeed();
    const rand = rng(seed);
    const sizes = [300, 17];
    const hosts = sizes.map((n) => randn(n, rand));
    const tensors = hosts.map((h) => ({ buffer: gpu.upload(h), n: h.length }));
    const partials = gpu.createBuffer(gradNormScratchSize(sizes) * 4);
    const out = gpu.upload(new Float32Array(3));
    const run = () => gpu.run((rec) => gradNorm(rec, { tensors, partials, out, maxNorm: 1, skipNonFinite: true }));
    await run();
    const finite = await gpu.readF32(out);
    expect(finite[0], `seed ${seed}`).toBeCloseTo(clipFactorRef(hosts, 1)[0], 5);
    expect(finite[2]).toBe(0);
    hosts[1][Math.floor(rand() * 17)] = bad;
    gpu.write(tensors[1].buffer, hosts[1]);
    await run();
    await run();
    const skipped = await gpu.readF32(out);
    expect(skipped[0]).toBe(-1);
    expect(skipped[2]).toBe(2);
    // Without the flag the factor is whatever the norm makes it, never the mark.
    await gpu.run((rec) => gradNorm(rec, { tensors, partials, out, maxNorm: 1 }));
    expect((await gpu.readF32(out))[0]).not.toBe(-1);
  });
});

describe('optimizer kernels under a skip mark (clip -1)', () => {
  it('AdamW, sparse AdamW (f32 and f16 weights) and GaLore leave everything bit for bit as it was', async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const n = 1031;
    const clip = gpu.upload(new Float32Array([-1, Infinity, 1]));
    const [params, grads, m, v] = [randn(n, rand), randn(n, rand), randn(n, rand), randn(n, rand).map(Math.abs)].map((h) => gpu.upload(h));
    const W = gpu.upload(randn(2 * n, rand));
    const WH = gpu.upload(new Uint32Array(n).map(() => Math.floor(rand() * 2 ** 32)));
    const indices = gpu.upload(Uint32Array.from({ length: n }, (_, i) => 2 * i));
    const [out, from, to] = [gpu.upload(randn(n, rand)), gpu.upload(randn(n, rand)), gpu.upload(randn(n, rand))];
    const all = [params, m, v, W, WH, to];
    const before = await Promise.all(all.map((b) => bits(gpu, b)));
    await gpu.run((rec) => {
      adamwStep(rec, { params, grads, m, v, clip, n, step: 3, ...HYPER });
      sparseAdamwStep(rec, { params, grads, m, v, clip, n, step: 3, indices, weight: W, weightSize: 2 * n, ...HYPER });
      sparseAdamwStep(rec, { params, grads, m, v, clip, n, step: 3, indices, weight: WH, weightSize: 2 * n, weightFormat: 'f16', ...HYPER });
      galoreAdam(rec, { grads, m, v, clip, out, n, step: 3, lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, gradScale: 1 });
      galoreCommit(rec, { from, to, n, clip });
      galoreDecay(rec, { weight: W, n: 2 * n, factor: 0.5, clip });
    });
    const after = await Promise.all(all.map((b) => bits(gpu, b)));
    after.forEach((a, i) => expect(a, `buffer ${i}, seed ${seed}`).toEqual(before[i]));
    // GaLore's update is zero, so its back-projection adds nothing.
    expect(Array.from(await gpu.readF32(out)).every((x) => x === 0)).toBe(true);
    // And with a factor of 1 they do act.
    gpu.write(clip, new Float32Array([1, 1, 0]));
    await gpu.run((rec) => {
      galoreCommit(rec, { from, to, n, clip });
      galoreDecay(rec, { weight: W, n: 2 * n, factor: 0.5, clip });
    });
    expect(await gpu.readF32(to)).toEqual(await gpu.readF32(from));
    const w0 = new Float32Array(before[3].buffer);
    expect(await gpu.readF32(W)).toEqual(w0.map((x) => x * 0.5));
  });

  it('zeroth-order: a loss sum that is not finite leaves only the restoring step', async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const n = 301;
    const x0 = randn(n, rand);
    const params = gpu.upload(x0);
    const acc = gpu.upload(new Float32Array([3, Infinity]));
    const run = zoRun(gpu, params, n, [{ start: 0, tensor: 0, decay: true }]);
    const restore = 0.02;
    await gpu.run((rec) => zoUpdate(rec, run, { seed, step: 4, directions: 1, acc, coef: 0.5, lr: 0.01, weightDecay: 0.1, restore, skipNonFinite: true }));
    const got = await gpu.readF32(params);
    const key = zoDirectionKey(seed, 4, 0);
    const want = Array.from(x0, (w, i) => Math.fround(w + restore * zoGaussian(key, 0, i)));
    for (let i = 0; i < n; i++) expect(Math.abs(got[i] - want[i]), `seed ${seed} element ${i}`).toBeLessThan(1e-6 * (1 + Math.abs(want[i])));
    gpu.destroyBuffer(run.segments);
  });
});
