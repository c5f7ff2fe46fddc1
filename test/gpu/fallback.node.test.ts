/**
 * A device asked for without `shader-f16` and `subgroups` takes the paths every WebGPU device has.
 * Under `npm run test:lavapipe` that device is lavapipe's, which offers both features, and is compared
 * with SwiftShader's: reductions (additions and maxima in one order on two implementations of IEEE f32)
 * equal bit for bit; a whole model's loss and gradients to rounding, since exp, log and inverseSqrt are
 * each implementation's own approximations. Under plain `npm test` both devices are SwiftShader, with and
 * without its subgroups (two reduction orders).
 */
import { describe, expect, it } from 'vitest';
import { requestDevice, SWIFTSHADER_ICD } from '../../src/gpu/device.js';
import type { Gpu } from '../../src/gpu/gpu.js';
import { memorySource } from '../../src/io/sources.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { paramSpecs } from '../../src/model/layout.js';
import { tinyModelFiles } from '../../src/model/tiny.js';
import { reduceRows, type ReduceOp } from '../../src/kernels/reduce.js';
import { compare, freshSeed, poisoned, randn, rng } from '../helpers.js';

const onLavapipe = Boolean(process.env.LP_NATIVE_VECTOR_WIDTH);

/** A SwiftShader device in this process, whatever adapter the environment selects for the others. */
async function swiftShaderDevice(): Promise<Gpu> {
  const previous = process.env.VK_ICD_FILENAMES;
  process.env.VK_ICD_FILENAMES = SWIFTSHADER_ICD; // read when the next Dawn instance is created
  try {
    return await requestDevice({ label: 'swiftshader', tuning: { reductions: 'workgroup' } });
  } finally {
    if (previous === undefined) delete process.env.VK_ICD_FILENAMES;
    else process.env.VK_ICD_FILENAMES = previous;
  }
}

/** The loss and every gradient of a tiny model on one batch. */
async function lossAndGrads(gpu: Gpu, architecture: 'llama' | 'gpt2', seed: number): Promise<{ loss: number; grads: Map<string, Float32Array> }> {
  const ckpt = await openCheckpoint(memorySource(tinyModelFiles({ architecture, seed, hiddenSize: 32, intermediateSize: 40, numLayers: 2, numHeads: 4, maxPositions: 32, initStd: 0.2 })));
  const model = await CausalLM.fromCheckpoint(gpu, ckpt, { trainable: () => true });
  try {
    const rand = rng(seed);
    const [B, S] = [2, 13];
    const batch = model.prepare({ ids: Array.from({ length: B * S }, () => Math.floor(rand() * 256)), B, S });
    const loss = await model.loss(batch, true);
    const grads = new Map<string, Float32Array>();
    for (const s of paramSpecs(ckpt.config)) grads.set(s.name, await gpu.readF32(model.gradView(s.name)!));
    return { loss, grads };
  } finally {
    model.destroy();
  }
}

describe('a device without shader-f16 and subgroups', () => {
  it.each(['llama', 'gpt2'] as const)('takes the fallback paths and matches SwiftShader (%s loss and gradients)', async (architecture) => {
    const plain = await requestDevice({ label: 'no-features', allowF16: false, allowSubgroups: false });
    const reference = onLavapipe ? await swiftShaderDevice() : await requestDevice({ label: 'subgroups' });
    try {
      expect(plain.features.shaderF16).toBe(false);
      expect(plain.features.subgroups).toBe(false);
      expect(plain.tuning.reductions).toBe('workgroup');
      expect(plain.tuningReasons.reductions).toMatch(/lacks 'subgroups'/);
      expect(plain.tuning.halfLoads).toBe('packed');
      expect(reference.describe()).toMatch(/swiftshader/i);
      // SwiftShader records each product alone; lavapipe groups them: the same loss and gradients either way.
      expect([reference.tuning.groupedProducts, reference.tuningReasons.groupedProducts]).toEqual([false, expect.stringMatching(/SwiftShader/)]);
      if (onLavapipe) expect([plain.describe(), plain.tuning.groupedProducts]).toEqual([expect.stringMatching(/llvmpipe/), true]);
      const seed = freshSeed();
      const got = await lossAndGrads(plain, architecture, seed);
      const want = await lossAndGrads(reference, architecture, seed);
      expect(Math.abs(got.loss - want.loss) / want.loss, `seed ${seed}`).toBeLessThan(1e-6);
      // Relative to the largest gradient: some are analytically zero (GPT-2's key bias) and hold only rounding.
      let scale = 0;
      for (const g of want.grads.values()) for (const v of g) scale = Math.max(scale, Math.abs(v));
      for (const [name, g] of want.grads) expect(compare(got.grads.get(name)!, g).maxAbs / scale, `seed ${seed} grad of ${name}`).toBeLessThan(1e-5);
    } finally {
      plain.destroy();
      reference.destroy();
    }
  });

  it('reduces rows exactly as SwiftShader does', async () => {
    const plain = await requestDevice({ label: 'no-features', allowF16: false, allowSubgroups: false });
    const reference = onLavapipe ? await swiftShaderDevice() : await requestDevice({ label: 'workgroup', tuning: { reductions: 'workgroup' } });
    try {
      const seed = freshSeed();
      const [rows, cols] = [7, 301];
      const x = randn(rows * cols, rng(seed));
      for (const op of ['sum', 'max', 'sumsq'] as ReduceOp[]) {
        const [got, want] = await Promise.all(
          [plain, reference].map(async (gpu) => {
            const out = poisoned(gpu, rows);
            await gpu.run((rec) => reduceRows(rec, { op, x: gpu.upload(x), out, rows, cols }));
            return Array.from(await gpu.readF32(out));
          }),
        );
        expect(got, `seed ${seed} ${op}`).toEqual(want);
      }
    } finally {
      plain.destroy();
      reference.destroy();
    }
  });

  it('refuses subgroup reductions and f16 loads by name, with a typed error', async () => {
    await expect(requestDevice({ allowSubgroups: false, tuning: { reductions: 'subgroup' } })).rejects.toMatchObject({ name: 'FeatureUnavailableError', feature: 'subgroups' });
    await expect(requestDevice({ allowF16: false, tuning: { halfLoads: 'native' } })).rejects.toMatchObject({ name: 'FeatureUnavailableError', feature: 'shader-f16' });
  });
});
