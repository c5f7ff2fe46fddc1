import { describe, expect, it } from 'vitest';
import { adamwMultiStep, adamwStep, decodeHalves, encodeHalves, gradNorm, gradNormScratchSize, sparseAdamwStep, sparseGather, ShapeError } from '../../src/index.js';
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

describe.each([1, 8])('multi-tensor AdamW, %i elements per invocation', (per) => {
  // Tensors of awkward sizes, each with its own step, rate and decay, at offsets that differ between the
  // parameters (two buffers, reversed order), the gradients and the moments, with poisoned padding between.
  const SIZES = [1, 3, 257, 1000, 17, 64];
  const HYPERS = SIZES.map((_, i) => ({ step: 1 + (i % 3), lr: 1e-2 * (1 + i), weightDecay: i % 2 ? 0.1 : 0 }));
  const padded = (n: number) => Math.ceil(n / 64) * 64 + 64; // elements: 256-byte aligned, then a gap

  it('updates every tensor as float64 AdamW does, touches no padding, and dispatches once per set of buffers', async () => {
    const gpu = await testGpu({ elementsPerInvocation: per });
    const seed = freshSeed();
    const rand = rng(seed);
    const layout = (order: number[]) => {
      const at = new Array<number>(SIZES.length);
      let end = 0;
      for (const i of order) {
        at[i] = end;
        end += padded(SIZES[i]);
      }
      return { at, end };
    };
    const forward = SIZES.map((_, i) => i);
    // Parameters: the first three tensors in one buffer, the rest in another, each in reversed order.
    const paramSets = [[2, 1, 0], [5, 4, 3]].map((order) => layout(order));
    const gradLayout = layout(forward);
    const momentLayout = layout([3, 0, 5, 1, 4, 2]);
    const POISON = 12345.5;
    const paramData = paramSets.map((l) => new Float32Array(l.end).fill(POISON));
    const p0 = SIZES.map((n) => randn(n, rand));
    SIZES.forEach((n, i) => paramData[i < 3 ? 0 : 1].set(p0[i], paramSets[i < 3 ? 0 : 1].at[i]));
    const paramBuffers = paramData.map((d, k) => gpu.upload(d, `params ${k}`));
    const grads = gpu.upload(new Float32Array(gradLayout.end).fill(POISON), 'grads');
    const m = gpu.upload(new Float32Array(momentLayout.end), 'm');
    const v = gpu.upload(new Float32Array(momentLayout.end), 'v');
    const clip = gpu.createBuffer(8, undefined, 'clip');
    const view = (buffer: GPUBuffer, at: number, n: number) => ({ buffer, offset: at * 4, size: n * 4 });
    const tensors = SIZES.map((n, i) => ({
      params: view(paramBuffers[i < 3 ? 0 : 1], paramSets[i < 3 ? 0 : 1].at[i], n),
      grads: view(grads, gradLayout.at[i], n),
      m: view(m, momentLayout.at[i], n),
      v: view(v, momentLayout.at[i], n),
      n,
    }));
    const ref = SIZES.map((n, i) => ({ p: Float64Array.from(p0[i]), m: new Float64Array(n), v: new Float64Array(n) }));
    for (let step = 0; step < 2; step++) {
      const g = SIZES.map((n) => randn(n, rand));
      g.forEach((x, i) => gpu.write(grads, x, gradLayout.at[i] * 4));
      const factor = 0.75 - 0.25 * step;
      gpu.write(clip, Float32Array.of(factor, 0));
      const before = gpu.workCounts();
      await gpu.run((rec) => adamwMultiStep(rec, { tensors: tensors.map((t, i) => ({ ...t, ...HYPERS[i], step: HYPERS[i].step + step })), clip, gradScale: 0.5, beta1: 0.9, beta2: 0.99, eps: 1e-8 }));
      expect(gpu.workSince(before).dispatches).toBe(2);
      SIZES.forEach((_, i) => adamwRef(ref[i].p, g[i], ref[i].m, ref[i].v, { ...HYPERS[i], step: HYPERS[i].step + step, beta1: 0.9, beta2: 0.99, eps: 1e-8, gradScale: 0.5, clip: factor }));
    }
    const got = await Promise.all(paramBuffers.map((b) => gpu.readF32(b)));
    const gotM = await gpu.readF32(m);
    SIZES.forEach((n, i) => {
      const k = i < 3 ? 0 : 1;
      const at = paramSets[k].at[i];
      const err = compare(got[k].subarray(at, at + n), ref[i].p, Math.max(HYPERS[i].lr, ...Array.from(p0[i], Math.abs)));
      expect(err.rel, `seed ${seed} tensor ${i} (n ${n})`).toBeLessThan(1e-4);
      const errM = compare(gotM.subarray(momentLayout.at[i], momentLayout.at[i] + n), ref[i].m, 0.1);
      expect(errM.rel, `seed ${seed} tensor ${i} m`).toBeLessThan(1e-4);
    });
    // Nothing outside the tensors was written.
    got.forEach((data, k) => {
      const inside = new Uint8Array(data.length);
      SIZES.forEach((n, i) => (i < 3) === (k === 0) && inside.fill(1, paramSets[k].at[i], paramSets[k].at[i] + n));
      expect(data.filter((x, j) => !inside[j] && x !== POISON)).toHaveLength(0);
    });
  });

  it('changes nothing when the clipping factor marks the step skipped', async () => {
    const gpu = await testGpu({ elementsPerInvocation: per });
    const n = 300;
    const p0 = randn(n, rng(freshSeed()));
    const [params, grads, m, v] = ['params', 'grads', 'm', 'v'].map((label) => gpu.upload(label === 'params' ? p0 : randn(n, rng(2)), label));
    const clip = gpu.upload(Float32Array.of(-1, Infinity), 'clip');
    const views = { params: { buffer: params, offset: 0, size: n * 4 }, grads: { buffer: grads, offset: 0, size: n * 4 }, m: { buffer: m, offset: 0, size: n * 4 }, v: { buffer: v, offset: 0, size: n * 4 } };
    await gpu.run((rec) => adamwMultiStep(rec, { tensors: [{ ...views, n, step: 1, lr: 0.1, weightDecay: 0.1 }], clip }));
    expect(await gpu.readF32(params)).toEqual(p0);
  });

  it('refuses moments at different offsets and a buffer bound twice', async () => {
    const gpu = await testGpu();
    const b = gpu.createBuffer(4096);
    const c = gpu.createBuffer(4096);
    const [d, e] = [gpu.createBuffer(4096), gpu.createBuffer(4096)];
    const at = (buffer: GPUBuffer, offset = 0) => ({ buffer, offset, size: 64 });
    const rec = gpu.recorder();
    expect(() => adamwMultiStep(rec, { tensors: [{ params: at(b), grads: at(c), m: at(d), v: at(e, 256), n: 16, step: 1, lr: 1, weightDecay: 0 }], clip: b })).toThrow(/share their offset/);
    expect(() => adamwMultiStep(rec, { tensors: [{ params: at(b), grads: at(b, 256), m: at(d), v: at(e), n: 16, step: 1, lr: 1, weightDecay: 0 }], clip: c })).toThrow(/four different buffers/);
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
