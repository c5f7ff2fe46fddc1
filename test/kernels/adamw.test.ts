import { describe, expect, it } from 'vitest';
import { adamwStep, decodeHalves, encodeHalves, gradNorm, gradNormScratchSize, sparseAdamwStep, sparseGather, ShapeError } from '../../src/index.js';
import { compare, freshSeed, randn, REDUCTIONS, rng, testGpu } from '../helpers.js';
import { adamwRef, clipFactorRef } from '../reference/adamw.js';
import { randomMask } from '../reference/sparse.js';

const HYPER = { lr: 3e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 };

describe.each([1, 8])('fused AdamW, %i elements per invocation', (per) => {
  // beta2 = 0.99999 checks 1 - beta is not taken in f32 (1 - f32(0.99999) is 1.4e-3 off in relative terms).
  it.each([
    [1, 0.999],
    [3, 0.999],
    [17, 0.999],
    [257, 0.999],
    [4099, 0.999],
    [257, 0.99999],
  ])('n=%i, beta2 %f, three steps with clipping and a gradient scale', async (n, beta2) => {
    const hyper = { ...HYPER, beta2 };
    const gpu = await testGpu({ elementsPerInvocation: per });
    const seed = freshSeed();
    const rand = rng(seed);
    const p0 = randn(n, rand);
    const params = gpu.upload(p0, 'params');
    const m = gpu.upload(new Float32Array(n), 'm');
    const v = gpu.upload(new Float32Array(n), 'v');
    const grads = gpu.createBuffer(n * 4, undefined, 'grads');
    const partials = gpu.createBuffer(gradNormScratchSize([n]) * 4, undefined, 'partials');
    const clip = gpu.createBuffer(8, undefined, 'clip');
    const rp = Float64Array.from(p0);
    const rm = new Float64Array(n);
    const rv = new Float64Array(n);
    const maxNorm = 0.4 * Math.sqrt(n); // clips some steps, not others
    // The moments and the parameters sum terms of both signs and can cancel to near zero (with n = 1,
    // one element decides the scale): their error is relative to the size of the terms they sum. A
    // parameter's terms are its start and one step of about lr each.
    let termScale = 0;
    const paramTermScale = Math.max(hyper.lr, ...Array.from(p0, Math.abs));
    for (let step = 1; step <= 3; step++) {
      const g = randn(n, rand, step);
      for (const x of g) termScale = Math.max(termScale, Math.abs(0.5 * x));
      gpu.write(grads, g);
      gpu.fill(clip, NaN);
      await gpu.run((rec) => {
        gradNorm(rec, { tensors: [{ buffer: grads, n }], partials, out: clip, maxNorm, gradScale: 0.5 });
        adamwStep(rec, { params, grads, m, v, clip, n, step, gradScale: 0.5, ...hyper });
      });
      const [factor] = clipFactorRef([Array.from(g, (x) => x * 0.5)], maxNorm);
      adamwRef(rp, g, rm, rv, { ...hyper, step, gradScale: 0.5, clip: factor });
    }
    const floors = { params: paramTermScale, m: (1 - hyper.beta1) * termScale, v: (1 - hyper.beta2) * termScale ** 2 };
    for (const [name, buf, want] of [['params', params, rp], ['m', m, rm], ['v', v, rv]] as const) {
      const err = compare(await gpu.readF32(buf), want, floors[name]);
      expect(err.rel, `seed ${seed} n ${n} ${name} maxAbs ${err.maxAbs}`).toBeLessThan(1e-4);
    }
  });

  it('rejects a non-positive step', async () => {
    const gpu = await testGpu();
    const b = gpu.createBuffer(16);
    expect(() =>
      adamwStep(gpu.recorder(), { params: b, grads: b, m: b, v: b, clip: b, n: 4, step: 0, lr: 1 }),
    ).toThrow(ShapeError);
  });
});

describe.each(REDUCTIONS)('global gradient norm and clipping factor, %s', (_, reduction) => {
  it.each([
    [[1], 1e9],
    [[3, 17, 100], 1.0],
    [[70_001, 257, 1], 10.0], // more than 256 workgroups of input: the first stage strides
    [[33, 5], 0], // maxNorm 0: report the norm, do not clip
  ])('sizes %j maxNorm %f', async (sizes, maxNorm) => {
    const gpu = await testGpu(reduction);
    const seed = freshSeed();
    const rand = rng(seed);
    const hosts = sizes.map((n) => randn(n, rand, 0.7));
    const tensors = hosts.map((h) => ({ buffer: gpu.upload(h, 'g'), n: h.length }));
    const partials = gpu.createBuffer(gradNormScratchSize(sizes) * 4);
    const out = gpu.createBuffer(8);
    gpu.fill(out, NaN);
    gpu.fill(partials, NaN);
    await gpu.run((rec) => gradNorm(rec, { tensors, partials, out, maxNorm }));
    const got = await gpu.readF32(out);
    const want = clipFactorRef(hosts, maxNorm);
    expect(compare(got, want).rel, `seed ${seed}`).toBeLessThan(1e-4);
    if (maxNorm === 0) expect(got[0]).toBe(1);
  });
});

