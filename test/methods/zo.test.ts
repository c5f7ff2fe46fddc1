/**
 * Zeroth-order training, checked from outside: the projected gradient of a step equals (L+ - L-) / 2ε
 * from two separate evaluations of the loss at θ ± εz (z regenerated on the host), the update equals
 * θ - lr g z, and over many directions the estimate points along the backpropagated gradient. (The
 * method's shared tests, test/methods/shared.test.ts, check that nothing else moves and that state
 * resumes exactly.)
 */
import { describe, expect, it } from 'vitest';
import { successorRows, toBatchInput } from '../../src/data/tasks.js';
import { memorySource } from '../../src/io/sources.js';
import { zoDirectionKey, zoGaussian } from '../../src/kernels/zo.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tinyModelFiles } from '../../src/model/tiny.js';
import { FineTuner, type FineTuneOptions } from '../../src/train/finetuner.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { methodDefinition } from '../../src/methods/registry.js';
import type { ZoOptions } from '../../src/methods/zo/index.js';
import { compare, testGpu } from '../helpers.js';

const files = tinyModelFiles({ architecture: 'qwen3', seed: 11, hiddenSize: 32, intermediateSize: 40, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 8, initStd: 0.2, maxPositions: 64 });
const batch = toBatchInput(successorRows(3, 5, 21));

async function fineTuner(zo: ZoOptions, lr: number, extra: Partial<FineTuneOptions> = {}): Promise<FineTuner> {
  const options: FineTuneOptions = { method: 'zo', zo, optimizer: { lr, schedule: 'constant', warmupSteps: 0 }, ...extra };
  return FineTuner.create(await testGpu(), await openCheckpoint(memorySource(files)), options);
}

/** Every trainable tensor, in the method's order (the tensor index of the directions). */
async function readTrainable(ft: FineTuner): Promise<Float32Array[]> {
  const { names, param } = ft.method.trainable;
  return Promise.all(names.map((n) => ft.gpu.readF32(param(n))));
}

function writeTrainable(ft: FineTuner, values: ArrayLike<number>[]): void {
  const { names, param } = ft.method.trainable;
  names.forEach((n, t) => ft.gpu.write(param(n), Float32Array.from(values[t])));
  const rec = ft.gpu.recorder();
  ft.method.trainableWritten?.(rec);
  void rec.submit();
}

/** Direction j of optimizer step `step`, per tensor, as the host regenerates it. */
function direction(seed: number, step: number, j: number, sizes: number[]): Float64Array[] {
  const key = zoDirectionKey(seed, step, j);
  return sizes.map((n, t) => Float64Array.from({ length: n }, (_, e) => zoGaussian(key, t, e)));
}

describe.each<[string, ZoOptions, Partial<FineTuneOptions>]>([
  ['lora', { target: 'lora', lora: { rank: 2 }, epsilon: 1e-2, seed: 9 }, {}],
  ['lora over nf4', { target: 'lora', lora: { rank: 2 }, epsilon: 1e-2, seed: 9 }, { quantize: 'nf4' }],
  ['full', { target: 'full', epsilon: 1e-3, seed: 9 }, {}],
  ['sparse', { target: 'sparse', sparse: { selection: 'random', density: 0.2 }, epsilon: 1e-3, seed: 9, directions: 2 }, {}],
  ['nf4 block scales', { target: 'quantized', epsilon: 1e-3, seed: 9 }, { quantize: 'nf4' }],
])('zeroth-order on %s', (_, zo, extra) => {
  it('estimates g = (L+ - L-) / 2ε as two separate evaluations give it, and moves θ by -lr g z', async () => {
    const lr = 1e-3;
    const ft = await fineTuner(zo, lr, extra);
    const theta = await readTrainable(ft);
    const sizes = theta.map((t) => t.length);
    const eps = zo.epsilon!;
    const n = zo.directions ?? 1;
    // The estimate the host expects: each direction's two losses, evaluated separately at θ ± εz.
    const g: number[] = [];
    let lossSum = 0;
    for (let j = 0; j < n; j++) {
      const z = direction(zo.seed!, 0, j, sizes);
      const at = async (sign: number) => {
        writeTrainable(ft, theta.map((t, k) => t.map((v, e) => v + sign * eps * z[k][e])));
        return (await ft.evaluate(batch, { accuracy: false })).loss;
      };
      const [plus, minus] = [await at(1), await at(-1)];
      g.push((plus - minus) / (2 * eps));
      lossSum += plus + minus;
    }
    writeTrainable(ft, theta);
    const result = await ft.step(batch);
    expect(result.loss, 'the reported loss is the mean of the two sides').toBeCloseTo(lossSum / (2 * n), 5);
    const after = await readTrainable(ft);
    // θ' = θ - lr Σ_j g_j z_j / n, per element.
    const zs = Array.from({ length: n }, (_, j) => direction(zo.seed!, 0, j, sizes));
    const want = theta.map((t, k) => t.map((v, e) => -lr * zs.reduce((s, z, j) => s + (g[j] * z[k][e]) / n, 0)));
    const got = after.map((t, k) => t.map((v, e) => v - theta[k][e]));
    const err = compare(got.flatMap((t) => Array.from(t)), want.flatMap((t) => Array.from(t)));
    expect(g.every((v) => Math.abs(v) > 1e-3), `a direction with a visible slope: ${g}`).toBe(true);
    expect(err.rel, `g ${g}`).toBeLessThan(1e-3);
    ft.destroy();
  });
});

