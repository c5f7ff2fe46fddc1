import { describe, expect, it } from 'vitest';
import { matmulGrouped, ShapeError, type GroupedProblem, type MatmulVariant, type TensorView, type WeightFormat } from '../../src/index.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from '../../src/index.js';
import type { Gpu } from '../../src/gpu/gpu.js';
import { compare, freshSeed, randn, rng, testGpu } from '../helpers.js';
import { matmulRef } from '../reference/matmul.js';
import { geluGradRef, geluRef } from '../reference/layers.js';

const VARIANTS: MatmulVariant[] = ['tiled', 'direct'];

/** A term's shape: op(A) [M, K] and op(B) [K, N], with B a column of ones when `ones`. */
interface TermCase { K: number; transA?: boolean; transB?: boolean; ones?: boolean; aBuffer?: 1; alpha?: number }
/** `activation`: gelu(C) stored beside C ('out'), or C times gelu' of a pre-activation ('grad'); GELU's tanh form unless `exactGelu`. */
interface ProblemCase { M: number; N: number; terms: TermCase[]; alpha?: number; accumulate?: boolean; bias?: boolean; residual?: boolean; activation?: 'out' | 'grad'; exactGelu?: boolean }

/**
 * Values laid out in one buffer at awkward offsets (a gap of a few elements before each), as tensors of
 * an arena are: 16-bit ones rounded (what the reference multiplies) and packed two per word.
 */
class Packer {
  private values: number[] = [];
  readonly rounded: Float32Array[] = [];
  constructor(
    private readonly format: WeightFormat,
    private readonly rand: () => number,
  ) {}

  add(data: Float32Array): { index: number; start: number } {
    // 16-bit views start on a whole word: an even element.
    const gap = 1 + Math.floor(this.rand() * 5);
    let start = this.values.length + gap;
    if (this.format !== 'f32' && start % 2) start++;
    while (this.values.length < start) this.values.push(NaN);
    let v = data;
    if (this.format === 'bf16') v = bf16ToF32(f32ToBf16(data));
    if (this.format === 'f16') v = f16ToF32(f32ToF16(data));
    this.values.push(...v);
    this.rounded.push(v);
    return { index: this.rounded.length - 1, start };
  }

  /** What upload() writes, for f32: the values, NaN in the gaps and past the end. */
  contents(): Float32Array {
    return Float32Array.from({ length: this.values.length + 8 }, (_, i) => this.values[i] ?? NaN);
  }

  upload(gpu: Gpu, label: string): GPUBuffer {
    const n = this.values.length + 8;
    if (this.format === 'f32') return gpu.upload(this.contents(), label);
    const f = Float32Array.from({ length: n + (n % 2) }, (_, i) => this.values[i] ?? 0);
    return gpu.upload(this.format === 'bf16' ? f32ToBf16(f) : f32ToF16(f), label);
  }

  view(buffer: GPUBuffer, start: number, length: number): TensorView {
    const bytes = this.format === 'f32' ? 4 : 2;
    return { buffer, offset: start * bytes, size: Math.ceil((length * bytes) / 4) * 4 };
  }
}

// The grouped kernel itself, whatever this device's default (GpuTuning.groupedProducts).
const GROUPED = { groupedProducts: true };

