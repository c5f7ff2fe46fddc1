import { describe, expect, it } from 'vitest';
import { memorySource } from '../../src/io/sources.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { paramSpecs } from '../../src/model/layout.js';
import { tinyModelFiles, type TinyModelOptions } from '../../src/model/tiny.js';
import { compare, freshSeed, IN_BROWSER, ON_LAVAPIPE, randn, rng, testGpu } from '../helpers.js';
import { Lora, loraBase, type LoraOptions } from '../../src/methods/lora/index.js';
import { modelLossAndGrads, type InputRounding } from '../reference/model.js';
import type { LinearHooks } from '../../src/methods/method.js';
import type { CommandRecorder } from '../../src/gpu/recorder.js';
import type { TensorView } from '../../src/gpu/buffers.js';
import type { QuantizeOption } from '../../src/model/quantized-weights.js';
import { decodeHalves, encodeHalves, LINEAR_WEIGHT, type DenseWeight } from '../../src/model/linear-weights.js';

const MODELS: [string, TinyModelOptions][] = [
  ['llama (GQA)', { architecture: 'llama', hiddenSize: 32, intermediateSize: 40, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositions: 32 }],
  ['qwen2 (qkv bias, tied head)', { architecture: 'qwen2', hiddenSize: 24, intermediateSize: 36, numLayers: 2, numHeads: 2, numKvHeads: 1, tieWordEmbeddings: true, maxPositions: 32 }],
  // Llama 3.2's shape: tied embeddings and Llama 3.1's RoPE scaling, a pre-training context of 8 putting frequencies in all three bands.
  ['llama (llama3 RoPE scaling, tied)', { architecture: 'llama', hiddenSize: 32, intermediateSize: 40, numLayers: 2, numHeads: 2, numKvHeads: 1, tieWordEmbeddings: true, maxPositions: 32, ropeTheta: 500000, ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8 } }],
  ['qwen3 (per-head q/k norm, head_dim 12 not hidden / heads)', { architecture: 'qwen3', hiddenSize: 32, intermediateSize: 40, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 12, maxPositions: 32 }],
  ['gpt2', { architecture: 'gpt2', hiddenSize: 32, numLayers: 2, numHeads: 4, maxPositions: 32 }],
  ['mistral (sliding window 4)', { architecture: 'mistral', hiddenSize: 32, intermediateSize: 40, numLayers: 2, numHeads: 4, numKvHeads: 1, slidingWindow: 4, maxPositions: 32 }],
  ['qwen2 (window 3 on the second layer only)', { architecture: 'qwen2', hiddenSize: 24, intermediateSize: 36, numLayers: 2, numHeads: 2, numKvHeads: 1, slidingWindow: 3, maxWindowLayers: 1, maxPositions: 32 }],
  // Soft caps small enough to bend these scores and logits; query_pre_attn_scalar apart from the head size.
  ['gemma2 (soft caps, window 4 on layer 0, GeGLU, (1 + w) norms before and after each sublayer)', { architecture: 'gemma2', hiddenSize: 32, intermediateSize: 40, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 8, queryPreAttnScalar: 13, attnSoftcap: 1.5, finalSoftcap: 2, slidingWindow: 4, maxPositions: 32 }],
  ['phi3 (q, k, v and gate, up fused in the checkpoint, GQA, window 5)', { architecture: 'phi3', hiddenSize: 32, intermediateSize: 40, numLayers: 2, numHeads: 4, numKvHeads: 2, slidingWindow: 5, maxPositions: 32 }],
  // Phi-4-mini's shape: 3/4 of each head rotating, LongRoPE; a context of 8 puts these 11-token rows past it (the long factors).
  ['phi3 (partial rotation, LongRoPE past its context)', { architecture: 'phi3', hiddenSize: 32, intermediateSize: 40, numLayers: 2, numHeads: 2, numKvHeads: 1, partialRotaryFactor: 0.75, maxPositions: 32, originalMaxPositions: 8, ropeScaling: { rope_type: 'longrope', short_factor: [1, 1.3, 2.2, 3.5, 5, 9], long_factor: [1.1, 2, 4.5, 8, 16, 30] } }],
  ['gemma3 (q/k norms, local RoPE base on the window-4 layer, final soft cap)', { architecture: 'gemma3', hiddenSize: 32, intermediateSize: 40, numLayers: 2, numHeads: 2, numKvHeads: 1, headDim: 12, queryPreAttnScalar: 20, slidingWindow: 4, slidingWindowPattern: 2, ropeTheta: 1e6, ropeLocalTheta: 100, finalSoftcap: 3, maxPositions: 32 }],
];

