/**
 * The per-column output-scale hook (DoRA's seam), checked through an identity: scaling output column c
 * of a linear layer by s[c] is the same model as scaling row c of its weight (y = s ⊙ (x W^T) + b =
 * x (diag(s) W)^T + b). So a model with the hook must give the loss of the model with scaled weights,
 * dL/dW = s ⊙ dL/dW', ds[c] = Σ_i W[c, i] dL/dW'[c, i], and every other gradient unchanged, where W' =
 * diag(s) W and the primed gradients come from the engine's dense backward (itself checked against
 * float64 references). GPT-2 carries biases, which stay outside the scale.
 */
import { describe, expect, it } from 'vitest';
import type { Gpu } from '../../src/gpu/gpu.js';
import type { CommandRecorder } from '../../src/gpu/recorder.js';
import { memorySource } from '../../src/io/sources.js';
import type { Activations } from '../../src/model/activations.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tinyModelFiles, type TinyModelOptions } from '../../src/model/tiny.js';
import type { ColumnScale, LinearHooks, PassContext } from '../../src/methods/method.js';
import { compare, freshSeed, randn, rng, testGpu } from '../helpers.js';

/** A trainable scale on the output of every targeted linear layer: the smallest method using the hook. */
class ColumnScaleHooks implements LinearHooks {
  readonly fused = true;
  readonly outDims = new Map<string, number>();
  private readonly buffers = new Map<string, GPUBuffer>();

  constructor(
    private readonly gpu: Gpu,
    private readonly targets: Set<string>,
    readonly scales: (name: string, outDim: number) => Float32Array,
  ) {}

  has(name: string): boolean {
    return this.targets.has(name.split('.').at(-1)!);
  }

  private buffer(key: string, make: () => GPUBuffer): GPUBuffer {
    let b = this.buffers.get(key);
    if (!b) this.buffers.set(key, (b = make()));
    return b;
  }

  outputScale(_rec: CommandRecorder, acts: Activations, name: string, outDim: number, _pass: PassContext, phase: 'forward' | 'backward'): ColumnScale {
    this.outDims.set(name, outDim);
    const scale = this.buffer(`${name} s`, () => this.gpu.upload(this.scales(name, outDim)));
    const saved = this.buffer(`${name} z ${acts.T}`, () => this.gpu.createBuffer(acts.T * outDim * 4));
    if (phase === 'forward') return { scale, saved };
    const dz = this.buffer(`dz ${acts.T}x${outDim}`, () => this.gpu.createBuffer(acts.T * outDim * 4));
    const scaleGrad = this.buffer(`${name} ds`, () => this.gpu.upload(new Float32Array(outDim)));
    return { scale, saved, dz, scaleGrad };
  }

  scaleGrad(name: string): Promise<Float32Array> {
    return this.gpu.readF32(this.buffers.get(`${name} ds`)!);
  }

  destroy(): void {
    for (const b of this.buffers.values()) this.gpu.destroyBuffer(b);
  }
}

const MODELS: [string, TinyModelOptions, string[]][] = [
  ['llama', { architecture: 'llama', hiddenSize: 32, intermediateSize: 48, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositions: 32 }, ['q', 'v', 'o', 'gate', 'down']],
  ['gpt2', { architecture: 'gpt2', hiddenSize: 32, numLayers: 2, numHeads: 4, maxPositions: 32 }, ['q', 'k', 'o', 'fc', 'proj']],
];

async function trainingPass(model: CausalLM, seed: number): Promise<{ losses: Float32Array; evalLosses: Float32Array }> {
  const rand = rng(seed);
  const [B, S] = [2, 13];
  const batch = model.prepare({ ids: Array.from({ length: B * S }, () => Math.floor(rand() * 256)), B, S });
  const rec = model.gpu.recorder();
  model.zeroGrads(rec);
  const acts = model.record(rec, batch, 1 / batch.targetCount, { training: true, pass: 1 });
  await rec.submit();
  const losses = await model.gpu.readF32(acts.losses);
  acts.unpin();
  const evalRec = model.gpu.recorder();
  const evalActs = model.record(evalRec, batch);
  await evalRec.submit();
  const evalLosses = await model.gpu.readF32(evalActs.losses);
  evalActs.unpin();
  return { losses, evalLosses };
}

