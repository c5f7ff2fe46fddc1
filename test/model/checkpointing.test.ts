/**
 * Gradient checkpointing: a training pass that keeps only each layer's input and recomputes the layer
 * in the backward pass computes exactly (bit for bit) what the pass that keeps everything computes, for
 * every architecture family and method, with packed documents and LoRA dropout; and its arena is smaller.
 */
import { describe, expect, it } from 'vitest';
import { memorySource } from '../../src/io/sources.js';
import { Activations } from '../../src/model/activations.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tinyModelFiles, type TinyModelOptions } from '../../src/model/tiny.js';
import { FineTuner, type FineTuneOptions } from '../../src/train/finetuner.js';
import { freshSeed, rng, testGpu } from '../helpers.js';

const lora = { rank: 4, targetModules: ['all-linear'], dropout: 0.2 };
const cases: [string, TinyModelOptions, FineTuneOptions][] = [
  ['llama (GQA), full', { architecture: 'llama', seed: 1, hiddenSize: 32, numLayers: 3, numHeads: 4, numKvHeads: 2, maxPositions: 64 }, { method: 'full', optimizer: { lr: 1e-3 } }],
  ['qwen2 (biases), LoRA with dropout', { architecture: 'qwen2', seed: 2, hiddenSize: 32, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositions: 64 }, { method: 'lora', lora, optimizer: { lr: 1e-2 } }],
  ['mistral (window), sparse', { architecture: 'mistral', seed: 3, hiddenSize: 32, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositions: 64, slidingWindow: 8 }, { method: 'sparse', sparse: { selection: 'random', density: 0.1 }, optimizer: { lr: 1e-2 } }],
  ['qwen3 (q/k norms), full', { architecture: 'qwen3', seed: 5, hiddenSize: 32, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 12, maxPositions: 64 }, { method: 'full', optimizer: { lr: 1e-3 } }],
  // Gemma's norms on the sublayers' outputs: the MLP's is recomputed from the down projection.
  ['gemma2 (post norms, soft caps, windows), full', { architecture: 'gemma2', seed: 6, hiddenSize: 32, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 8, attnSoftcap: 1.5, finalSoftcap: 2, slidingWindow: 6, maxPositions: 64 }, { method: 'full', optimizer: { lr: 1e-3 } }],
  ['gemma3 (post and q/k norms, two RoPEs), LoRA with dropout', { architecture: 'gemma3', seed: 7, hiddenSize: 32, numLayers: 2, numHeads: 2, numKvHeads: 1, headDim: 16, slidingWindow: 6, slidingWindowPattern: 2, maxPositions: 64 }, { method: 'lora', lora, optimizer: { lr: 1e-2 } }],
  ['gpt2, sparse+lora', { architecture: 'gpt2', seed: 4, hiddenSize: 32, numLayers: 2, numHeads: 2, maxPositions: 64 }, { method: 'sparse+lora', 'sparse+lora': { sparse: { selection: 'random', density: 0.1 }, lora }, optimizer: { lr: 1e-2 } }],
];

describe('gradient checkpointing', () => {
  it.each(cases)('%s: losses and updated weights are those of the pass that keeps every activation', async (_, model, options) => {
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(memorySource(tinyModelFiles(model)));
    const seed = freshSeed();
    const rand = rng(seed);
    const B = 2;
    const S = 24;
    const V = ckpt.config.vocabSize;
    // Two documents per row, so segments and per-document positions are recomputed too.
    const batch = () => ({ ids: Array.from({ length: B * S }, () => Math.floor(rand() * V)), B, S, segments: Array.from({ length: B * S }, (_, t) => (t % S < 10 ? 0 : 1)) });
    const batches = [batch(), batch(), batch()];
    const kept = await FineTuner.create(gpu, ckpt, options);
    const recomputed = await FineTuner.create(gpu, ckpt, { ...options, gradientCheckpointing: true });
    try {
      for (const b of batches) {
        const [a, c] = [await kept.step(b), await recomputed.step(b)];
        expect(c.loss, `seed ${seed}`).toBe(a.loss);
      }
      for (const name of kept.method.trainable.names) {
        const [a, c] = await Promise.all([gpu.readF32(kept.method.trainable.param(name)), gpu.readF32(recomputed.method.trainable.param(name))]);
        expect(Array.from(c), `${name}, seed ${seed}`).toEqual(Array.from(a));
      }
      expect(recomputed.model.cachedShapes).toEqual([`${B}x${S} checkpointed`]);
      expect(Activations.bytesFor(ckpt.config, B, S, 'checkpointed')).toBeLessThan(Activations.bytesFor(ckpt.config, B, S, 'train'));
    } finally {
      kept.destroy();
      recomputed.destroy();
    }
  });

  it('keeps the stream of every layer and one set of layer tensors', async () => {
    const ckpt = await openCheckpoint(memorySource(tinyModelFiles(cases[0][1])));
    const names = (kind: 'train' | 'checkpointed') => Activations.plan(ckpt.config, 1, 8, kind).map((t) => t.name);
    expect(names('checkpointed').filter((n) => /^x\d+$/.test(n))).toHaveLength(ckpt.config.numLayers + 1);
    expect(names('checkpointed').filter((n) => n.startsWith('l.'))).toEqual(names('train').filter((n) => n.startsWith('l0.')).map((n) => n.replace('l0.', 'l.')));
    expect(names('checkpointed').some((n) => /^l\d/.test(n))).toBe(false);
  });

  it('puts q, k and v, and their gradients, in one buffer each at 256-byte offsets, and only while the group fits 128 MiB', async () => {
    const config = (await openCheckpoint(memorySource(tinyModelFiles(cases[0][1])))).config;
    const qd = config.numHeads * config.headDim;
    const kvd = config.numKvHeads * config.headDim;
    const check = (T: number, grouped: boolean) => {
      const buffers = Activations.buffersOf(Activations.plan(config, 1, T, 'train'));
      for (const [group, names] of [['l1.qkv', ['l1.q', 'l1.k', 'l1.v']], ['dqkv', ['dq', 'dk', 'dv']]] as const) {
        const holder = buffers.filter((b) => b.tensors.some((t) => (names as readonly string[]).includes(t.tensor.name)));
        if (!grouped) {
          expect(holder.map((b) => b.name)).toEqual(names);
          continue;
        }
        expect(holder.map((b) => b.name)).toEqual([group]);
        const [q, k, v] = holder[0].tensors;
        expect([q.offset, k.offset, v.offset]).toEqual([0, Math.ceil((T * qd * 4) / 256) * 256, Math.ceil((T * qd * 4) / 256) * 256 + Math.ceil((T * kvd * 4) / 256) * 256]);
        expect(holder[0].bytes).toBe(v.offset + Math.ceil((T * kvd * 4) / 256) * 256);
      }
      expect(Activations.bytesOf(Activations.plan(config, 1, T, 'train'))).toBe(buffers.reduce((s, b) => s + b.bytes, 0));
    };
    check(7, true);
    // T (qd + 2 kvd) words past 128 MiB: each tensor its own buffer, as a device with the smallest binding limit needs.
    check(Math.ceil((128 << 20) / 4 / (qd + 2 * kvd)) + 1, false);
  });
});
