/**
 * Unknown keys in options are errors: a misspelt or not-yet-supported option fails with its name and the
 * nearest known key, before any weight loads, instead of silently doing nothing.
 */
import { describe, expect, it } from 'vitest';
import { loadDataset } from '../../src/data/dataset.js';
import { loadTokenizer } from '../../src/data/tokenizer.js';
import { ShapeError, UnknownOptionError } from '../../src/errors.js';
import { memorySource } from '../../src/io/sources.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tinyModelFiles } from '../../src/model/tiny.js';
import { AdapterCache } from '../../src/serve/adapter-cache.js';
import { Generator } from '../../src/serve/generate.js';
import { memoryCheckpointStore } from '../../src/train/checkpoints.js';
import { FineTuner, type FineTuneOptions } from '../../src/train/finetuner.js';
import { Trainer, type TrainerOptions } from '../../src/train/trainer.js';
import { nearestKey } from '../../src/util/options.js';
import { testGpu } from '../helpers.js';

const files = tinyModelFiles({ architecture: 'llama', seed: 8, hiddenSize: 32, numLayers: 1, numHeads: 2, maxPositions: 32 });
const ckpt = () => openCheckpoint(memorySource(files));

/** What a promise rejects with. */
async function rejection(p: Promise<unknown>): Promise<Error & Record<string, unknown>> {
  try {
    await p;
  } catch (e) {
    return e as Error & Record<string, unknown>;
  }
  throw new Error('expected a rejection');
}