async function check(variant: MatmulVariant, cases: ProblemCase[], formats: { a?: WeightFormat; b?: WeightFormat } = {}, expectDispatches = 1): Promise<void> {
  const gpu = await testGpu(GROUPED);
  const seed = freshSeed();
  const rand = rng(seed);
  const aFormat = formats.a ?? 'f32';
  const bFormat = formats.b ?? 'f32';
  const packs = { a: new Packer(aFormat, rand), a2: new Packer(aFormat, rand), b: new Packer(bFormat, rand), c: new Packer('f32', rand), bias: new Packer('f32', rand), r: new Packer('f32', rand), y: new Packer('f32', rand) };
  const layout = cases.map((p) => ({
    terms: p.terms.map((t) => ({
      a: (t.aBuffer ? packs.a2 : packs.a).add(randn(p.M * t.K, rand)),
      b: t.ones ? null : packs.b.add(randn(t.K * p.N, rand)),
    })),
    c: packs.c.add(randn(p.M * p.N, rand)),
    bias: p.bias ? packs.bias.add(randn(p.N, rand)) : null,
    // R holds residuals and the pre-activations of activations' gradients; Y (poisoned) the activations' outputs.
    r: p.residual || p.activation === 'grad' ? packs.r.add(randn(p.M * p.N, rand)) : null,
    y: p.activation === 'out' ? packs.y.add(new Float32Array(p.M * p.N).fill(NaN)) : null,
  }));
  const buffers = { a: packs.a.upload(gpu, 'A'), a2: packs.a2.upload(gpu, 'A2'), b: packs.b.upload(gpu, 'B'), bias: packs.bias.upload(gpu, 'bias'), r: packs.r.upload(gpu, 'R'), y: packs.y.upload(gpu, 'Y') };
  // C: the starting values where a problem accumulates, poison (NaN) everywhere else, gaps included.
  const cInit = layout.map((l, i) => (cases[i].accumulate ? packs.c.rounded[l.c.index] : new Float32Array(cases[i].M * cases[i].N).fill(NaN)));
  const cBuffer = (() => {
    const end = Math.max(...layout.map((l, i) => l.c.start + cases[i].M * cases[i].N)) + 8;
    const data = new Float32Array(end).fill(NaN);
    layout.forEach((l, i) => data.set(cInit[i], l.c.start));
    return gpu.upload(data, 'C');
  })();
  const problems: GroupedProblem[] = cases.map((p, i) => ({
    M: p.M, N: p.N, alpha: p.alpha, accumulate: p.accumulate,
    c: packs.c.view(cBuffer, layout[i].c.start, p.M * p.N),
    bias: layout[i].bias ? packs.bias.view(buffers.bias, layout[i].bias!.start, p.N) : undefined,
    residual: p.residual ? packs.r.view(buffers.r, layout[i].r!.start, p.M * p.N) : undefined,
    activation: layout[i].y ? { kind: p.exactGelu ? 'gelu' : 'gelu_new', out: packs.y.view(buffers.y, layout[i].y!.start, p.M * p.N) } : undefined,
    activationGrad: p.activation === 'grad' ? { kind: p.exactGelu ? 'gelu' : 'gelu_new', x: packs.r.view(buffers.r, layout[i].r!.start, p.M * p.N) } : undefined,
    terms: p.terms.map((t, j) => {
      const at = layout[i].terms[j];
      const aPack = t.aBuffer ? packs.a2 : packs.a;
      return {
        K: t.K, transA: t.transA, transB: t.transB, alpha: t.alpha, aFormat, bFormat,
        a: aPack.view(t.aBuffer ? buffers.a2 : buffers.a, at.a.start, p.M * t.K),
        b: at.b ? packs.b.view(buffers.b, at.b.start, t.K * p.N) : ('ones' as const),
      };
    }),
  }));
  const before = gpu.workCounts();
  await gpu.run((rec) => matmulGrouped(rec, problems, variant));
  expect(gpu.workSince(before).dispatches).toBe(expectDispatches);
  const got = await gpu.readF32(cBuffer);
  const gotY = await gpu.readF32(buffers.y);
  layout.forEach((l, i) => {
    const p = cases[i];
    const want = new Float64Array(p.M * p.N);
    p.terms.forEach((t, j) => {
      const a = (t.aBuffer ? packs.a2 : packs.a).rounded[l.terms[j].a.index];
      const b = l.terms[j].b ? packs.b.rounded[l.terms[j].b!.index] : new Float32Array(t.K).fill(1);
      const term = matmulRef({ a, b, M: p.M, N: p.N, K: t.K, transA: t.transA, transB: t.transB, alpha: (p.alpha ?? 1) * (t.alpha ?? 1) });
      for (let e = 0; e < want.length; e++) want[e] += term[e];
    });
    for (let m = 0; m < p.M; m++) {
      for (let n = 0; n < p.N; n++) {
        const e = m * p.N + n;
        if (l.bias) want[e] += packs.bias.rounded[l.bias.index][n];
        if (p.residual) want[e] += packs.r.rounded[l.r!.index][e];
        if (p.accumulate) want[e] += cInit[i][e];
        if (p.activation === 'grad') want[e] *= geluGradRef(packs.r.rounded[l.r!.index][e], p.exactGelu ? 'gelu' : 'gelu_new');
      }
    }
    const err = compare(got.subarray(l.c.start, l.c.start + p.M * p.N), want);
    expect(err.rel, `seed ${seed} ${variant} problem ${i} ${JSON.stringify(p)} maxAbs ${err.maxAbs}`).toBeLessThan(1e-4);
    if (l.y) {
      const act = compare(gotY.subarray(l.y.start, l.y.start + p.M * p.N), want.map((x) => geluRef(x, p.exactGelu ? 'gelu' : 'gelu_new')));
      expect(act.rel, `seed ${seed} ${variant} problem ${i}: the activation output`).toBeLessThan(1e-4);
    }
  });
  // Y stays poisoned outside the activations' outputs, and R (read through a writable binding) is unchanged.
  const inY = new Set(layout.flatMap((l, i) => (l.y ? Array.from({ length: cases[i].M * cases[i].N }, (_, e) => l.y!.start + e) : [])));
  for (let e = 0; e < gotY.length; e++) if (!inY.has(e)) expect(gotY[e], `seed ${seed}: Y[${e}] outside every activation output was written`).toBeNaN();
  expect(await gpu.readF32(buffers.r), `seed ${seed}: R was written`).toEqual(packs.r.contents());
  // The gaps between problems' C stay poisoned: nothing is written outside a problem.
  const inside = new Set(layout.flatMap((l, i) => Array.from({ length: cases[i].M * cases[i].N }, (_, e) => l.c.start + e)));
  for (let e = 0; e < got.length; e++) if (!inside.has(e)) expect(got[e], `seed ${seed}: C[${e}] outside every problem was written`).toBeNaN();
  for (const b of [...Object.values(buffers), cBuffer]) gpu.destroyBuffer(b);
}

