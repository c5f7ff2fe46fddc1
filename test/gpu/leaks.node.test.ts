/**
 * Long runs must not grow: readbacks leave nothing on the JS heap, activations of many batch shapes
 * stay within the model's cache budget, and failed allocations release what they made.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { BufferTooLargeError, GPUOutOfMemoryError } from '../../src/errors.js';
import { memorySource } from '../../src/io/sources.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { Activations } from '../../src/model/activations.js';
import { Generator } from '../../src/serve/generate.js';
import { tinyModelFiles } from '../../src/model/tiny.js';
import { FineTuner, type FineTuneOptions } from '../../src/train/finetuner.js';
import { successorRows, toBatchInput } from '../../src/data/tasks.js';
import { testGpu } from '../helpers.js';

// The same as running node with --expose-gc, for this test's isolate.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

function heapAfterGc(): number {
  for (let i = 0; i < 3; i++) gc();
  return process.memoryUsage().heapUsed;
}

const files = tinyModelFiles({ architecture: 'llama', seed: 6, hiddenSize: 32, numLayers: 2, numHeads: 4, maxPositions: 256 });

describe('memory over long runs', () => {
  it('thousands of readbacks leave the JS heap flat', async () => {
    const gpu = await testGpu();
    const buffer = gpu.upload(new Float32Array(64).fill(1));
    for (let i = 0; i < 200; i++) await gpu.readF32(buffer); // warm up pools and compiled code
    await gpu.sync();
    const before = heapAfterGc();
    const reads = 4000;
    for (let i = 0; i < reads; i++) await gpu.readF32(buffer);
    for (let i = 0; i < 200; i++) await gpu.sync();
    const grown = heapAfterGc() - before;
    // A retained reaction per read (the old leak) was about 500 bytes: 2 MB here.
    expect(grown, `heap grew ${grown} bytes over ${reads} reads and 200 syncs`).toBeLessThan(256 * 1024);
    gpu.destroyBuffer(buffer);
  });

  it('activations of many batch shapes stay within the cache budget, least recently used released first', async () => {
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(memorySource(files));
    const shapeBytes = (B: number, S: number) => Activations.bytesFor(ckpt.config, B, S, 'train', false, gpu.tuning.attentionVariant);
    const budget = 3 * shapeBytes(2, 64);
    const ft = await FineTuner.create(gpu, ckpt, { method: 'lora', lora: { rank: 4 } });
    const model = ft.model;
    (model as { activationCacheBytes: number }).activationCacheBytes = budget;
    const baseline = gpu.memoryStats().currentBytes;
    let peak = 0;
    for (let s = 8; s <= 64; s += 4) {
      await ft.step(toBatchInput(successorRows(2, s / 4 - 1, s))); // one new shape per step
      expect(model.activationBytes).toBeLessThanOrEqual(budget);
      peak = Math.max(peak, gpu.memoryStats().currentBytes - baseline);
    }
    // LoRA's per-shape buffers go with their arena, so the device total is bounded too.
    expect(peak).toBeLessThan(budget * 1.5);
    const shapes = model.cachedShapes;
    const again = model.prepare(toBatchInput(successorRows(2, 1, 0)));
    await ft.evaluate(again);
    expect(model.cachedShapes.at(-1)).toBe(`${again.B}x${again.S} inference`); // evaluation needs no backward scratch
    expect(model.cachedShapes.slice(0, -1)).toEqual(shapes.slice(-(model.cachedShapes.length - 1)));
    ft.destroy();
  });

  it('evaluation and generation plan arenas without backward scratch; training supersedes them', async () => {
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(memorySource(files));
    const ft = await FineTuner.create(gpu, ckpt, { method: 'lora' });
    const batch = ft.model.prepare(toBatchInput(successorRows(2, 3, 0)));
    const key = `${batch.B}x${batch.S}`;
    await ft.evaluate(batch);
    expect(ft.model.cachedShapes).toEqual([`${key} inference`]);
    const inference = Activations.bytesFor(ckpt.config, batch.B, batch.S, 'inference');
    const train = Activations.bytesFor(ckpt.config, batch.B, batch.S, 'train', false, gpu.tuning.attentionVariant);
    expect(ft.model.activationBytes).toBe(inference);
    expect(inference).toBeLessThan(0.8 * train);
    const arena = ft.model.activationsFor(batch.B, batch.S, 'inference');
    expect(arena.grad).toBeNull();
    expect(() => ft.model.transformer.backward(gpu.recorder(), arena, 1)).toThrow(/training activations/);
    await ft.step(batch);
    expect(ft.model.cachedShapes).toEqual([key]);
    expect(ft.model.activationBytes).toBe(train);
    await ft.evaluate(batch); // reuses the training arena
    expect(ft.model.cachedShapes).toEqual([key]);
    ft.destroy();
  });

  it('keeps at most eight shapes however small they are', async () => {
    const gpu = await testGpu();
    const lm = await CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource(files)));
    const before = gpu.memoryStats().buffers;
    for (let s = 1; s <= 20; s++) lm.activationsFor(1, s);
    expect(lm.cachedShapes).toEqual(Array.from({ length: 8 }, (_, i) => `1x${13 + i}`));
    lm.activationsFor(1, 14); // a hit moves to the most recent end, evicting nothing
    expect(lm.cachedShapes).toEqual(['1x13', '1x15', '1x16', '1x17', '1x18', '1x19', '1x20', '1x14']);
    const perShape = Activations.buffersOf(Activations.plan(lm.config, 1, 1)).length;
    expect(gpu.memoryStats().buffers - before).toBe(8 * perShape);
    lm.destroy();
  });

  it('a batch too large for the device throws BufferTooLargeError and allocates nothing', async () => {
    const gpu = await testGpu();
    const lm = await CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource(files)));
    lm.activationsFor(2, 8);
    const before = gpu.memoryStats();
    expect(() => lm.activationsFor(64, 1 << 20)).toThrow(BufferTooLargeError);
    expect(() => new Activations(gpu, lm.config, 64, 1 << 20)).toThrow(BufferTooLargeError);
    const after = gpu.memoryStats();
    expect([after.currentBytes, after.buffers]).toEqual([before.currentBytes, before.buffers]);
    expect(lm.cachedShapes).toEqual(['2x8']); // refused before anything was evicted
    lm.destroy();
  });

  it.each<[string, FineTuneOptions]>([
    ['LoRA', { method: 'lora', lora: { rank: 4, dropout: 0.2, targetModules: ['q', 'v', 'down'] } }],
    ['full fine-tuning', { method: 'full' }],
  ])('an allocation failing at any point of loading, attaching the method, a step or generation leaves nothing allocated (%s)', async (_name, options) => {
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(memorySource(files));
    const batch = toBatchInput(successorRows(2, 2, 1));
    const scenario = async () => {
      const ft = await FineTuner.create(gpu, ckpt, options);
      const gen = new Generator(ft.model);
      try {
        await ft.step(batch);
        await gen.generateBatch([[1, 2, 3], [4, 5]], { maxNewTokens: 2 });
      } finally {
        gen.destroy();
        ft.destroy();
      }
    };
    await scenario(); // warm the device's pools and uniform buffer
    const create = gpu.createBuffer;
    let calls = 0;
    let failAt = Infinity;
    gpu.createBuffer = (...args: Parameters<typeof create>) => {
      if (++calls === failAt) throw new GPUOutOfMemoryError('injected failure');
      return create.apply(gpu, args);
    };
    try {
      await scenario();
      const total = calls;
      expect(total).toBeGreaterThan(10);
      const before = gpu.memoryStats();
      for (failAt = 1; failAt <= total; failAt++) {
        calls = 0;
        await expect(scenario(), `allocation ${failAt} of ${total}`).rejects.toThrow(/injected failure/);
        const after = gpu.memoryStats();
        expect([after.currentBytes, after.buffers], `allocation ${failAt} of ${total} failed`).toEqual([before.currentBytes, before.buffers]);
      }
    } finally {
      gpu.createBuffer = create;
    }
  });

  it('an arena evicted while a call still reads it stays valid until that call is done', async () => {
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(memorySource(files));
    const options = { method: 'lora', lora: { rank: 4 } } as const;
    const batches = [1, 2, 3, 4].map((pairs) => toBatchInput(successorRows(2, pairs, pairs)));
    const reference = await FineTuner.create(gpu, ckpt, options);
    const alone = [];
    for (const b of batches) alone.push((await reference.evaluate(b)).loss);
    reference.destroy();
    const ft = await FineTuner.create(gpu, ckpt, options);
    (ft.model as { activationCacheBytes: number }).activationCacheBytes = 1; // every new shape evicts the others
    const before = gpu.memoryStats().currentBytes;
    const together = await Promise.all(batches.map((b) => ft.evaluate(b)));
    expect(together.map((r) => r.loss)).toEqual(alone);
    expect(ft.model.cachedShapes).toHaveLength(1);
    // The retired arenas (and their LoRA buffers) were destroyed when their readers finished: what is
    // left is one shape's arena and its small adapter buffers, not four arenas.
    const held = gpu.memoryStats().currentBytes - before;
    expect(held).toBeLessThan(1.5 * ft.model.activationBytes);
    ft.destroy();
  });

  it('a load that fails part way releases the half-loaded model', async () => {
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(memorySource(files));
    let reads = 0;
    for (const loc of ckpt.tensors.values()) {
      const file = loc.file;
      const read = file.read.bind(file);
      (file as { read: typeof read }).read = async (offset, length) => {
        if (++reads === 7) throw new Error('disk error');
        return read(offset, length);
      };
    }
    const before = gpu.memoryStats();
    await expect(CausalLM.fromCheckpoint(gpu, ckpt)).rejects.toThrow(/disk error/);
    const after = gpu.memoryStats();
    expect([after.currentBytes, after.buffers]).toEqual([before.currentBytes, before.buffers]);
  });
});