describe('unknown option keys', () => {
  it('suggests the nearest known key: misspelt, or in snake_case', () => {
    const known = ['rank', 'alpha', 'targetModules', 'rankPattern'];
    expect(nearestKey('rnak', known)).toBe('rank');
    expect(nearestKey('target_modules', known)).toBe('targetModules');
    expect(nearestKey('rank_pattern', known)).toBe('rankPattern');
    expect(nearestKey('dora', known)).toBeNull();
  });

  it.each<[string, object, string, string | null, string]>([
    ['a method option it does not have', { method: 'lora', lora: { rank: 4, adalora: true } }, 'adalora', null, 'LoRA options'],
    ['a misspelt method option', { method: 'lora', lora: { rnak: 4 } }, 'rnak', 'rank', 'LoRA options'],
    ["PEFT's name for a LoRA option", { method: 'lora', lora: { target_modules: ['q'] } }, 'target_modules', 'targetModules', 'LoRA options'],
    ['a misspelt top-level option', { method: 'lora', optimzer: { lr: 1 } }, 'optimzer', 'optimizer', 'FineTuner options'],
    ['an optimizer option', { method: 'lora', optimizer: { lr: 1e-3, weight_decay: 0.1 } }, 'weight_decay', 'weightDecay', 'optimizer options'],
    ['a sparse option', { method: 'sparse', sparse: { selection: 'random', density: 0.1, granularty: 16 } }, 'granularty', 'granularity', 'sparse options'],
    ['a sparse+lora option', { method: 'sparse+lora', 'sparse+lora': { lora: {}, sparce: {} } }, 'sparce', 'sparse', 'sparse+lora options'],
    ['a full fine-tuning option', { method: 'full', full: { freeze: () => true } }, 'freeze', null, 'full fine-tuning options'],
    ['a quantize option', { method: 'lora', quantize: { format: 'int4', group_size: 32 } }, 'group_size', 'groupSize', 'quantize'],
  ])('FineTuner refuses %s by name, before loading', async (_what, options, key, suggestion, where) => {
    const e = await rejection(FineTuner.create(await testGpu(), await ckpt(), options as FineTuneOptions));
    expect(e).toBeInstanceOf(UnknownOptionError);
    expect(e).toMatchObject({ code: 'unknown-option', key, suggestion, where });
    expect(e.message).toContain(`'${key}'`);
    if (suggestion) expect(e.message).toContain(`did you mean '${suggestion}'`);
  });

  it("refuses another method's options and a group size NF4 would ignore", async () => {
    const gpu = await testGpu();
    await expect(FineTuner.create(gpu, await ckpt(), { method: 'lora', sparse: { selection: 'random', density: 0.1 } })).rejects.toThrow(/options under 'sparse' are for method 'sparse', but the method is 'lora'/);
    await expect(FineTuner.create(gpu, await ckpt(), { method: 'lora', quantize: { format: 'nf4', groupSize: 128 } as never })).rejects.toThrow(ShapeError);
    await expect(FineTuner.fromPretrained(memorySource(files), { method: 'lora', gpu, hub: {}, lora: { rank: 2 }, hubb: 1 } as never)).rejects.toMatchObject({ key: 'hubb', suggestion: 'hub' });
  });

  it('the Trainer, CausalLM, dataset, adapter cache and generation refuse unknown keys', async () => {
    const gpu = await testGpu();
    const tokenizer = await loadTokenizer(memorySource(files));
    const rows = { name: 'rows.jsonl', bytes: new TextEncoder().encode('{"text": "abc def"}\n'.repeat(8)) };
    await expect(loadDataset(rows, tokenizer, { seqLength: 16, loss_on: 'all' } as never)).rejects.toMatchObject({ key: 'loss_on', suggestion: 'lossOn' });
    const data = await loadDataset(rows, tokenizer, { seqLength: 16 });
    const trainer = (o: object) => Trainer.create(gpu, undefined as never, data, { method: 'lora', ...o } as TrainerOptions);
    await expect(trainer({ batch_size: 4 })).rejects.toMatchObject({ where: 'Trainer options', key: 'batch_size', suggestion: 'batchSize' });
    await expect(trainer({ optimizer: { lr: 1e-3, totalSteps: 5 } })).rejects.toMatchObject({ where: 'optimizer options', key: 'totalSteps' });
    await expect(trainer({ checkpoints: { store: memoryCheckpointStore(), evry: 2 } })).rejects.toMatchObject({ where: 'checkpoints', key: 'evry', suggestion: 'every' });
    await expect(CausalLM.fromCheckpoint(gpu, await ckpt(), { quantise: 'nf4' } as never)).rejects.toMatchObject({ key: 'quantise', suggestion: 'quantize' });
    const model = await CausalLM.fromCheckpoint(gpu, await ckpt());
    try {
      expect(() => new AdapterCache(model, { gpuBudgetByte: 1 << 20 } as never)).toThrow(expect.objectContaining({ key: 'gpuBudgetByte', suggestion: 'gpuBudgetBytes' }));
      await expect(new Generator(model).generate([1, 2], { maxNewTokens: 2, temprature: 0.5 } as never)).rejects.toMatchObject({ key: 'temprature', suggestion: 'temperature' });
    } finally {
      model.destroy();
    }
  });

  it("a checkpoint's trainer.json with a key this version does not write is refused by name", async () => {
    const gpu = await testGpu();
    const tokenizer = await loadTokenizer(memorySource(files));
    const data = await loadDataset({ name: 'rows.jsonl', bytes: new TextEncoder().encode('{"text": "abc def"}\n'.repeat(8)) }, tokenizer, { seqLength: 16 });
    const store = memoryCheckpointStore();
    const options: TrainerOptions = { method: 'lora', steps: 1, batchSize: 2, microBatch: 2, checkpoints: { store } };
    const first = await Trainer.create(gpu, await ckpt(), data, options);
    await first.train();
    first.destroy();
    const name = (await store.getLatest())!;
    const stored: Record<string, Uint8Array> = {};
    for (const file of ['trainer.json', 'state.safetensors']) stored[file] = (await store.read(name, file))!;
    const state = JSON.parse(new TextDecoder().decode(stored['trainer.json']));
    stored['trainer.json'] = new TextEncoder().encode(JSON.stringify({ ...state, rowSeen: 2 }));
    await store.write(name, stored);
    await expect(Trainer.create(gpu, await ckpt(), data, { ...options, resume: true }).then((t) => t.train())).rejects.toMatchObject({ key: 'rowSeen', suggestion: 'rowsSeen' });
  });
});