/** The loss to 1e-4 and every (trained) parameter's gradient to 1e-3 of the float64 reference's (relative). */
async function expectReference(model: CausalLM, loss: number, ref: { loss: number; grads: Map<string, Float64Array> }, seed: number, trained = (_name: string) => true): Promise<void> {
  expect(Math.abs(loss - ref.loss) / ref.loss, `seed ${seed} loss ${loss} vs ${ref.loss}`).toBeLessThan(1e-4);
  let globalScale = 0;
  for (const g of ref.grads.values()) for (const v of g) globalScale = Math.max(globalScale, Math.abs(v));
  for (const s of paramSpecs(model.config).filter((p) => trained(p.name))) {
    const want = ref.grads.get(s.name)!;
    const err = compare(await model.gpu.readF32(model.gradView(s.name)!), want);
    if (want.every((v) => Math.abs(v) < 1e-12 * globalScale)) {
      // Analytically zero (GPT-2's key bias: softmax ignores a shift shared by all of a query's scores).
      expect(err.maxAbs / globalScale, `seed ${seed} ${s.name} should be ~0`).toBeLessThan(1e-5);
      continue;
    }
    expect(err.rel, `seed ${seed} grad of ${s.name} (max abs ${err.maxAbs})`).toBeLessThan(1e-3);
  }
}

describe.each(MODELS)('whole-model loss and gradients: %s', (_name, options) => {
  it.each([false, true])('match the float64 reference (packed with a loss mask: %s)', async (packed) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    // Larger weights than a fresh init, so attention and the MLP are far from linear.
    const ckpt = await openCheckpoint(memorySource(tinyModelFiles({ ...options, seed, initStd: 0.2 })));
    const model = await CausalLM.fromCheckpoint(gpu, ckpt, { trainable: () => true });
    try {
      const [B, S] = [2, 11];
      const ids = Array.from({ length: B * S }, () => Math.floor(rand() * 256));
      const batch = model.prepare({
        ids, B, S,
        segments: packed ? Array.from({ length: B * S }, (_, t) => (t % S < 4 ? 0 : 1) + 2 * Math.floor(t / S)) : undefined,
        lossMask: packed ? Array.from({ length: B * S }, (_, t) => (t % 3 === 0 ? 0 : 1)) : undefined,
      });
      const loss = await model.loss(batch, true);
      const params = new Map<string, Float64Array>();
      for (const s of paramSpecs(ckpt.config)) params.set(s.name, Float64Array.from(await gpu.readF32(model.params.view(s.name))));
      await expectReference(model, loss, modelLossAndGrads(ckpt.config, params, batch), seed);
    } finally {
      model.destroy();
    }
  });
});

