import { describe, expect, it } from 'vitest';
import { attentionBackward, attentionForward, keptScoresLength, naiveAttentionForward, naiveAttentionScratchBytes, ShapeError } from '../../src/index.js';
import { compare, freshSeed, IN_BROWSER, ON_LAVAPIPE, poisoned, randn, rng, testGpu } from '../helpers.js';
import { attentionBackwardRef, attentionForwardRef } from '../reference/attention.js';

/** Document ids for packed rows: random document lengths, restarting per sequence. */
function packedSegments(B: number, S: number, rand: () => number): Uint32Array {
  const seg = new Uint32Array(B * S);
  let id = 0;
  for (let b = 0; b < B; b++) {
    let left = 0;
    for (let i = 0; i < S; i++) {
      if (left === 0) {
        id++;
        left = 1 + Math.floor(rand() * Math.max(1, S / 3));
      }
      seg[b * S + i] = id;
      left--;
    }
  }
  return seg;
}

// Gradients in three buffers, or at offsets of one (as a training step's activations hold them), where the
// tiled and blocked kernels take the whole backward pass in one dispatch instead of three; with room there
// for the scores, the blocked kernels keep them between a dQ pass and a dK/dV pass.
describe.each([
  [false, 'direct', 'three buffers'],
  [true, 'direct', 'three buffers'],
  [false, 'tiled', 'three buffers'],
  [true, 'tiled', 'three buffers'],
  [false, 'tiled', 'one buffer'],
  [true, 'tiled', 'one buffer'],
  // The blocked kernels are SwiftShader's (Node's Dawn and Chromium here). Chromium compiles each pipeline
  // anew, at seconds apiece: there they run with segments only, which mask more, and keep no scores (its
  // training tests do). Keeping the scores, the kernels run with segments only: the masks are what the
  // two passes must agree on. Lavapipe's compiler takes up to minutes over their written-out register
  // blocks, and lavapipe never chooses them.
  ...(IN_BROWSER || ON_LAVAPIPE ? [] : [[false, 'blocked', 'one buffer'] as const, [true, 'blocked', 'one buffer with the scores kept'] as const]),
  ...(ON_LAVAPIPE ? [] : [[true, 'blocked', 'one buffer'] as const]),
] as const)('flash attention equals naive attention (segments: %s, kernels %s, gradients in %s)', (useSegments, attentionVariant, layout) => {
  it.each<[number, number, number, number, number, number | null, number | null]>([
    // B, S, nH, nKV, D, sliding window, soft cap (Gemma 2; with a score scale of its own, 1 / sqrt(D + 7))
    [1, 1, 1, 1, 4, null, null],
    [2, 3, 2, 1, 8, null, null],
    [1, 17, 4, 2, 16, null, null],
    [2, 100, 2, 2, 5, null, null],
    [1, 300, 2, 1, 8, null, null],
    [2, 70, 2, 1, 8, 1, null],
    [1, 150, 4, 2, 4, 37, null],
    [2, 130, 2, 2, 12, 64, null],
    [2, 90, 4, 2, 16, null, 1.5],
    [1, 140, 2, 1, 8, 33, 0.7],
    // Head dims past 128: two quads per invocation in the blocked kernels' products with head rows.
    ...(attentionVariant === 'blocked' ? [[1, 45, 2, 1, 160, 9, null] as [number, number, number, number, number, number, null]] : []),
  ])('B=%i S=%i heads %i/%i D=%i window %s softcap %s, forward and backward', async (B, S, nH, nKV, D, window, softcap) => {
    const gpu = await testGpu({ attentionVariant });
    const seed = freshSeed();
    const rand = rng(seed);
    const rows = B * S;
    const [qh, kh, vh, dOh] = [randn(rows * nH * D, rand), randn(rows * nKV * D, rand), randn(rows * nKV * D, rand), randn(rows * nH * D, rand)];
    const seg = useSegments ? packedSegments(B, S, rand) : undefined;
    const [q, k, v, dO] = [qh, kh, vh, dOh].map((a) => gpu.upload(a));
    const segments = seg ? gpu.upload(seg) : undefined;
    const o = poisoned(gpu, rows * nH * D);
    const stats = poisoned(gpu, rows * nH * 2);
    const sizes = [rows * nH * D, rows * nKV * D, rows * nKV * D];
    // One buffer: dK first, then dQ, then dV, then the kept scores, each after a gap and at a 256-byte
    // boundary, all poisoned.
    const kept = layout === 'one buffer with the scores kept' ? keptScoresLength(B, S, nH) : 0;
    sizes.push(kept);
    const at = [256 * (Math.ceil((sizes[1] * 4) / 256) + 2), 256, 0, 0];
    at[2] = at[0] + 256 * (Math.ceil((sizes[0] * 4) / 256) + 1);
    at[3] = at[2] + 256 * (Math.ceil((sizes[2] * 4) / 256) + 1);
    const shared = layout === 'three buffers' ? null : poisoned(gpu, at[3] / 4 + kept + 64);
    const [dQ, dK, dV, keptScores] = sizes.map((n, i) => (shared ? { buffer: shared, offset: at[i], size: n * 4 } : poisoned(gpu, n)));
    const scale = softcap ? 1 / Math.sqrt(D + 7) : undefined;
    const shape = { B, S, nH, nKV, headDim: D, segments, window, softcap, scale };
    await gpu.run((rec) => attentionForward(rec, { ...shape, q, k, v, o, stats }));
    const before = gpu.workCounts();
    await gpu.run((rec) => attentionBackward(rec, { ...shape, q, k, v, o, stats, dO, dQ, dK, dV, ...(kept ? { keptScores } : {}) }));
    expect(gpu.workSince(before).dispatches).toBe(kept ? 2 : shared ? 1 : 3);
    const ref = { B, S, nH, nKV, D, segments: seg, window, softcap, scale };
    const msg = `seed ${seed} B${B} S${S} h${nH}/${nKV} D${D} window ${window} softcap ${softcap}`;
    expect(compare(await gpu.readF32(o), attentionForwardRef(ref, qh, kh, vh)).rel, msg).toBeLessThan(1e-4);
    const bwd = attentionBackwardRef(ref, qh, kh, vh, dOh);
    const [gotQ, gotK, gotV] = await Promise.all([dQ, dK, dV].map((g) => gpu.readF32(g)));
    expect(compare(gotQ, bwd.dq).rel, `${msg} dQ`).toBeLessThan(1e-4);
    expect(compare(gotK, bwd.dk).rel, `${msg} dK`).toBeLessThan(1e-4);
    expect(compare(gotV, bwd.dv).rel, `${msg} dV`).toBeLessThan(1e-4);
    if (shared) {
      // Nothing outside the three gradients (and the room for the scores) was written.
      const all = await gpu.readF32(shared);
      const inside = (e: number) => sizes.some((n, i) => e * 4 >= at[i] && e * 4 < at[i] + n * 4);
      for (let e = 0; e < all.length; e++) if (!inside(e)) expect(all[e], `${msg}: element ${e} outside the gradients was written`).toBeNaN();
    }
  });
});

