/**
 * Checkpoints in the browser's IndexedDB: the CheckpointStore contract (whole checkpoints, a latest
 * pointer, runs kept apart), a checkpoint rewritten leaving no stray files, the quota check failing
 * clearly with the earlier checkpoints intact, and a Trainer resumed from a fresh connection (as after a
 * reload) continuing with the losses of an uninterrupted run. Browsers only: Node has no IndexedDB.
 */
import { describe, expect, it } from 'vitest';
import { createStore, keys } from 'idb-keyval';
import { loadDataset } from '../../src/data/dataset.js';
import { loadTokenizer } from '../../src/data/tokenizer.js';
import { memorySource } from '../../src/io/sources.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tinyModelFiles } from '../../src/model/tiny.js';
import { indexedDbCheckpointStore, indexedDbRuns, StorageFullError } from '../../src/browser/indexeddb-checkpoints.js';
import { CheckpointError, latestCheckpoint } from '../../src/train/checkpoints.js';
import { Trainer, type TrainerOptions } from '../../src/train/trainer.js';
import { testGpu } from '../helpers.js';

const inBrowser = typeof indexedDB !== 'undefined';
const fresh = () => `test-${Math.random().toString(36).slice(2)}`;
const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 255);

describe.skipIf(!inBrowser)('IndexedDB checkpoints', () => {
  it('keep whole checkpoints per run, a latest pointer, and run info', async () => {
    const database = fresh();
    const a = indexedDbCheckpointStore('run-a', { database });
    const b = indexedDbCheckpointStore('run-b', { database });
    expect(await a.list()).toEqual([]);
    expect(await a.getLatest()).toBeNull();
    // A view into a larger buffer stores its own bytes only.
    const big = bytes(1000, 1);
    await a.write('checkpoint-00000002', { 'state.safetensors': big.subarray(100, 400), 'trainer.json': bytes(10, 2) });
    await a.setLatest('checkpoint-00000002');
    await b.write('checkpoint-00000005', { 'state.safetensors': bytes(7, 3) });
    await a.saveRunInfo({ model: 'tiny-llama-skills', lr: 5e-3 });
    const stored = await a.read('checkpoint-00000002', 'state.safetensors');
    expect(stored).toEqual(big.subarray(100, 400));
    expect(stored!.buffer.byteLength).toBe(300);
    expect(await a.read('checkpoint-00000002', 'nothing.bin')).toBeNull();
    expect(await a.read('checkpoint-00000009', 'trainer.json')).toBeNull();
    expect(await a.list()).toEqual(['checkpoint-00000002']);
    expect(await b.list()).toEqual(['checkpoint-00000005']);
    expect(await a.loadRunInfo()).toEqual({ model: 'tiny-llama-skills', lr: 5e-3 });
    await expect(a.setLatest('checkpoint-00000005')).rejects.toThrow(CheckpointError);
    // A fresh connection (a reload) sees the same.
    const again = indexedDbCheckpointStore('run-a', { database });
    expect(await latestCheckpoint(again)).toBe('checkpoint-00000002');
    const runs = await indexedDbRuns({ database });
    expect(runs.map((r) => r.run).sort()).toEqual(['run-a', 'run-b']);
    expect(runs.find((r) => r.run === 'run-a')).toMatchObject({ latest: 'checkpoint-00000002', bytes: 310, info: { lr: 5e-3 } });
    await a.clear();
    expect(await again.list()).toEqual([]);
    expect((await indexedDbRuns({ database })).map((r) => r.run)).toEqual(['run-b']);
    expect(() => indexedDbCheckpointStore('../x', { database })).toThrow(/not a plain run name/);
  });

  it('a rewritten checkpoint leaves no files of the old one behind; a removed one leaves nothing', async () => {
    const database = fresh();
    const s = indexedDbCheckpointStore('r', { database });
    await s.write('checkpoint-00000001', { 'a.bin': bytes(5, 1), 'b.bin': bytes(5, 2) });
    await s.write('checkpoint-00000001', { 'a.bin': bytes(6, 3) });
    expect(await s.read('checkpoint-00000001', 'a.bin')).toEqual(bytes(6, 3));
    expect(await s.read('checkpoint-00000001', 'b.bin')).toBeNull();
    const raw = createStore(database, 'checkpoints');
    const fileKeys = () => keys(raw).then((k) => k.filter((x) => Array.isArray(x) && x[1] === 'file'));
    expect(await fileKeys()).toHaveLength(1);
    await s.remove('checkpoint-00000001');
    expect(await fileKeys()).toHaveLength(0);
    expect(await s.list()).toEqual([]);
  });

  it('refuse a checkpoint over the storage quota, saying what it needs, with the earlier one intact', async () => {
    const database = fresh();
    let free = 1e6;
    const s = indexedDbCheckpointStore('r', { database, estimate: async () => ({ usage: 5e6 - free, quota: 5e6 }) });
    await s.write('checkpoint-00000001', { 'state.safetensors': bytes(1000, 1) });
    await s.setLatest('checkpoint-00000001');
    free = 500;
    const e = await s.write('checkpoint-00000002', { 'state.safetensors': bytes(2_000_000, 2) }).then(() => null, (err: unknown) => err);
    expect(e).toBeInstanceOf(StorageFullError);
    expect((e as Error).message).toMatch(/storage is full: this checkpoint needs 2\.0 MB, and 0\.0 MB of the 5\.0 MB quota are free; delete old runs.*earlier checkpoints are intact/);
    expect(await s.list()).toEqual(['checkpoint-00000001']);
    expect(await latestCheckpoint(s)).toBe('checkpoint-00000001');
    expect(await s.read('checkpoint-00000001', 'state.safetensors')).toEqual(bytes(1000, 1));
  });

  it('a Trainer resumed from IndexedDB through a fresh connection continues with the uninterrupted losses', async () => {
    const files = tinyModelFiles({ architecture: 'llama', seed: 8, hiddenSize: 32, numLayers: 2, numHeads: 2, numKvHeads: 1, maxPositions: 64 });
    const tokenizer = await loadTokenizer(memorySource(files));
    const rows = Array.from({ length: 40 }, (_, i) => JSON.stringify({ prompt: `next:${'abcdefghij'.slice(0, 1 + (i % 7))}=`, completion: 'bcdefghijk'[i % 7] }));
    const data = await loadDataset({ name: 'rows.jsonl', bytes: new TextEncoder().encode(rows.join('\n')) }, tokenizer, { seqLength: 32 });
    const gpu = await testGpu();
    const options: TrainerOptions = { method: 'lora', lora: { rank: 4 }, steps: 5, batchSize: 4, microBatch: 2, optimizer: { lr: 1e-2 } };
    const run = async (o: Partial<TrainerOptions>) => {
      const t = await Trainer.create(gpu, await openCheckpoint(memorySource(files)), data, { ...options, ...o });
      try {
        return await t.train();
      } finally {
        t.destroy();
      }
    };
    const want = await run({});
    const database = fresh();
    let first: Trainer;
    first = await Trainer.create(gpu, await openCheckpoint(memorySource(files)), data, {
      ...options,
      checkpoints: { store: indexedDbCheckpointStore('run', { database }) },
      onEvent: (e) => e.type === 'step' && e.step === 2 && first.cancel(),
    });
    const head = await first.train();
    first.destroy();
    const tail = await run({ checkpoints: { store: indexedDbCheckpointStore('run', { database }) }, resume: true });
    expect([...head.losses, ...tail.losses]).toEqual(want.losses);
  });
});
