import { describe, expect, it } from 'vitest';
import {
  embeddingBackward,
  embeddingForward,
  embeddingGradPlan,
  decodeHalves,
  encodeHalves,
  geluBackward,
  geluForward,
  rope,
  ropeTable,
  ShapeError,
  swigluBackward,
  swigluForward,
  type GeluKind,
} from '../../src/index.js';
import { compare, freshSeed, poisoned, randn, rng, testGpu } from '../helpers.js';
import { embeddingBackwardRef, embeddingForwardRef, geluGradRef, geluRef, ropeInvFreqRef, ropeRef, swigluBackwardRef, swigluForwardRef } from '../reference/layers.js';

describe.each(['bf16', 'f16'] as const)('embedding lookup from a %s table', (format) => {
  it.each([
    [1, 2, 1],
    [37, 18, 101],
    [64, 64, 300],
  ])('T=%i C=%i rows=%i: the decoded table rows, as from the f32 table', async (T, C, rows) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const half = encodeHalves(randn(rows * C, rand), format);
    const tab = decodeHalves(half.slice().buffer, rows * C, format);
    const ids = Uint32Array.from({ length: T }, () => Math.floor(rand() * rows));
    const out = poisoned(gpu, T * C);
    await gpu.run((rec) => embeddingForward(rec, { ids: gpu.upload(ids), table: gpu.upload(new Uint32Array(half.buffer)), tableFormat: format, out, T, C, rows }));
    expect(compare(await gpu.readF32(out), embeddingForwardRef(ids, tab, T, C)).maxAbs, `seed ${seed}`).toBe(0);
  });
});

describe('rope', () => {
  const longrope = { type: 'longrope' as const, shortFactor: [1, 1.5, 2.5, 4], longFactor: [1.2, 3, 7, 11], originalMaxPositions: 64, attentionFactor: 1.19 };
  it.each([
    // T, heads, head dim, rotated dims (partial rotation), padding of a fused row, LongRoPE's long factors
    [1, 1, 2, 2, 0, null],
    [17, 3, 8, 8, 0, null],
    [33, 2, 64, 64, 5, null], // heads inside a wider (fused) row
    [100, 5, 16, 16, 0, null],
    [29, 3, 12, 8, 0, 'short'], // Phi-4-mini: the first 2/3 of each head rotate, LongRoPE within the context
    [40, 2, 10, 8, 3, 'long'], // and past it
  ] as const)('T=%i heads=%i D=%i rotating %i, pad %i, longrope %s: forward then backward restores x', async (T, heads, D, R, pad, range) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const rowStride = heads * D + 2 * pad;
    const maxPos = 300;
    const xh = randn(T * rowStride, rand);
    // Packed documents: positions restart.
    const pos = Uint32Array.from({ length: T }, (_, t) => (t < T / 2 ? t : t - Math.floor(T / 2)) + (t % 7 === 3 ? 250 : 0));
    const x = gpu.upload(xh);
    const positions = gpu.upload(pos);
    const scaling = range ? longrope : null;
    const table = gpu.upload(ropeTable(R, 10000, maxPos, scaling, range ?? 'short'));
    const args = { x, positions, table, T, heads, headDim: D, rotaryDim: R, maxPositions: maxPos, rowStride, colOffset: pad };
    await gpu.run((rec) => rope(rec, args));
    const inv = ropeInvFreqRef(R, 10000, scaling, range ?? 'short');
    const want = ropeRef(xh, pos, T, heads, R, inv, rowStride, pad, false, D, range ? longrope.attentionFactor : 1);
    expect(compare(await gpu.readF32(x), want).rel, `seed ${seed}`).toBeLessThan(1e-4);
    await gpu.run((rec) => rope(rec, { ...args, backward: true }));
    // The backward pass is the transpose: with LongRoPE's scale s it restores x times s^2 on the rotated values.
    const back = ropeRef(want, pos, T, heads, R, inv, rowStride, pad, true, D, range ? longrope.attentionFactor : 1);
    expect(compare(await gpu.readF32(x), back).rel, `seed ${seed}`).toBeLessThan(1e-4);
  });

  it('rejects odd head sizes and heads past the row', async () => {
    const gpu = await testGpu();
    const b = gpu.createBuffer(1024);
    expect(() => rope(gpu.recorder(), { x: b, positions: b, table: b, T: 1, heads: 1, headDim: 3, maxPositions: 1 })).toThrow(ShapeError);
    expect(() => rope(gpu.recorder(), { x: b, positions: b, table: b, T: 1, heads: 2, headDim: 4, maxPositions: 1, rowStride: 6 })).toThrow(/past the end/);
  });
});