// The backward pass goes no lower than the lowest layer that trains: the top layer alone (with its first
// norm, whose gradient needs that layer's q, k and v input gradient, or without it) gets the reference's
// gradients, and the layer below runs no backward kernel at all.
describe.each(MODELS.filter(([name]) => /^(llama \(GQA\)|gpt2)$/.test(name)))('the top layer alone trains: %s', (_name, options) => {
  it.each([true, false])('its gradients match the float64 reference, and layer 0 records no backward pass (its first norm trains: %s)', async (norm1) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const ckpt = await openCheckpoint(memorySource(tinyModelFiles({ ...options, seed, initStd: 0.2 })));
    const top = `layers.${ckpt.config.numLayers - 1}.`;
    const trained = (name: string) => name.startsWith(top) && (norm1 || !name.startsWith(`${top}norm1.`));
    const model = await CausalLM.fromCheckpoint(gpu, ckpt, { trainable: trained });
    try {
      const batch = model.prepare({ ids: Array.from({ length: 22 }, () => Math.floor(rand() * 256)), B: 2, S: 11 });
      const before = gpu.workCounts();
      const loss = await model.loss(batch, true);
      const attentionBackward = [...gpu.workSince(before).byKernel].filter(([k]) => /^attention(_blocked)?\.attention_backward/.test(k));
      // One layer's attention backward: one dispatch of a kernel that takes it whole, the blocked kernels'
      // two passes that keep the scores between them, or the three passes.
      const whole = ['attention.attention_backward_tiled', 'attention_blocked.attention_backward_blocked'];
      const has = (kernel: string) => attentionBackward.some(([k]) => k === kernel);
      const perLayer = attentionBackward.some(([k]) => whole.includes(k)) ? 1 : has('attention_blocked.attention_backward_dq_keeping') ? 2 : 3;
      expect(attentionBackward.reduce((n, [, count]) => n + count, 0)).toBe(perLayer);
      const params = new Map<string, Float64Array>();
      for (const s of paramSpecs(ckpt.config)) params.set(s.name, Float64Array.from(await gpu.readF32(model.params.view(s.name))));
      for (const s of paramSpecs(ckpt.config)) expect(!!model.gradView(s.name), `${s.name} trains`).toBe(trained(s.name));
      await expectReference(model, loss, modelLossAndGrads(ckpt.config, params, batch), seed, trained);
    } finally {
      model.destroy();
    }
  });
});

const hasF16 = (await testGpu()).features.shaderF16;

/**
 * Mixed precision's f16 linear inputs as the GPU stored them, copied out by a hook on each linear layer
 * as its forward product reads them (h is one buffer all layers share), wrapping the method's own hooks.
 * The reference takes these values as its roundings after checking each is a rounding of its own value:
 * where an f32 result lies within its rounding error of an f16 tie, the GPU and a float64 reference may
 * round to different neighbours, and the comparison would measure that tie, not the gradients.
 */
function captureLinearInputs(model: CausalLM, inner: LinearHooks | null): { hooks: LinearHooks; rounding: () => Promise<InputRounding> } {
  const gpu = model.gpu;
  const sites: Record<string, string> = { q: 'ln1', gate: 'ln2', fc: 'ln2', down: 'h', proj: 'h' };
  const copies = new Map<string, { buffer: GPUBuffer; n: number }>();
  const capture = (rec: CommandRecorder, name: string, x: TensorView, inDim: number, T: number) => {
    const [, layer, module] = /^(layers\.\d+)\.(\w+)$/.exec(name)!;
    const site = sites[module];
    if (!site || x.format !== 'f16') return;
    if (!copies.has(`${layer}.${site}`)) copies.set(`${layer}.${site}`, { buffer: gpu.createBuffer(x.size, undefined, `captured ${name} input`), n: T * inDim });
    rec.copy(x, copies.get(`${layer}.${site}`)!.buffer, x.size);
  };
  const hooks: LinearHooks = {
    has: (name) => inner?.has(name) ?? true,
    get fused() {
      return inner?.fused ?? false;
    },
    outputTerm: (rec, acts, name, x, outDim, inDim, pass) => {
      capture(rec, name, x, inDim, acts.T);
      return inner?.outputTerm?.(rec, acts, name, x, outDim, inDim, pass);
    },
    ...(inner?.inputGradTerm ? { inputGradTerm: inner.inputGradTerm.bind(inner) } : {}),
    ...(inner?.outputScale ? { outputScale: inner.outputScale.bind(inner) } : {}),
    ...(inner?.weightGradient ? { weightGradient: inner.weightGradient.bind(inner) } : {}),
  };
  const rounding = async (): Promise<InputRounding> => {
    const stored = new Map<string, Float32Array>();
    for (const [site, { buffer, n }] of copies) stored.set(site, decodeHalves(await gpu.read(buffer), n, 'f16'));
    for (const { buffer } of copies.values()) gpu.destroyBuffer(buffer);
    return (v, site) => {
      const got = stored.get(site);
      if (!got) throw new Error(`no f16 input was captured at ${site}`);
      let scale = 0;
      for (const x of v) scale = Math.max(scale, Math.abs(x));
      // Each stored value is the f32 result rounded once: within half an f16 unit of the exact value, plus the f32 tolerance.
      for (let i = 0; i < v.length; i++) {
        if (!(Math.abs(got[i] - v[i]) <= 2 ** -11 * Math.abs(v[i]) + 1e-4 * scale)) throw new Error(`${site}[${i}] is stored as ${got[i]}, not a rounding of ${v[i]}`);
      }
      return Float64Array.from(got);
    };
  };
  return { hooks, rounding };
}

