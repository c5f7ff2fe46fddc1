import { describe, expect, it } from 'vitest';
import { successorRows, toBatchInput } from '../../src/data/tasks.js';
import { memorySource } from '../../src/io/sources.js';
import { InvalidModelFileError, readHeader, readTensorF32, writeSafetensors, type TensorToWrite } from '../../src/io/safetensors.js';
import { bytesSource } from '../../src/io/bytes.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tinyModelFiles } from '../../src/model/tiny.js';
import { FineTuner, type FineTuneOptions } from '../../src/train/finetuner.js';
import { testGpu } from '../helpers.js';

const files = tinyModelFiles({ architecture: 'gpt2', seed: 9, hiddenSize: 32, numLayers: 1, numHeads: 2, maxPositions: 64 });

describe.each<[string, FineTuneOptions]>([
  ['lora', { method: 'lora', lora: { rank: 4, targetModules: ['q', 'v', 'fc'] }, optimizer: { lr: 1e-2 } }],
  // Dropout masks come from a step counter: resuming must restore it, or the next step's masks differ.
  ['lora with dropout', { method: 'lora', lora: { rank: 4, targetModules: ['q', 'v', 'fc'], dropout: 0.3 }, optimizer: { lr: 1e-2 } }],
  ['full', { method: 'full', optimizer: { lr: 1e-3 } }],
])('saving and resuming the trainable state (%s)', (_name, options) => {
  it('a resumed fine-tuner continues exactly where the saved one was', async () => {
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(memorySource(files));
    const a = await FineTuner.create(gpu, ckpt, options);
    for (let s = 0; s < 3; s++) await a.step(toBatchInput(successorRows(2, 4, s)));
    const state = await a.saveState();
    const b = await FineTuner.create(gpu, ckpt, options);
    await b.loadState(state);
    for (let s = 3; s < 5; s++) {
      const next = toBatchInput(successorRows(2, 4, s));
      const ra = await a.step(next);
      const rb = await b.step(next);
      expect(rb.loss).toBe(ra.loss);
      expect(rb.optimizerStep).toBe(ra.optimizerStep);
    }
    const after = toBatchInput(successorRows(2, 4, 5));
    expect((await b.evaluate(after)).loss).toBe((await a.evaluate(after)).loss); // same update applied
    a.destroy();
    b.destroy();
  });

  it('refuses state saved for another method, changing nothing', async () => {
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(memorySource(files));
    const other: FineTuneOptions = options.method === 'lora' ? { method: 'full' } : { method: 'lora', lora: { rank: 2 } };
    const a = await FineTuner.create(gpu, ckpt, other);
    const b = await FineTuner.create(gpu, ckpt, options);
    const batch = toBatchInput(successorRows(2, 4, 0));
    const before = (await b.evaluate(batch)).loss;
    await expect(b.loadState(await a.saveState())).rejects.toThrow(InvalidModelFileError);
    expect((await b.evaluate(batch)).loss).toBe(before);
    a.destroy();
    b.destroy();
  });
});

describe('state files from elsewhere', () => {
  it('refuses a safetensors file that is not a fine-tuner state, and reads the dropout counter of older files', async () => {
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(memorySource(files));
    const options: FineTuneOptions = { method: 'lora', lora: { rank: 4, dropout: 0.3 }, optimizer: { lr: 1e-2 } };
    const a = await FineTuner.create(gpu, ckpt, options);
    await expect(a.loadState(files['model.safetensors'] as Uint8Array)).rejects.toThrow(/not a webgpu-finetune state file/);
    for (let s = 0; s < 2; s++) await a.step(toBatchInput(successorRows(2, 4, s)));
    // An older file: the same tensors, the pass count under LoRA's former 'dropout_round'.
    const saved = bytesSource('state', await a.saveState());
    const header = await readHeader(saved);
    const tensors: Record<string, TensorToWrite> = {};
    for (const t of header.tensors) tensors[t.name] = { dtype: 'F32', shape: t.shape, data: await readTensorF32(saved, t) };
    const { passes, ...rest } = header.metadata;
    const older = writeSafetensors(tensors, { ...rest, dropout_round: passes });
    const b = await FineTuner.create(gpu, ckpt, options);
    await b.loadState(older);
    const next = toBatchInput(successorRows(2, 4, 9));
    expect((await b.step(next)).loss).toBe((await a.step(next)).loss); // same dropout masks
    a.destroy();
    b.destroy();
  });
});
