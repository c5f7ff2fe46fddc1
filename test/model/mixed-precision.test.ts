import { describe, expect, it } from 'vitest';
import { FeatureUnavailableError, ShapeError } from '../../src/errors.js';
import { memorySource } from '../../src/io/sources.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { decodeHalves, encodeHalves, LINEAR_WEIGHT, type DenseWeight } from '../../src/model/linear-weights.js';
import { tinyModelFiles, type TinyModelOptions } from '../../src/model/tiny.js';
import { FineTuner, type FineTuneOptions } from '../../src/train/finetuner.js';
import { loadDataset } from '../../src/data/dataset.js';
import { skillExamples } from '../../src/data/skills.js';
import { loadTokenizer } from '../../src/data/tokenizer.js';
import { memoryCheckpointStore } from '../../src/train/checkpoints.js';
import { loadFineTunedRun, Trainer, type TrainerOptions } from '../../src/train/trainer.js';
import { freshSeed, randn, rng, testGpu } from '../helpers.js';

const hasF16 = (await testGpu()).features.shaderF16;
const LLAMA: TinyModelOptions = { architecture: 'llama', hiddenSize: 32, intermediateSize: 40, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositions: 32 };

/** The f16 working copy of a linear weight, and its f32 master rounded to f16 on the host. */
async function copyAndMaster(model: CausalLM, name: string): Promise<{ copy: Float32Array; rounded: Float32Array; master: Float32Array }> {
  const master = await model.gpu.readF32(model.params.view(name));
  const w = model.linearWeight(name) as DenseWeight;
  expect(w.format, name).toBe('f16');
  const copy = decodeHalves(await model.gpu.read(w.view), master.length, 'f16');
  return { copy, rounded: decodeHalves(encodeHalves(master, 'f16').buffer as ArrayBuffer, master.length, 'f16'), master };
}