/**
 * Mixed precision rounds exactly the operands of the linear products to f16: the weights (f16 working
 * copies of the f32 masters) and the inputs that norms and the MLP's activation write. Everything else is
 * f32 arithmetic, so its loss and gradients are the float64 model's with the same roundings (each
 * passed straight through by the backward pass, as PyTorch's autocast does), to the whole-model f32
 * tolerance; the gradient is applied to the masters.
 */
describe.each(MODELS)('mixed precision: whole-model loss and gradients: %s', (_name, options) => {
  it.skipIf(!hasF16)('are the float64 reference with the f16 roundings of the linear products\' operands', async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const ckpt = await openCheckpoint(memorySource(tinyModelFiles({ ...options, seed, initStd: 0.2 })));
    const model = await CausalLM.fromCheckpoint(gpu, ckpt, { trainable: () => true, precision: 'mixed' });
    try {
      const [B, S] = [2, 11];
      const batch = model.prepare({ ids: Array.from({ length: B * S }, () => Math.floor(rand() * 256)), B, S });
      const captured = captureLinearInputs(model, null);
      model.transformer.hooks = captured.hooks;
      const loss = await model.loss(batch, true);
      model.transformer.hooks = null;
      const params = new Map<string, Float64Array>();
      let rounded = 0;
      for (const s of paramSpecs(ckpt.config)) {
        const master = await gpu.readF32(model.params.view(s.name));
        const w = model.linearWeight(s.name);
        if (!LINEAR_WEIGHT.test(s.name)) {
          params.set(s.name, Float64Array.from(master));
          continue;
        }
        // What the products read: the working copy, rounded from the master as the host rounds it.
        expect('view' in w && w.format, s.name).toBe('f16');
        const copy = decodeHalves(await gpu.read((w as DenseWeight).view), master.length, 'f16');
        expect(copy, `seed ${seed}: ${s.name}'s working copy`).toEqual(decodeHalves(encodeHalves(master, 'f16').buffer as ArrayBuffer, master.length, 'f16'));
        rounded += copy.filter((v, i) => v !== master[i]).length;
        params.set(s.name, Float64Array.from(copy));
      }
      expect(rounded, 'the f16 copies differ from the masters').toBeGreaterThan(0);
      expect(model.halfActivations).toBe(true);
      await expectReference(model, loss, modelLossAndGrads(ckpt.config, params, batch, undefined, await captured.rounding()), seed);
    } finally {
      model.destroy();
    }
  });
});

/**
 * How the frozen base is stored: as the checkpoint (f32), a BF16 checkpoint kept bf16, f32 stored f16 on
 * request, or 4-bit (QLoRA).
 */
interface BaseStorage {
  dtype?: 'BF16';
  baseDtype?: 'f16';
  quantize?: QuantizeOption;
  /** Mixed precision: the base f16 (unless 4-bit) and the linear layers' inputs f16. */
  precision?: 'mixed';
}