describe('activations', () => {
  it.each([
    [1, 'silu'],
    [17, 'silu'],
    [1000, 'silu'],
    [17, 'gelu_new'],
    [1000, 'gelu_new'],
    [1000, 'gelu'],
  ] as const)('gated MLP activation forward and backward, n=%i, gate %s', async (n, activation) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const [gh, uh, dhh] = [randn(n, rand, 3), randn(n, rand), randn(n, rand)];
    const [gate, up, dH] = [gh, uh, dhh].map((a) => gpu.upload(a));
    const [h, dGate, dUp] = [poisoned(gpu, n), poisoned(gpu, n), poisoned(gpu, n)];
    await gpu.run((rec) => {
      swigluForward(rec, { gate, up, h, n, activation });
      swigluBackward(rec, { gate, up, dH, dGate, dUp, n, activation });
    });
    const ref = swigluBackwardRef(gh, uh, dhh, activation);
    expect(compare(await gpu.readF32(h), swigluForwardRef(gh, uh, activation)).rel, `seed ${seed}`).toBeLessThan(1e-4);
    expect(compare(await gpu.readF32(dGate), ref.dGate).rel, `seed ${seed}`).toBeLessThan(1e-4);
    expect(compare(await gpu.readF32(dUp), ref.dUp).rel, `seed ${seed}`).toBeLessThan(1e-4);
  });

  it.each(['gelu_new', 'gelu'] as GeluKind[])('%s forward and backward', async (kind) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const n = 1031;
    const [xh, dyh] = [randn(n, rand, 3), randn(n, rand)];
    // Tails where tanh's argument overflows exp in f32, placed at random positions.
    for (const v of [-60, -20, -9.5, 9.5, 20, 60]) xh[Math.floor(rand() * n)] = v;
    const [x, dY] = [gpu.upload(xh), gpu.upload(dyh)];
    const [y, dX] = [poisoned(gpu, n), poisoned(gpu, n)];
    await gpu.run((rec) => {
      geluForward(rec, { x, y, n, kind });
      geluBackward(rec, { x, dY, dX, n, kind });
    });
    expect(compare(await gpu.readF32(y), Array.from(xh, (v) => geluRef(v, kind))).rel, `seed ${seed}`).toBeLessThan(1e-4);
    expect(compare(await gpu.readF32(dX), Array.from(xh, (v, i) => dyh[i] * geluGradRef(v, kind))).rel, `seed ${seed}`).toBeLessThan(1e-4);
  });
});

describe('embedding', () => {
  it.each([
    [1, 1, 1, 'its own pass'],
    [17, 33, 10, 'its own pass'],
    [100, 17, 257, 'its own pass'],
    [17, 33, 10, 'the same pass'],
    [100, 17, 257, 'the same pass'],
  ] as const)('T=%i C=%i rows=%i forward (scaled, as Gemma scales by sqrt(C)), positions added in %s, deterministic backward', async (T, C, rows, where) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const ids = Uint32Array.from({ length: T }, () => Math.floor(rand() * Math.min(rows, 7))); // many repeats
    const pos = Uint32Array.from({ length: T }, (_, t) => t % rows);
    const [tabh, ptabh, douth, d0] = [randn(rows * C, rand), randn(rows * C, rand), randn(T * C, rand), randn(rows * C, rand)];
    const [table, ptable, dOut] = [gpu.upload(tabh), gpu.upload(ptabh), gpu.upload(douth)];
    const out = poisoned(gpu, T * C);
    const dTable = gpu.upload(d0);
    const plan = embeddingGradPlan(ids, rows);
    const scale = Math.fround(Math.sqrt(C));
    await gpu.run((rec) => {
      if (where === 'its own pass') {
        embeddingForward(rec, { ids: gpu.upload(ids), table, out, T, C, rows, scale });
        embeddingForward(rec, { ids: gpu.upload(pos), table: ptable, out, T, C, rows, accumulate: true });
      } else embeddingForward(rec, { ids: gpu.upload(ids), table, out, T, C, rows, scale, positions: { ids: gpu.upload(pos), table: ptable, rows } });
      embeddingBackward(rec, {
        unique: gpu.upload(plan.unique), offsets: gpu.upload(plan.offsets), order: gpu.upload(plan.order),
        U: plan.unique.length, dOut, dTable, T, C, rows, scale,
      });
    });
    const posPart = embeddingForwardRef(pos, ptabh, T, C);
    const fwd = embeddingForwardRef(ids, tabh, T, C).map((v, i) => scale * v + posPart[i]);
    expect(compare(await gpu.readF32(out), fwd).rel, `seed ${seed}`).toBeLessThan(1e-4);
    const bwd = embeddingBackwardRef(ids, douth, T, C, rows).map((v, i) => scale * v + d0[i]);
    expect(compare(await gpu.readF32(dTable), bwd).rel, `seed ${seed}`).toBeLessThan(1e-4);
  });

  it('rejects ids outside the table', () => {
    expect(() => embeddingGradPlan([0, 5], 5)).toThrow(ShapeError);
    expect(() => embeddingGradPlan([-1], 5)).toThrow(/outside/);
  });
});