describe('attention over a KV cache (decoding)', () => {
  it.each([
    [20, 5, 32, 4, 2, 8, null, null],
    [7, 1, 7, 2, 2, 4, null, null],
    [33, 33, 40, 2, 1, 16, null, null], // prefill: every query new
    [45, 3, 50, 2, 1, 8, 16, null], // sliding window shorter than the cache
    [30, 4, 36, 2, 1, 8, 9, 1.2], // soft-capped scores (Gemma 2)
  ])('S=%i, last %i queries, cache of %i rows, heads %i/%i, D=%i, window %s, softcap %s', async (S, newRows, cacheRows, nH, nKV, D, window, softcap) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const [qh, kh, vh] = [randn(S * nH * D, rand), randn(S * nKV * D, rand), randn(S * nKV * D, rand)];
    const full = attentionForwardRef({ B: 1, S, nH, nKV, D, window, softcap }, qh, kh, vh);
    // The cache holds the S rows written so far; rows past them are poison that must never be read.
    const cacheK = poisoned(gpu, cacheRows * nKV * D);
    const cacheV = poisoned(gpu, cacheRows * nKV * D);
    gpu.write(cacheK, kh);
    gpu.write(cacheV, vh);
    const q = gpu.upload(qh.slice((S - newRows) * nH * D));
    const o = poisoned(gpu, newRows * nH * D);
    const stats = poisoned(gpu, newRows * nH * 2);
    await gpu.run((rec) =>
      attentionForward(rec, { B: 1, S: newRows, nH, nKV, headDim: D, window, softcap, q, k: cacheK, v: cacheV, o, stats, cache: { kvRows: cacheRows, qOffset: S - newRows } }),
    );
    const err = compare(await gpu.readF32(o), full.slice((S - newRows) * nH * D));
    expect(err.rel, `seed ${seed}`).toBeLessThan(1e-4);
  });
});