async function loraGradients(options: TinyModelOptions, dropout: number, fused: boolean, base: BaseStorage = {}, patterns: Pick<LoraOptions, 'rankPattern' | 'alphaPattern' | 'dora'> = {}): Promise<void> {
  const gpu = await testGpu();
  const seed = freshSeed();
  const rand = rng(seed);
  const ckpt = await openCheckpoint(memorySource(tinyModelFiles({ ...options, seed, initStd: 0.2, dtype: base.dtype })));
  const model = await CausalLM.fromCheckpoint(gpu, ckpt, { baseDtype: base.baseDtype, quantize: base.quantize, precision: base.precision });
  if (base.dtype || base.baseDtype || base.precision) expect(model.packed).not.toBeNull(); // the frozen weights really are 16-bit
  if (base.precision) expect(model.halfActivations).toBe(true);
  if (base.quantize) expect(model.linearWeight('layers.0.q.weight').format).toBe(typeof base.quantize === 'string' ? base.quantize : base.quantize.format);
  const lora = new Lora(gpu, ckpt.config, { rank: 3, alpha: 5, dropout, fused, ...patterns, targetModules: ['q', 'k', 'v', 'o', 'gate', 'up', 'down', 'fc', 'proj'].filter((m) => paramSpecs(ckpt.config).some((s) => s.name.endsWith(`.${m}.weight`))), seed }, loraBase(model));
  const captured = base.precision ? captureLinearInputs(model, lora) : null;
  model.transformer.hooks = captured?.hooks ?? lora;
  if (patterns.rankPattern) expect(new Set([...lora.modules.values()].map((d) => d.rank)).size).toBeGreaterThan(1); // the patterns did apply
  const pass = { training: true, pass: 1 + Math.floor(rand() * 100) };
  try {
    // B starts at zero (which would zero A's gradient): give it random values to test both. Biases start
    // at zero too: random ones make the bias path count.
    for (const name of lora.names) if (name.endsWith('lora_B')) gpu.write(lora.params.view(name), randn(lora.params.view(name).size / 4, rand, 0.3));
    // DoRA's magnitude starts at the base's norms: move it off them, so m / n is not 1.
    for (const name of lora.names.filter((n) => n.endsWith('lora_magnitude'))) {
      const m = await gpu.readF32(lora.params.view(name));
      expect(m.every((v) => v > 0), `${name} starts at the base's row norms`).toBe(true);
      gpu.write(lora.params.view(name), m.map((v) => v * (1 + 0.5 * rand())));
    }
    for (const name of model.hfNames.filter((n) => n.endsWith('.bias'))) model.writeHf(name, randn((await model.readHf(name)).length, rand, 0.3));
    const batch = model.prepare({ ids: Array.from({ length: 18 }, () => Math.floor(rand() * 256)), B: 2, S: 9 });
    const rec = gpu.recorder();
    lora.zeroGrads(rec);
    const acts = model.record(rec, batch, 1 / batch.targetCount, pass);
    await rec.submit();
    const loss = (await gpu.readF32(acts.losses)).reduce((a, b) => a + b, 0) / batch.targetCount;
    acts.unpin();
    // The reference reads the weights as stored (rounded to 16 bits, or dequantized from the packed 4-bit
    // arrays, whose decoding the kernel tests check bit for bit).
    const params = new Map<string, Float64Array>();
    for (const s of paramSpecs(ckpt.config)) params.set(s.name, Float64Array.from(await model.readParam(s.name)));
    const modules = new Map<string, { A: Float64Array; B: Float64Array; rank: number; scale: number; magnitude?: Float64Array }>();
    for (const [name, d] of lora.modules) {
      modules.set(name, {
        A: Float64Array.from(await gpu.readF32(lora.params.view(`${name}.lora_A`))),
        B: Float64Array.from(await gpu.readF32(lora.params.view(`${name}.lora_B`))),
        rank: d.rank,
        scale: d.scale,
        ...(patterns.dora ? { magnitude: Float64Array.from(await gpu.readF32(lora.params.view(`${name}.lora_magnitude`))) } : {}),
      });
    }
    const ref = modelLossAndGrads(ckpt.config, params, batch, { scale: lora.scale, rank: 3, modules, dropout: { p: dropout, seed: (m) => lora.dropoutSeed(m, pass) } }, await captured?.rounding());
    expect(Math.abs(loss - ref.loss) / ref.loss, `seed ${seed}`).toBeLessThan(1e-4);
    for (const name of lora.names) {
      const err = compare(await gpu.readF32(lora.grads.view(name)), ref.grads.get(name)!);
      expect(err.rel, `seed ${seed} grad of ${name} (max abs ${err.maxAbs})`).toBeLessThan(1e-3);
    }
    expect(model.grads).toBeNull(); // the base model keeps no gradients at all
  } finally {
    lora.destroy();
    model.destroy();
  }
}