// A linear layer's weight and bias gradients (dW += alpha dY^T X, db += dY^T 1), a three-term input
// gradient with a bias, a residual and each term its own scale, and a 1x1 product: every problem of one dispatch.
const LAYER: ProblemCase[] = [
  { M: 37, N: 29, terms: [{ K: 53, transA: true }], alpha: 0.37, accumulate: true },
  { M: 37, N: 1, terms: [{ K: 53, transA: true, ones: true }], alpha: 0.37, accumulate: true },
  { M: 53, N: 29, terms: [{ K: 17 }, { K: 5, transB: true, alpha: -2.5 }, { K: 70, transA: true, transB: true, alpha: 0.3 }], bias: true, residual: true },
  { M: 1, N: 1, terms: [{ K: 1, transB: true }], bias: true },
];

describe.each(VARIANTS)('matmulGrouped (%s)', (variant) => {
  it('a layer\'s products, bias gradients and multi-term sums in one dispatch', () => check(variant, LAYER));

  it('large and small problems together (edge tiles of each)', () =>
    check(variant, [
      { M: 130, N: 67, terms: [{ K: 33, transB: true }], bias: true },
      { M: 3, N: 200, terms: [{ K: 2 }], accumulate: true },
      { M: 65, N: 1, terms: [{ K: 129, transA: true, ones: true }] },
    ]));

  it('a problem whose terms read two buffers: split into dispatches that accumulate in turn', () =>
    check(variant, [
      { M: 21, N: 19, terms: [{ K: 13 }, { K: 11, aBuffer: 1, alpha: 0.7 }], alpha: 1.5, bias: true, residual: true },
      { M: 9, N: 19, terms: [{ K: 7, transA: true }] },
    ], {}, 2));

  it('the epilogue alone: no terms', () => check(variant, [{ M: 5, N: 7, terms: [], bias: true, residual: true }]));

  // R is one binding: the outputs (in Y) take one dispatch, the residual and the gradient's input (in R) another.
  it.each([false, true])('activation epilogues (exact GELU: %s): gelu(C) beside C, and C times gelu\'', (exactGelu) =>
    check(variant, [
      { M: 45, N: 70, terms: [{ K: 19, transB: true }], bias: true, activation: 'out', exactGelu },
      { M: 8, N: 70, terms: [{ K: 3 }], residual: true },
      { M: 37, N: 3, terms: [{ K: 70 }, { K: 6, alpha: -0.5 }], activation: 'grad', exactGelu },
      { M: 5, N: 9, terms: [{ K: 11, transA: true }], activation: 'out', accumulate: true, exactGelu },
    ], {}, 2));

  it('activation epilogues on a problem split over two buffers: applied once, to the whole sum', () =>
    check(variant, [
      { M: 21, N: 19, terms: [{ K: 13 }, { K: 11, aBuffer: 1, alpha: 0.7 }], bias: true, activation: 'out' },
      { M: 17, N: 23, terms: [{ K: 6, transB: true }, { K: 9, aBuffer: 1, transA: true }], activation: 'grad' },
    ], {}, 3));

  it.each([
    ['bf16', 'f32'],
    ['f32', 'f16'],
    ['f16', 'bf16'],
  ] as const)('16-bit operands: A %s, B %s', (a, b) =>
    check(variant, [
      { M: 19, N: 23, terms: [{ K: 41, transB: true }], bias: true },
      { M: 23, N: 1, terms: [{ K: 19, transA: true, ones: true }] },
      { M: 17, N: 23, terms: [{ K: 6, alpha: 3 }, { K: 9, transA: true }], residual: true },
    ], { a, b }));
});