describe('sparse AdamW writes the values into the dense weight', () => {
  it.each([
    [17, 33, 0.05],
    [100, 257, 0.01],
    [3, 3, 1.0],
  ])('W %ix%i density %f', async (rows, cols, density) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const size = rows * cols;
    const w0 = randn(size, rand);
    const mask = randomMask(size, density, rand);
    const nnz = mask.length;
    const W = gpu.upload(w0, 'W');
    const indices = gpu.upload(mask, 'mask');
    const values = gpu.createBuffer(nnz * 4, undefined, 'values');
    gpu.fill(values, NaN);
    const m = gpu.upload(new Float32Array(nnz));
    const v = gpu.upload(new Float32Array(nnz));
    const g = randn(nnz, rand);
    const grads = gpu.upload(g);
    const clip = gpu.upload(new Float32Array([1, 0]));
    await gpu.run((rec) => {
      sparseGather(rec, { indices, nnz, values, weight: W, weightSize: size });
      sparseAdamwStep(rec, { params: values, grads, m, v, clip, n: nnz, step: 1, indices, weight: W, weightSize: size, ...HYPER });
    });
    const rp = Float64Array.from(mask, (i) => w0[i]);
    adamwRef(rp, g, new Float64Array(nnz), new Float64Array(nnz), { ...HYPER, step: 1 });
    const wantW = Float64Array.from(w0);
    mask.forEach((i, k) => (wantW[i] = rp[k]));
    const gotW = await gpu.readF32(W);
    expect(compare(gotW, wantW).rel, `seed ${seed}`).toBeLessThan(1e-4);
    expect(compare(await gpu.readF32(values), rp).rel, `seed ${seed}`).toBeLessThan(1e-4);
    // Entries outside the mask stay bit-identical.
    const inMask = new Set(mask);
    for (let i = 0; i < size; i++) if (!inMask.has(i)) expect(gotW[i]).toBe(w0[i]);
  });
});

describe.each(['bf16', 'f16'] as const)('sparse AdamW on a %s weight (packed in pairs)', (format) => {
  it.each([
    [17, 33, 0.3],
    [8, 9, 1.0],
  ])('W %ix%i density %f: the weight holds the updated values rounded, the rest untouched', async (rows, cols, density) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const size = rows * cols;
    // Dense enough that both halves of many words train, written by different invocations.
    const half0 = encodeHalves(randn(size, rand), format);
    const w0 = decodeHalves(half0.slice().buffer, size, format);
    const mask = randomMask(size, density, rand);
    const nnz = mask.length;
    const W = gpu.upload(new Uint32Array(half0.buffer), 'W');
    const indices = gpu.upload(mask, 'mask');
    const values = gpu.createBuffer(nnz * 4, undefined, 'values');
    gpu.fill(values, NaN);
    const [m, v] = [gpu.upload(new Float32Array(nnz)), gpu.upload(new Float32Array(nnz))];
    const g = randn(nnz, rand);
    const clip = gpu.upload(new Float32Array([1, 0]));
    await gpu.run((rec) => {
      sparseGather(rec, { indices, nnz, values, weight: W, weightSize: size, weightFormat: format });
      sparseAdamwStep(rec, { params: values, grads: gpu.upload(g), m, v, clip, n: nnz, step: 1, indices, weight: W, weightSize: size, weightFormat: format, ...HYPER });
    });
    const rp = Float64Array.from(mask, (i) => w0[i]); // the gathered values: the stored halves, widened
    adamwRef(rp, g, new Float64Array(nnz), new Float64Array(nnz), { ...HYPER, step: 1 });
    const got = await gpu.readF32(values);
    expect(compare(got, rp).rel, `seed ${seed}`).toBeLessThan(1e-4);
    // The weight holds exactly the values (as updated on the GPU) rounded to the format.
    const stored = new Uint16Array(await gpu.read(W), 0, size);
    const want = half0.slice(0, size);
    mask.forEach((i, k) => (want[i] = encodeHalves(Float32Array.of(got[k]), format)[0]));
    expect(Array.from(stored), `seed ${seed}`).toEqual(Array.from(want));
  });
});