describe.each(IN_BROWSER ? [[0.3, true]] : [
  [0, true],
  [0.3, true],
  [0.3, false],
])('LoRA gradients, dropout %f, fused into the base matmul %s', (dropout, fused) => {
  it.each(MODELS)('match the float64 reference on %s (base frozen, all projections adapted)', (_name, options) => loraGradients(options, dropout, fused));
});

/**
 * The families the LoRA variants run on in the second adapter's project (lavapipe, whose pipelines take
 * seconds to compile): between them every path its grouped products take (GQA, per-head q/k norms,
 * GPT-2's GELU in the products, Gemma's norms after the sublayers, fused checkpoint projections).
 * SwiftShader runs them on every family.
 */
const VARIANT_MODELS = ON_LAVAPIPE ? MODELS.filter(([name]) => /^(llama \(GQA\)|qwen3|gpt2|gemma2|phi3 \(q, k)/.test(name)) : MODELS;

// The base storages, patterns and DoRA: Chromium runs LoRA over the f32 base above, Node all of them.
describe.skipIf(IN_BROWSER)('LoRA variants', () => {
  describe.each<[string, BaseStorage]>([
    ['a BF16 checkpoint kept bf16', { dtype: 'BF16' }],
    ['an f32 checkpoint stored f16', { baseDtype: 'f16' }],
  ])('LoRA gradients on a 16-bit base: %s', (_base, base) => {
    it.each(VARIANT_MODELS)('match the float64 reference on %s', (_name, options) => loraGradients(options, 0.3, true, base));
  });

  describe.skipIf(!hasF16)('LoRA gradients under mixed precision (an f16 base, f16 inputs to the products, dropout on them)', () => {
    it.each(VARIANT_MODELS)('match the float64 reference with the same roundings on %s', (_name, options) => loraGradients(options, 0.3, true, { precision: 'mixed' }));
  });

  describe('LoRA gradients with per-module ranks and alphas (rankPattern, alphaPattern)', () => {
    it.each(VARIANT_MODELS.slice(0, 3))('match the float64 reference on %s', (_name, options) =>
      loraGradients(options, 0.3, true, {}, { rankPattern: { 'layers\\.1\\.\\w+': 5, q_proj: 2 }, alphaPattern: { 'v|c_fc': 1.5 } }));
  });

  describe.each<[string, BaseStorage]>([
    ['NF4', { quantize: 'nf4' }],
    ['int4, groups of 32', { quantize: { format: 'int4', groupSize: 32 } }],
    ['NF4 with double-quantized absmax', { quantize: { format: 'nf4', doubleQuant: true } }],
  ])('QLoRA: LoRA gradients on a 4-bit base, %s', (_base, base) => {
    it.each(VARIANT_MODELS)('match the float64 reference on %s', (_name, options) => loraGradients(options, 0.3, true, base));
  });

  describe.each<[string, boolean, BaseStorage]>([
    ['f32 base, fused', true, {}],
    ['f32 base, unfused', false, {}],
    ['a BF16 checkpoint kept bf16', true, { dtype: 'BF16' }],
    ['NF4 (QDoRA)', true, { quantize: 'nf4' }],
  ])('DoRA gradients (the norm held constant, as PEFT), %s', (_base, fused, base) => {
    it.each(VARIANT_MODELS)('match the float64 reference on %s', (_name, options) => loraGradients(options, 0, fused, base, { dora: true }));
  });
});
