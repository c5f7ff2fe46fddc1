import { describe, expect, it } from 'vitest';
import { crossEntropyBackward, crossEntropyChunk, crossEntropyForward, decodeHalves, encodeHalves, IGNORE_INDEX, ShapeError } from '../../src/index.js';
import { compare, freshSeed, poisoned, randn, REDUCTIONS, rng, testGpu } from '../helpers.js';
import { crossEntropyRef } from '../reference/cross-entropy.js';

describe.each(REDUCTIONS)('fused chunked cross-entropy, %s', (_, reduction) => {
  it.each([
    // T, H, V, chunk, logit soft cap (Gemma 2)
    [1, 8, 100, 64, null],
    [17, 17, 257, 64, null], // 5 chunks, the last of 1 column
    [33, 8, 300, 128, null],
    [5, 33, 64, 64, null],
    [9, 4, 100, 256, null], // one chunk wider than the vocabulary
    [17, 17, 257, 64, 3],
    [9, 12, 300, 128, 0.8],
  ])('T=%i H=%i V=%i chunk %i softcap %s: losses, dHidden, dWeight', async (T, H, V, chunk, softcap) => {
    const gpu = await testGpu(reduction);
    const seed = freshSeed();
    const rand = rng(seed);
    const hh = randn(T * H, rand, 1.5);
    const wh = randn(V * H, rand, 1.5);
    const tgt = Int32Array.from({ length: T }, (_, t) => (t % 4 === 1 ? IGNORE_INDEX : Math.floor(rand() * V)));
    const valid = tgt.filter((x) => x >= 0).length;
    const scale = 1 / Math.max(valid, 1);
    const dW0 = randn(V * H, rand);
    const args = {
      hidden: gpu.upload(hh), weight: gpu.upload(wh), targets: gpu.upload(tgt), T, H, V, chunk, softcap,
      logits: poisoned(gpu, T * Math.min(chunk, V)), stats: poisoned(gpu, 3 * T), losses: poisoned(gpu, T),
    };
    const dHidden = poisoned(gpu, T * H);
    const dWeight = gpu.upload(dW0);
    await gpu.run((rec) => {
      crossEntropyForward(rec, args);
      crossEntropyBackward(rec, { ...args, dHidden, dWeight, gradScale: scale });
    });
    const ref = crossEntropyRef(hh, wh, tgt, T, H, V, scale, softcap);
    const msg = `seed ${seed}`;
    // A loss is log-sum-exp minus the target's logit, and dHidden sums (p - onehot) W over the vocabulary:
    // where the target's probability is near 1, both cancel to near zero, and their f32 error is that of
    // the terms (f32 logits, rows of W), not of the small result. The floors are those terms' sizes.
    let logitScale = 0;
    for (let t = 0; t < T; t++) for (let v = 0; v < V; v++) logitScale = Math.max(logitScale, Math.abs(hh.subarray(t * H, t * H + H).reduce((sum, x, h) => sum + x * wh[v * H + h], 0)));
    const weightScale = scale * wh.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
    expect(compare(await gpu.readF32(args.losses), ref.losses, logitScale).rel, msg).toBeLessThan(1e-4);
    expect(compare(await gpu.readF32(dHidden), ref.dHidden, weightScale).rel, msg).toBeLessThan(1e-4);
    expect(compare(await gpu.readF32(dWeight), ref.dWeight.map((v, i) => v + dW0[i])).rel, msg).toBeLessThan(1e-4);
  });

  it.each([
    ['bf16', 17, 18, 257, 64],
    ['f16', 33, 8, 300, 128],
  ] as const)('a frozen %s LM head: T=%i H=%i V=%i chunk %i, losses and dHidden of the decoded weight', async (format, T, H, V, chunk) => {
    const gpu = await testGpu(reduction);
    const seed = freshSeed();
    const rand = rng(seed);
    const hh = randn(T * H, rand, 1.5);
    const half = encodeHalves(randn(V * H, rand, 1.5), format);
    const wh = decodeHalves(half.slice().buffer, V * H, format);
    const tgt = Int32Array.from({ length: T }, () => Math.floor(rand() * V));
    const args = {
      hidden: gpu.upload(hh), weight: gpu.upload(new Uint32Array(half.buffer)), weightFormat: format, targets: gpu.upload(tgt), T, H, V, chunk,
      logits: poisoned(gpu, T * Math.min(chunk, V)), stats: poisoned(gpu, 3 * T), losses: poisoned(gpu, T),
    };
    const dHidden = poisoned(gpu, T * H);
    await gpu.run((rec) => {
      crossEntropyForward(rec, args);
      crossEntropyBackward(rec, { ...args, dHidden, gradScale: 1 / T });
    });
    const ref = crossEntropyRef(hh, wh, tgt, T, H, V, 1 / T);
    expect(compare(await gpu.readF32(args.losses), ref.losses).rel, `seed ${seed}`).toBeLessThan(1e-4);
    expect(compare(await gpu.readF32(dHidden), ref.dHidden).rel, `seed ${seed}`).toBeLessThan(1e-4);
    expect(() => crossEntropyBackward(gpu.recorder(), { ...args, dHidden, dWeight: gpu.createBuffer(V * H * 4), gradScale: 1 })).toThrow(/trained LM head is f32/);
  });

  it('chooses aligned chunks within a memory budget', () => {
    expect(crossEntropyChunk(1024, 151936, 64 << 20)).toBe(16384);
    expect(crossEntropyChunk(4, 100)).toBe(128);
    expect(crossEntropyChunk(1 << 20, 50257, 1 << 20) % 64).toBe(0);
  });

  it('rejects chunks that break weight alignment', async () => {
    const gpu = await testGpu(reduction);
    const b = gpu.createBuffer(1 << 16);
    expect(() => crossEntropyForward(gpu.recorder(), { hidden: b, weight: b, targets: b, T: 2, H: 4, V: 100, chunk: 50, logits: b, stats: b, losses: b })).toThrow(ShapeError);
  });
});
