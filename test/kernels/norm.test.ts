import { describe, expect, it } from 'vitest';
import { normBackward, normForward, type NormKind } from '../../src/index.js';
import { compare, freshSeed, poisoned, randn, REDUCTIONS, rng, testGpu } from '../helpers.js';
import { normBackwardRef, normForwardRef } from '../reference/layers.js';

// Weight offset 1 is Gemma's RMSNorm, x * rstd * (1 + w): the reference scales by w + 1 (the same gradient in w).
const kinds: [NormKind, number][] = [['rmsnorm', 0], ['layernorm', 0], ['rmsnorm', 1]];
const cases = REDUCTIONS.flatMap(([label, reduction]) => kinds.map(([kind, offset]) => [kind, offset, label, reduction] as const));

describe.each(cases)('%s, weight offset %i, %s', (kind, weightOffset, _, reduction) => {
  // With `accumulate`, dx starts with values and the input gradient is added to them (a residual stream's).
  it.each([
    [1, 1, false],
    [3, 17, true],
    [17, 100, false],
    [5, 257, true],
    [33, 64, false],
  ])('%ix%i forward and backward, dx accumulated %s', async (rows, cols, accumulate) => {
    const gpu = await testGpu(reduction);
    const seed = freshSeed();
    const rand = rng(seed);
    const eps = 1e-5;
    const xh = randn(rows * cols, rand);
    const wh = randn(cols, rand);
    const bh = randn(cols, rand);
    const dyh = randn(rows * cols, rand);
    const dw0 = randn(cols, rand);
    const db0 = randn(cols, rand);
    const ln = kind === 'layernorm';
    const scale = wh.map((v) => v + weightOffset);
    const [x, w, b, dy] = [xh, wh, bh, dyh].map((a) => gpu.upload(a));
    const y = poisoned(gpu, rows * cols);
    const stats = poisoned(gpu, 2 * rows);
    const dx0 = randn(rows * cols, rand);
    const dx = accumulate ? gpu.upload(dx0) : poisoned(gpu, rows * cols);
    const dWeight = gpu.upload(dw0); // accumulated into
    const dBias = gpu.upload(db0);
    await gpu.run((rec) => {
      normForward(rec, { kind, rows, cols, eps, weightOffset, x, weight: w, bias: ln ? b : undefined, y, stats });
      normBackward(rec, { kind, rows, cols, eps, weightOffset, x, weight: w, stats, dy, dx, accumulate, dWeight, dBias: ln ? dBias : undefined });
    });
    const fwd = normForwardRef(kind, xh, scale, ln ? bh : null, rows, cols, eps);
    const bwd = normBackwardRef(kind, xh, scale, dyh, rows, cols, eps);
    const msg = `seed ${seed} ${kind} ${rows}x${cols}`;
    expect(compare(await gpu.readF32(y), fwd.y).rel, msg).toBeLessThan(1e-4);
    expect(compare(await gpu.readF32(stats), fwd.stats).rel, msg).toBeLessThan(1e-4);
    // dx subtracts terms of size rstd * |dy * w|; f32 error is relative to them, not to their difference
    // (with one column RMSNorm's dx is eps-sized while the terms are not).
    let termScale = 0;
    for (let i = 0; i < rows * cols; i++) termScale = Math.max(termScale, fwd.stats[2 * Math.floor(i / cols) + 1] * Math.abs(dyh[i] * scale[i % cols]));
    // Accumulated, the sum's error is also relative to the values it started from.
    if (accumulate) termScale = Math.max(termScale, ...Array.from(dx0, Math.abs));
    expect(compare(await gpu.readF32(dx), accumulate ? bwd.dx.map((v, i) => v + dx0[i]) : bwd.dx).maxAbs / termScale, msg).toBeLessThan(1e-4);
    expect(compare(await gpu.readF32(dWeight), bwd.dw.map((v, i) => v + dw0[i])).rel, msg).toBeLessThan(1e-4);
    if (ln) expect(compare(await gpu.readF32(dBias), bwd.db.map((v, i) => v + db0[i])).rel, msg).toBeLessThan(1e-4);
    else expect(Array.from(await gpu.readF32(dBias))).toEqual(Array.from(db0)); // rmsnorm leaves it alone
  });
});