describe.skipIf(!hasF16)('mixed precision', () => {
  it('keeps the f16 working copies equal to the rounded masters across optimizer steps', async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const ckpt = await openCheckpoint(memorySource(tinyModelFiles({ ...LLAMA, seed })));
    const ft = await FineTuner.create(gpu, ckpt, { method: 'full', precision: 'mixed', optimizer: { lr: 1e-2 } });
    try {
      const name = 'layers.1.down.weight';
      const before = (await copyAndMaster(ft.model, name)).master;
      const losses: number[] = [];
      for (let s = 0; s < 3; s++) losses.push((await ft.step({ ids: Array.from({ length: 2 * 9 }, () => Math.floor(rand() * 256)), B: 2, S: 9 })).loss);
      expect(losses.every(Number.isFinite), `seed ${seed}`).toBe(true);
      await ft.evaluate({ ids: [1, 2, 3, 4], B: 1, S: 4 }); // a forward pass after the last update refreshes the copies
      for (const n of ft.model.trainableNames.filter((t) => LINEAR_WEIGHT.test(t))) {
        const { copy, rounded, master } = await copyAndMaster(ft.model, n);
        expect(copy, `seed ${seed}: ${n}`).toEqual(rounded);
        if (n === name) expect(master, 'the masters trained').not.toEqual(before);
      }
    } finally {
      ft.destroy();
    }
  });

  it('generation reads the weights as last written: logits equal a frozen f16 model of the same weights', async () => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const ckpt = await openCheckpoint(memorySource(tinyModelFiles({ ...LLAMA, seed })));
    // Trainable linear weights read through working copies; frozen ones stored f16: the same operands.
    const trained = await CausalLM.fromCheckpoint(gpu, ckpt, { trainable: (n) => LINEAR_WEIGHT.test(n), precision: 'mixed' });
    const frozen = await CausalLM.fromCheckpoint(gpu, ckpt, { precision: 'mixed' });
    try {
      const input = { ids: Array.from({ length: 7 }, () => Math.floor(rand() * 256)), B: 1, S: 7 };
      expect(await trained.logits(input)).toEqual(await frozen.logits(input));
      const hfName = 'model.layers.0.self_attn.q_proj.weight';
      const changed = randn((await trained.readHf(hfName)).length, rand, 0.3);
      for (const m of [trained, frozen]) m.writeHf(hfName, changed);
      expect(await trained.logits(input), `seed ${seed}`).toEqual(await frozen.logits(input));
    } finally {
      trained.destroy();
      frozen.destroy();
    }
  });

  it('resumes from a checkpoint with the losses of the uninterrupted run, bit for bit (the precision is part of the run)', async () => {
    const gpu = await testGpu();
    const files = tinyModelFiles({ ...LLAMA, seed: 4 });
    const rows = skillExamples(60, 5, 'shift').map((e) => JSON.stringify({ prompt: String.fromCharCode(...e.prompt), completion: String.fromCharCode(...e.answer.slice(0, -1)) }));
    const data = await loadDataset({ name: 'shift.jsonl', bytes: new TextEncoder().encode(rows.join('\n')) }, await loadTokenizer(memorySource(files)), { seqLength: 32 });
    const options: TrainerOptions = { method: 'full', precision: 'mixed', steps: 4, batchSize: 4, microBatch: 2, optimizer: { lr: 1e-3 } };
    const trainer = async (more: Partial<TrainerOptions>) => Trainer.create(gpu, await openCheckpoint(memorySource(files)), data, { ...options, ...more });
    const whole = await trainer({});
    const want = await whole.train();
    whole.destroy();
    const store = memoryCheckpointStore();
    const first = await trainer({ checkpoints: { store }, onEvent: (e) => e.type === 'step' && e.step === 1 && first.cancel() });
    const head = await first.train();
    first.destroy();
    // The run's own checkpoint says mixed: resuming without the option still trains mixed.
    const { ft } = await loadFineTunedRun(gpu, await openCheckpoint(memorySource(files)), store);
    expect(ft.model.precision).toBe('mixed');
    ft.destroy();
    const second = await trainer({ checkpoints: { store }, resume: true });
    const tail = await second.train();
    second.destroy();
    expect([...head.losses, ...tail.losses]).toEqual(want.losses);
  });

  // A norm weight of 1e5 puts ln1 past f16's 65504: infinities in the forward pass, a loss and gradients
  // that are not finite. f32 holds the same values with room to spare.
  it.each<[string, FineTuneOptions]>([
    ['full', { method: 'full' }],
    ['LoRA', { method: 'lora', lora: { rank: 4 } }],
    ['sparse', { method: 'sparse', sparse: { selection: 'random', density: 0.1 } }],
    ['GaLore (a projection refresh)', { method: 'galore', galore: { rank: 4, updateGap: 1 } }],
    ['LISA', { method: 'lisa', lisa: { layers: 1, interval: 2 } }],
  ])('skips a step that overflows f16 (%s): every trained tensor and optimizer state as it was, and counted', async (_, options) => {
    const gpu = await testGpu();
    const seed = freshSeed();
    const rand = rng(seed);
    const ckpt = await openCheckpoint(memorySource(tinyModelFiles({ ...LLAMA, seed })));
    const ft = await FineTuner.create(gpu, ckpt, { ...options, precision: 'mixed', optimizer: { lr: 1e-2 } } as FineTuneOptions);
    try {
      const batch = () => ({ ids: Array.from({ length: 2 * 9 }, () => Math.floor(rand() * 256)), B: 2, S: 9 });
      await ft.step(batch());
      const norm = 'model.layers.0.input_layernorm.weight';
      const healthy = await ft.readTensor(norm);
      ft.writeTensor(norm, healthy.map(() => 1e5));
      // The state's tensors: what follows the safetensors header (whose metadata counts the steps, skipped or not).
      const state = async () => {
        const bytes = new Uint8Array(await ft.saveState());
        return bytes.slice(8 + Number(new DataView(bytes.buffer).getBigUint64(0, true)));
      };
      const before = await state();
      const r = await ft.step(batch());
      expect(Number.isFinite(r.loss), `seed ${seed}: the loss overflowed`).toBe(false);
      expect(await state(), `seed ${seed}: nothing moved`).toEqual(before);
      expect(await ft.optimizer.skippedSteps!()).toBe(1);
      ft.writeTensor(norm, healthy);
      const after = await ft.step(batch());
      expect(Number.isFinite(after.loss)).toBe(true);
      expect(await state(), 'a healthy step trains again').not.toEqual(before);
    } finally {
      ft.destroy();
    }
  });

  it('is refused over a 4-bit base, whose products read f32', async () => {
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(memorySource(tinyModelFiles(LLAMA)));
    await expect(CausalLM.fromCheckpoint(gpu, ckpt, { precision: 'mixed', quantize: 'nf4' })).rejects.toThrow(ShapeError);
  });
});

describe.skipIf(hasF16)('mixed precision without shader-f16', () => {
  it('is refused with a typed error naming the feature, before any weight loads', async () => {
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(memorySource(tinyModelFiles(LLAMA)));
    const error = await CausalLM.fromCheckpoint(gpu, ckpt, { trainable: () => true, precision: 'mixed' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(FeatureUnavailableError);
    expect(error).toMatchObject({ feature: 'shader-f16', wantedBy: "precision 'mixed'" });
  });
});

describe('precision option', () => {
  it('rejects an unknown precision', async () => {
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(memorySource(tinyModelFiles(LLAMA)));
    await expect(CausalLM.fromCheckpoint(gpu, ckpt, { precision: 'f16' as never })).rejects.toThrow(/precision must be one of f32, mixed/);
  });
});