describe('matmulGrouped, one product alone', () => {
  it.each(VARIANTS)('records matmul.wgsl\'s specialized product (%s) where its views can be bound, with the same result', async (variant) => {
    const gpu = await testGpu(GROUPED);
    const seed = freshSeed();
    const rand = rng(seed);
    const [M, N, K] = [23, 17, 45];
    const [a, b, bias, c0] = [randn(K * M, rand), randn(N * K, rand), randn(N, rand), randn(M * N, rand)];
    const [A, B, bias_, C] = [gpu.upload(a), gpu.upload(b), gpu.upload(bias), gpu.upload(c0)];
    const before = gpu.workCounts();
    await gpu.run((rec) => matmulGrouped(rec, [{ c: C, M, N, alpha: 0.5, accumulate: true, bias: bias_, terms: [{ a: A, transA: true, b: B, transB: true, K, alpha: -3 }] }], variant));
    expect(Object.fromEntries(gpu.workSince(before).byKernel)).toEqual({ [`matmul.matmul_${variant}`]: 1 });
    const want = matmulRef({ a, b, c: c0, M, N, K, transA: true, transB: true, alpha: -1.5, accumulate: true });
    for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) want[m * N + n] += bias[n];
    expect(compare(await gpu.readF32(C), want).rel, `seed ${seed}`).toBeLessThan(1e-4);
    for (const x of [A, B, bias_, C]) gpu.destroyBuffer(x);
  });
});

describe('matmulGrouped with groupedProducts off', () => {
  it('records each term as matmul.wgsl\'s product and the residual as an axpy, with the grouped result', async () => {
    const results: Float32Array[] = [];
    const seed = freshSeed();
    for (const groupedProducts of [true, false]) {
      const gpu = await testGpu({ groupedProducts });
      const rand = rng(seed);
      const [M, N] = [19, 21];
      const [a1, b1, a2, b2, bias, r, c0] = [randn(M * 7, rand), randn(N * 7, rand), randn(9 * M, rand), randn(9 * N, rand), randn(N, rand), randn(M * N, rand), randn(M * N, rand)];
      const up = [a1, b1, a2, b2, bias, r, c0].map((x) => gpu.upload(x));
      const [A1, B1, A2, B2, bias_, R, C] = up;
      const before = gpu.workCounts();
      await gpu.run((rec) => matmulGrouped(rec, [{ c: C, M, N, accumulate: true, bias: bias_, residual: R, terms: [{ a: A1, b: B1, transB: true, K: 7 }, { a: A2, transA: true, b: B2, K: 9, alpha: 0.25 }] }], 'direct'));
      const kernels = Object.fromEntries(gpu.workSince(before).byKernel);
      // Grouped: the terms read different buffers, so two dispatches; the second, a product alone, is matmul.wgsl's.
      expect(kernels).toEqual(groupedProducts ? { 'matmul_grouped.grouped_direct': 1, 'matmul.matmul_direct': 1 } : { 'matmul.matmul_direct': 2, 'elementwise.elementwise': 1 });
      results.push(await gpu.readF32(C));
      for (const x of up) gpu.destroyBuffer(x);
      const want = matmulRef({ a: a1, b: b1, c: c0, M, N, K: 7, transB: true, accumulate: true });
      const second = matmulRef({ a: a2, b: b2, M, N, K: 9, transA: true, alpha: 0.25 });
      for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) want[m * N + n] += second[m * N + n] + bias[n] + r[m * N + n];
      expect(compare(results.at(-1)!, want).rel, `seed ${seed} grouped ${groupedProducts}`).toBeLessThan(1e-4);
    }
  });
});