describe('attention over a batch of KV caches at different positions', () => {
  it.each([
    [1, null],
    [3, null],
    [2, 6],
  ])('sequences of different lengths, %i new queries each, window %s', async (newRows, window) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const [nH, nKV, D, cacheRows] = [4, 2, 8, 40];
    const lengths = [9, 23, 14]; // tokens written so far per sequence, the last newRows of them new
    const B = lengths.length;
    const cacheK = poisoned(gpu, B * cacheRows * nKV * D);
    const cacheV = poisoned(gpu, B * cacheRows * nKV * D);
    const q = new Float32Array(B * newRows * nH * D);
    const want = new Float64Array(B * newRows * nH * D);
    for (let b = 0; b < B; b++) {
      const S = lengths[b];
      const [qh, kh, vh] = [randn(S * nH * D, rand), randn(S * nKV * D, rand), randn(S * nKV * D, rand)];
      gpu.write({ buffer: cacheK, offset: b * cacheRows * nKV * D * 4, size: kh.byteLength }, kh);
      gpu.write({ buffer: cacheV, offset: b * cacheRows * nKV * D * 4, size: vh.byteLength }, vh);
      q.set(qh.subarray((S - newRows) * nH * D), b * newRows * nH * D);
      want.set(attentionForwardRef({ B: 1, S, nH, nKV, D, window }, qh, kh, vh).subarray((S - newRows) * nH * D), b * newRows * nH * D);
    }
    const qOffset = lengths.map((S) => S - newRows);
    const o = poisoned(gpu, B * newRows * nH * D);
    await gpu.run((rec) =>
      attentionForward(rec, {
        B, S: newRows, nH, nKV, headDim: D, window, q: gpu.upload(q), k: cacheK, v: cacheV, o, stats: poisoned(gpu, B * newRows * nH * 2),
        cache: { kvRows: cacheRows, qOffset, offsets: gpu.upload(Uint32Array.from(qOffset)) },
      }),
    );
    expect(compare(await gpu.readF32(o), want).rel, `seed ${seed}`).toBeLessThan(1e-4);
  });
});

describe('naive attention (the benchmark baseline)', () => {
  it.each([
    [1, 1, 1, 1, 4],
    [2, 17, 4, 2, 8],
    [1, 100, 2, 1, 5],
  ])('B=%i S=%i heads %i/%i D=%i equals the reference', async (B, S, nH, nKV, D) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const [qh, kh, vh] = [randn(B * S * nH * D, rand), randn(B * S * nKV * D, rand), randn(B * S * nKV * D, rand)];
    const o = poisoned(gpu, B * S * nH * D);
    await gpu.run((rec) =>
      naiveAttentionForward(rec, {
        B, S, nH, nKV, headDim: D, q: gpu.upload(qh), k: gpu.upload(kh), v: gpu.upload(vh), o, stats: o,
        scores: poisoned(gpu, naiveAttentionScratchBytes(B, S, nH) / 4),
      }),
    );
    expect(compare(await gpu.readF32(o), attentionForwardRef({ B, S, nH, nKV, D }, qh, kh, vh)).rel, `seed ${seed}`).toBeLessThan(1e-4);
  });
});

describe('attention input checks', () => {
  it('rejects GQA shapes that do not divide, oversize heads and short buffers', async () => {
    const gpu = await testGpu();
    const b = gpu.createBuffer(4096);
    const base = { B: 1, S: 4, headDim: 8, q: b, k: b, v: b, o: b, stats: b };
    expect(() => attentionForward(gpu.recorder(), { ...base, nH: 3, nKV: 2 })).toThrow(ShapeError);
    expect(() => attentionForward(gpu.recorder(), { ...base, nH: 1, nKV: 1, headDim: 512 })).toThrow(/exceeds 256/);
    expect(() => attentionForward(gpu.recorder(), { ...base, nH: 64, nKV: 8 })).toThrow(/needs \d+ elements/);
  });
});