const grad = (model: CausalLM, name: string): Promise<Float32Array> => model.gpu.readF32(model.grads!.view(name));

describe.each(MODELS)('per-column output scale on %s', (_name, options, targets) => {
  it('equals scaling the weight rows: loss, weight and scale gradients, every other gradient', async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const ckpt = await openCheckpoint(memorySource(tinyModelFiles({ ...options, seed, initStd: 0.2 })));
    const scaleRand = rng(seed + 1);
    const scaleByName = new Map<string, Float32Array>();
    const scales = (name: string, n: number) => {
      if (!scaleByName.has(name)) scaleByName.set(name, Float32Array.from(randn(n, scaleRand), (v) => 1 + 0.5 * v));
      return scaleByName.get(name)!;
    };
    const hooks = new ColumnScaleHooks(gpu, new Set(targets), scales);
    const scaled = await CausalLM.fromCheckpoint(gpu, ckpt, { trainable: () => true });
    scaled.transformer.hooks = hooks;
    const a = await trainingPass(scaled, seed);

    // The same model with each targeted weight's rows multiplied by the scale, and no hook.
    const plain = await CausalLM.fromCheckpoint(gpu, ckpt, { trainable: () => true });
    const weights = new Map<string, Float32Array>();
    for (const [name, outDim] of hooks.outDims) {
      const w = await plain.readParam(`${name}.weight`);
      weights.set(name, w);
      const s = scales(name, outDim);
      const inDim = w.length / outDim;
      gpu.write(plain.f32Param(`${name}.weight`), w.map((v, i) => v * s[Math.floor(i / inDim)]));
    }
    const b = await trainingPass(plain, seed);

    expect(hooks.outDims.size, 'every targeted layer was scaled').toBe(options.numLayers! * targets.length);
    expect(compare(a.losses, b.losses).rel, `seed ${seed}`).toBeLessThan(1e-5);
    expect(compare(a.evalLosses, b.evalLosses).rel, `seed ${seed}`).toBeLessThan(1e-5);
    for (const [name, outDim] of hooks.outDims) {
      const s = scales(name, outDim);
      const w = weights.get(name)!;
      const dWp = await grad(plain, `${name}.weight`);
      const inDim = w.length / outDim;
      const wantDs = Array.from({ length: outDim }, (_, c) => {
        let sum = 0;
        for (let i = 0; i < inDim; i++) sum += w[c * inDim + i] * dWp[c * inDim + i];
        return sum;
      });
      expect(compare(await hooks.scaleGrad(name), wantDs).rel, `${name} ds, seed ${seed}`).toBeLessThan(1e-3);
      const wantDw = dWp.map((v, i) => v * s[Math.floor(i / inDim)]);
      expect(compare(await grad(scaled, `${name}.weight`), wantDw).rel, `${name} dW, seed ${seed}`).toBeLessThan(1e-3);
    }
    // Errors relative to the model's gradient scale at least: a key bias's gradient is zero in exact
    // arithmetic (softmax ignores a shift shared by every key), so its own scale is rounding noise.
    const others = scaled.trainableNames.filter((name) => !hooks.outDims.has(name.replace(/\.weight$/, '')));
    const want = new Map(await Promise.all(others.map(async (name) => [name, await grad(plain, name)] as const)));
    const gradScale = Math.max(...[...want.values()].map((g) => g.reduce((m, v) => Math.max(m, Math.abs(v)), 0)));
    for (const name of others) {
      expect(compare(await grad(scaled, name), want.get(name)!, 1e-3 * gradScale).rel, `${name}, seed ${seed}`).toBeLessThan(1e-3);
    }
    hooks.destroy();
    scaled.destroy();
    plain.destroy();
  });
});