describe('matmulGrouped with groupedProducts off, a bias gradient', () => {
  it('records dy^T 1 as column sums beside the weight gradient\'s product', async () => {
    const seed = freshSeed();
    const gpu = await testGpu({ groupedProducts: false });
    const rand = rng(seed);
    const [M, N, K] = [45, 19, 131];
    const [dy, x, w0, b0] = [randn(K * M, rand), randn(K * N, rand), randn(M * N, rand), randn(M, rand)];
    const [A, X, W, C] = [gpu.upload(dy), gpu.upload(x), gpu.upload(w0), gpu.upload(b0)];
    const before = gpu.workCounts();
    await gpu.run((rec) => matmulGrouped(rec, [
      { c: W, M, N, accumulate: true, terms: [{ a: A, transA: true, b: X, K }] },
      { c: C, M, N: 1, alpha: 0.5, accumulate: true, terms: [{ a: A, transA: true, b: 'ones', K, alpha: 3 }] },
    ], 'direct'));
    const kernels = Object.fromEntries(gpu.workSince(before).byKernel);
    expect(kernels).toEqual({ 'matmul.matmul_direct': 1, 'reduce.sum_columns': 1 });
    const want = Float64Array.from(b0);
    for (let m = 0; m < M; m++) for (let k = 0; k < K; k++) want[m] += 1.5 * dy[k * M + m];
    expect(compare(await gpu.readF32(C), want).rel, `seed ${seed}`).toBeLessThan(1e-4);
    expect(compare(await gpu.readF32(W), matmulRef({ a: dy, b: x, c: w0, M, N, K, transA: true, accumulate: true })).rel, `seed ${seed}: dW`).toBeLessThan(1e-4);
    for (const b of [A, X, W, C]) gpu.destroyBuffer(b);
  });
});

describe('matmulGrouped refuses', () => {
  it('overlapping outputs, a problem reading what the group writes, and ones against N > 1', async () => {
    const gpu = await testGpu(GROUPED);
    const x = gpu.createBuffer(4096);
    const y = gpu.createBuffer(4096);
    const c = gpu.createBuffer(4096);
    const view = (buffer: GPUBuffer, offset: number, size: number) => ({ buffer, offset, size });
    const product = (cv: TensorView, a: TensorView = view(x, 0, 64)): GroupedProblem => ({ c: cv, M: 4, N: 4, terms: [{ a, b: view(y, 0, 64), K: 4 }] });
    await expect(gpu.run((rec) => matmulGrouped(rec, [product(view(c, 0, 64)), product(view(c, 32, 64))]))).rejects.toThrow(ShapeError);
    await expect(gpu.run((rec) => matmulGrouped(rec, [product(view(c, 0, 64)), product(view(x, 256, 64), view(c, 512, 64))]))).rejects.toThrow(/reads a buffer/);
    await expect(gpu.run((rec) => matmulGrouped(rec, [{ c: view(c, 0, 64), M: 4, N: 2, terms: [{ a: view(x, 0, 64), b: 'ones', K: 4 }] }]))).rejects.toThrow(/ones needs N = 1/);
    // An activation's gradient multiplies the whole result: nothing may be added to it.
    const grad = { kind: 'gelu_new' as const, x: view(y, 1024, 64) };
    await expect(gpu.run((rec) => matmulGrouped(rec, [{ ...product(view(c, 0, 64)), accumulate: true, activationGrad: grad }]))).rejects.toThrow(/activation's gradient/);
    await expect(gpu.run((rec) => matmulGrouped(rec, [{ ...product(view(c, 0, 64)), activation: { kind: 'gelu', out: view(c, 1024, 64) } }]))).rejects.toThrow(/share C's buffer/);
    for (const b of [x, y, c]) gpu.destroyBuffer(b);
  });
});