describe('zeroth-order on a 4-bit base\'s block scales (QZO)', () => {
  it('saves a 4-bit checkpoint holding the trained scales, which loads with the trained model\'s logits', async () => {
    const ft = await fineTuner({ target: 'quantized', epsilon: 1e-3 }, 1e-2, { quantize: 'nf4' });
    const before = await ft.model.logits(batch);
    for (let s = 0; s < 3; s++) await ft.step(batch);
    const trained = await ft.model.logits(batch);
    expect(compare(trained, before).maxAbs, 'the scales trained').toBeGreaterThan(1e-4);
    const files = await methodDefinition('zo').exportFiles!(ft.method, ft.model.config, {});
    const reloaded = await CausalLM.fromCheckpoint(ft.gpu, await openCheckpoint(memorySource(files!)));
    expect(reloaded.quantized?.format).toBe('nf4');
    expect(compare(await reloaded.logits(batch), trained).rel).toBeLessThan(1e-6);
    reloaded.destroy();
    ft.destroy();
  });

  it.each<[string, Partial<FineTuneOptions>, RegExp]>([
    ['an f32 base', {}, /load with quantize 'nf4'/],
    ['an int4 base', { quantize: 'int4' }, /this one is int4/],
    ['a double-quantized base', { quantize: { format: 'nf4', doubleQuant: true } }, /double-quantized/],
  ])('is refused by name on %s', async (_, extra, message) => {
    await expect(fineTuner({ target: 'quantized' }, 1e-3, extra)).rejects.toThrow(message);
  });
});

describe('zeroth-order estimate', () => {
  it('points along the backpropagated gradient over many directions (cosine about 1 / sqrt(1 + d / K))', async () => {
    const lora = { rank: 1, targetModules: ['q_proj', 'v_proj'] };
    // The true gradient, by backpropagation through the same adapter (B starts at zero, A as seeded).
    const gpu = await testGpu();
    const bp = await FineTuner.create(gpu, await openCheckpoint(memorySource(files)), { method: 'lora', lora, optimizer: { lr: 0 } });
    // B = 0 leaves A without a gradient: start from a B that is not zero, the same in both.
    const { names } = bp.method.trainable;
    const start = await Promise.all(names.map(async (n, t) => (n.endsWith('lora_B') ? Float32Array.from({ length: (await bp.gpu.readF32(bp.method.trainable.param(n))).length }, (_, e) => Math.sin(7 * t + e)) : bp.gpu.readF32(bp.method.trainable.param(n)))));
    writeTrainable(bp, start);
    await bp.step(batch);
    const grad = (await Promise.all(names.map((n) => bp.gradient(n)))).flatMap((t) => Array.from(t));
    bp.destroy();

    const K = 64;
    const lr = 1e-3;
    const ft = await fineTuner({ target: 'lora', lora, epsilon: 1e-3, directions: 64, seed: 3 }, lr);
    expect(ft.method.trainable.names).toEqual(names);
    const estimate = new Float64Array(grad.length);
    const rounds = 4;
    for (let r = 0; r < rounds; r++) {
      writeTrainable(ft, start);
      await ft.step(batch);
      const moved = (await readTrainable(ft)).flatMap((t) => Array.from(t));
      const from = start.flatMap((t) => Array.from(t));
      moved.forEach((v, i) => (estimate[i] += (from[i] - v) / lr / rounds));
    }
    ft.destroy();
    const dot = (a: ArrayLike<number>, b: ArrayLike<number>) => Array.from(a).reduce((s, v, i) => s + v * b[i], 0);
    const cosine = dot(estimate, grad) / Math.sqrt(dot(estimate, estimate) * dot(grad, grad));
    const d = grad.length;
    const expected = 1 / Math.sqrt(1 + d / (K * rounds));
    // A fixed seed set: the statistic is deterministic. Unrelated directions would give about 1 / sqrt(d).
    expect(cosine, `d ${d}, K ${K * rounds}, expected about ${expected.toFixed(2)}`).toBeGreaterThan(0.7 * expected);
    expect(1 / Math.sqrt(d)).toBeLessThan(0.1);
  });
});
