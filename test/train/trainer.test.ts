/**
 * The Trainer: every method through the same loop; resuming from a checkpoint continues with exactly
 * (bitwise) the losses of an uninterrupted run; the automatic micro-batch stays within its budget and
 * accumulates to the effective batch; pause, resume and cancel; a lost device stops the run with the
 * checkpoint intact, and the run resumes from it on a new device.
 */
import { describe, expect, it } from 'vitest';
import { loadDataset, type TrainingData } from '../../src/data/dataset.js';
import { skillExamples } from '../../src/data/skills.js';
import { loadTokenizer } from '../../src/data/tokenizer.js';
import { ShapeError } from '../../src/errors.js';
import { requestDevice } from '../../src/gpu/device.js';
import { memorySource } from '../../src/io/sources.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tinyModelFiles } from '../../src/model/tiny.js';
import { Activations } from '../../src/model/activations.js';
import { CheckpointError, latestCheckpoint, memoryCheckpointStore, RunExistsError } from '../../src/train/checkpoints.js';
import { Trainer, TrainingStoppedError, type TrainerEvent, type TrainerOptions } from '../../src/train/trainer.js';
import { IN_BROWSER, testGpu } from '../helpers.js';

const files = tinyModelFiles({ architecture: 'llama', seed: 4, hiddenSize: 32, numLayers: 2, numHeads: 2, numKvHeads: 1, maxPositions: 64 });

let dataPromise: Promise<TrainingData> | null = null;
function data(): Promise<TrainingData> {
  dataPromise ??= (async () => {
    const tokenizer = await loadTokenizer(memorySource(files));
    const rows = skillExamples(120, 5, 'shift').map((e) => JSON.stringify({ prompt: String.fromCharCode(...e.prompt), completion: String.fromCharCode(...e.answer.slice(0, -1)) }));
    return loadDataset({ name: 'shift.jsonl', bytes: new TextEncoder().encode(rows.join('\n')) }, tokenizer, { seqLength: 48, validation: 0.1 });
  })();
  return dataPromise;
}

const lora = { rank: 4, targetModules: ['all-linear'], dropout: 0.1 };
const METHODS: [string, Partial<TrainerOptions>][] = [
  ['lora (dropout)', { method: 'lora', lora, optimizer: { lr: 1e-2 } }],
  ['qlora (nf4)', { method: 'lora', lora, quantize: 'nf4', optimizer: { lr: 1e-2 } }],
  ['full', { method: 'full', optimizer: { lr: 1e-3, weightDecay: 0.01 } }],
  ['sparse', { method: 'sparse', sparse: { selection: 'random', density: 0.05, seed: 3 }, optimizer: { lr: 1e-2 } }],
  // The default selection (Sylva) runs on the training rows before attaching; a resumed run takes the checkpoint's mask.
  ['sparse (sylva on the rows)', { method: 'sparse', sparse: { density: 0.05 }, optimizer: { lr: 1e-2 } }],
  ['sparse+lora', { method: 'sparse+lora', 'sparse+lora': { sparse: { selection: 'random', density: 0.05 }, lora }, optimizer: { lr: 1e-2 } }],
  // GaLore: the checkpoint falls between two recomputations of the projections, which it keeps.
  ['galore', { method: 'galore', galore: { rank: 4, updateGap: 3 }, optimizer: { lr: 1e-3 } }],
  // LISA: the checkpoint falls inside a sampling period; 'keep' parks moments of layers that leave.
  ['lisa (keep moments)', { method: 'lisa', lisa: { layers: 1, interval: 3, moments: 'keep' }, optimizer: { lr: 1e-3 } }],
  // Forward-only: the directions follow the seed and the optimizer step, which the checkpoint keeps.
  ['zo (lora over nf4, 2 directions)', { method: 'zo', zo: { target: 'lora', lora: { rank: 4 }, directions: 2 }, quantize: 'nf4', optimizer: { lr: 1e-3 } }],
  ['zo (nf4 block scales)', { method: 'zo', zo: { target: 'quantized' }, quantize: 'nf4', optimizer: { lr: 1e-3 } }],
  ['zo (sparse, sylva on the rows)', { method: 'zo', zo: { target: 'sparse', sparse: { density: 0.05 } }, optimizer: { lr: 1e-4 } }],
];

async function trainer(options: Partial<TrainerOptions>, gpu?: Awaited<ReturnType<typeof testGpu>>) {
  return Trainer.create(gpu ?? (await testGpu()), await openCheckpoint(memorySource(files)), await data(), { steps: 6, batchSize: 4, microBatch: 2, ...options } as TrainerOptions);
}

describe('Trainer', () => {
  // Chromium: the adapter, 4-bit, full and projected paths (see IN_BROWSER); Node: every method.
  const resumed = IN_BROWSER ? METHODS.filter(([name]) => ['lora (dropout)', 'qlora (nf4)', 'full', 'galore'].includes(name)) : METHODS;
  it.each(resumed)('%s: resuming from a checkpoint gives the losses of the uninterrupted run, bit for bit', async (_, options) => {
    const whole = await trainer(options);
    const want = await whole.train();
    whole.destroy();
    expect(want.losses).toHaveLength(6);
    expect(want.losses.every(Number.isFinite)).toBe(true);

    // Cancelled at step 3's event (step 4 is in flight by then, and finishes), a checkpoint is written;
    // a new trainer resumes from the store.
    const store = memoryCheckpointStore();
    const first = await trainer({ ...options, checkpoints: { store }, onEvent: (e) => e.type === 'step' && e.step === 3 && first.cancel() });
    const head = await first.train();
    first.destroy();
    expect(head.reason).toBe('cancelled');
    expect(head.losses).toHaveLength(4);
    expect(await latestCheckpoint(store)).toBe('checkpoint-00000004');
    const second = await trainer({ ...options, checkpoints: { store }, resume: true });
    const tail = await second.train();
    second.destroy();
    expect([...head.losses, ...tail.losses]).toEqual(want.losses);
    expect(tail.evals[0].loss).toBe(want.evals[0].loss);
  });

  it('reports a plan, a step event per optimizer step with rates and memory, and evaluations on held-out rows', async () => {
    const events: TrainerEvent[] = [];
    const t = await trainer({ method: 'lora', lora, evalEvery: 2, evalAccuracy: true, onEvent: (e) => events.push(e) });
    const r = await t.train();
    t.destroy();
    const plan = events.find((e) => e.type === 'plan')!;
    expect(plan).toMatchObject({ totalSteps: 6, batchSize: 4, microBatch: 2, accumulation: 2, resumedFrom: null });
    const steps = events.filter((e) => e.type === 'step');
    expect(steps.map((s) => s.step)).toEqual([1, 2, 3, 4, 5, 6]);
    for (const s of steps) {
      expect(s.tokensPerSecond).toBeGreaterThan(0);
      expect(s.tokens).toBeGreaterThan(0);
      expect(s.gpuBytes).toBeGreaterThan(0);
      expect(s.etaSeconds).toBeGreaterThanOrEqual(0);
    }
    expect(steps[5].etaSeconds).toBe(0);
    const evals = events.filter((e) => e.type === 'eval');
    expect(evals.map((e) => e.step)).toEqual([2, 4, 6]);
    for (const e of evals) {
      expect(e.perplexity).toBeCloseTo(Math.exp(e.loss), 10);
      expect(e.accuracy).toBeGreaterThanOrEqual(0);
    }
    expect(r.evals).toHaveLength(3);
    expect(events[events.length - 1]).toMatchObject({ type: 'done', reason: 'completed', step: 6 });
  });

  it('pauses before the next step until resumed; cancel ends the run', async () => {
    const events: string[] = [];
    let t!: Trainer;
    t = await trainer({
      method: 'lora', lora,
      onEvent: (e) => {
        events.push(e.type === 'step' ? `step ${e.step}` : e.type);
        if (e.type === 'step' && e.step === 2) t.pause();
        if (e.type === 'paused') setTimeout(() => t.resume(), 20);
        if (e.type === 'step' && e.step === 4) t.cancel();
      },
    });
    const r = await t.train();
    t.destroy();
    expect(r.reason).toBe('cancelled');
    expect(events.filter((e) => e !== 'plan')).toEqual(['step 1', 'step 2', 'step 3', 'paused', 'resumed', 'step 4', 'step 5', 'done']);
  });

  it('the automatic micro-batch is the largest divisor of the batch within the activation budget', async () => {
    const d = await data();
    const attention = (await testGpu()).tuning.attentionVariant;
    const per = Activations.bytesFor((await openCheckpoint(memorySource(files))).config, 1, d.train.S, 'train', false, attention);
    const t = await trainer({ method: 'lora', lora, batchSize: 12, microBatch: 'auto', memoryBudgetBytes: per * 4.5, steps: 1 });
    await t.train();
    const choice = t.microBatch!;
    t.destroy();
    expect(choice.microBatch).toBe(4); // 12 and 6 are over 4.5 rows' worth; 4 is the largest divisor under
    expect(choice.accumulation).toBe(3);
    expect(choice.trials.map((x) => [x.rows, x.outcome])).toEqual([[12, 'over-budget'], [6, 'over-budget'], [4, 'fits']]);
    expect(choice.reason).toMatch(/micro-batch 4 x 3 accumulated: 12 rows would not fit \(its activations take .* over the .* budget\)/);
    const big = await trainer({ method: 'lora', lora, batchSize: 12, microBatch: 12, memoryBudgetBytes: per * 4.5 });
    await expect(big.train()).rejects.toThrow(/a micro-batch of 12 rows of 48 tokens cannot run here: its activations take .*; the largest that fits is 4/);
    big.destroy();
    await expect(trainer({ method: 'lora', lora, batchSize: 12, microBatch: 5 })).rejects.toThrow(ShapeError);
  });

  it('turns gradient checkpointing on only when not even one row fits without it, and trains the same', async () => {
    const d = await data();
    const config = (await openCheckpoint(memorySource(files))).config;
    const attention = (await testGpu()).tuning.attentionVariant;
    const keep = Activations.bytesFor(config, 1, d.train.S, 'train', false, attention);
    const recompute = Activations.bytesFor(config, 1, d.train.S, 'checkpointed', false, attention);
    expect(recompute).toBeLessThan(keep);
    const budget = (keep + recompute) / 2; // one row keeping every activation is over it; recomputing, under
    const t = await trainer({ method: 'lora', lora, batchSize: 4, microBatch: 'auto', memoryBudgetBytes: budget, steps: 3 });
    const r = await t.train();
    expect(t.microBatch).toMatchObject({ gradientCheckpointing: true });
    expect(t.microBatch!.microBatch).toBe(1);
    expect(t.microBatch!.reason).toMatch(/gradient checkpointing on, as without it not even one row fits/);
    const micro = t.microBatch!.microBatch;
    t.destroy();
    const plain = await trainer({ method: 'lora', lora, batchSize: 4, microBatch: micro, gradientCheckpointing: false, steps: 3 });
    expect((await plain.train()).losses).toEqual(r.losses);
    expect(plain.microBatch!.gradientCheckpointing).toBe(false);
    plain.destroy();
  });

  it('refuses bad options before loading, and a checkpoint of another run', async () => {
    for (const bad of [{ steps: 0 }, { steps: 1.5 }, { batchSize: -1 }, { epochs: 0 }, { optimizer: { lr: -1 } }, { optimizer: { lr: NaN } }, { checkpoints: { store: memoryCheckpointStore(), every: 0 } }]) {
      await expect(trainer({ method: 'lora', lora, ...bad } as Partial<TrainerOptions>)).rejects.toThrow(ShapeError);
    }
    await expect(trainer({ method: 'lora', lora, resume: true, checkpoints: { store: memoryCheckpointStore() } })).rejects.toThrow(CheckpointError);
    const store = memoryCheckpointStore();
    const a = await trainer({ method: 'lora', lora, steps: 2, checkpoints: { store } });
    await a.train();
    a.destroy();
    const other = await trainer({ method: 'lora', lora, steps: 2, seed: 5, checkpoints: { store }, resume: true });
    await expect(other.train()).rejects.toThrow(/the checkpoint was made with seed 0, this run has 5/);
    other.destroy();
    const method = await trainer({ method: 'full', steps: 2, checkpoints: { store }, resume: true });
    await expect(method.train()).rejects.toThrow(/made with method lora, this run has full/);
    method.destroy();
  });

  it("refuses a new run in a store that holds one; overwrite deletes the old checkpoints only once the new run has saved", async () => {
    const store = memoryCheckpointStore();
    const old = await trainer({ method: 'lora', lora, steps: 6, checkpoints: { store, every: 2, keep: 3 } });
    await old.train();
    old.destroy();
    const snapshot = async () => Object.fromEntries(await Promise.all((await store.list()).sort().map(async (n) => [n, await store.read(n, 'trainer.json')])));
    const saved = await snapshot();
    expect(Object.keys(saved)).toEqual(['checkpoint-00000002', 'checkpoint-00000004', 'checkpoint-00000006']);
    const refused = await trainer({ method: 'lora', lora, steps: 4, checkpoints: { store } }).catch((e) => e);
    expect(refused).toBeInstanceOf(RunExistsError);
    expect(refused.message).toMatch(/memory holds a run \(latest checkpoint-00000006\): continue it with resume, or start over with overwrite/);
    await expect(trainer({ method: 'lora', lora, checkpoints: { store }, resume: true, overwrite: true })).rejects.toThrow(/give one of them/);
    // A new run that stops before its first save leaves the old run whole.
    const early = await trainer({ method: 'lora', lora, steps: 4, checkpoints: { store, every: 2 }, overwrite: true, onEvent: (e) => e.type === 'plan' && early.cancel() });
    const none = await early.train();
    early.destroy();
    expect(none.losses).toHaveLength(0);
    expect(await snapshot()).toEqual(saved);
    // One that saves replaces it: its own checkpoints only, the latest its last.
    const fresh = await trainer({ method: 'lora', lora, steps: 4, checkpoints: { store, every: 2, keep: 3 }, overwrite: true });
    await fresh.train();
    fresh.destroy();
    expect((await store.list()).sort()).toEqual(['checkpoint-00000002', 'checkpoint-00000004']);
    expect(await latestCheckpoint(store)).toBe('checkpoint-00000004');
    expect(JSON.parse(new TextDecoder().decode((await store.read('checkpoint-00000004', 'trainer.json'))!)).totalSteps).toBe(4);
  });

  it('a lost device stops the run with a message naming the intact checkpoint; a new device resumes it exactly', async () => {
    const options: Partial<TrainerOptions> = { method: 'lora', lora, steps: 6 };
    const whole = await trainer(options);
    const want = await whole.train();
    whole.destroy();
    const gpu = await requestDevice({ label: 'to lose' });
    const store = memoryCheckpointStore();
    const t = await trainer({ ...options, checkpoints: { store, every: 2 }, onEvent: (e) => e.type === 'step' && e.step === 3 && gpu.device.destroy() }, gpu);
    const error = await t.train().catch((e) => e);
    expect(error).toBeInstanceOf(TrainingStoppedError);
    expect(error.message).toMatch(/training stopped at step \d: GPU device lost .*the checkpoint of step 2 in memory is intact: resume from it/);
    expect(await latestCheckpoint(store)).toBe('checkpoint-00000002');
    const again = await trainer({ ...options, checkpoints: { store }, resume: true });
    const tail = await again.train();
    again.destroy();
    expect(tail.losses).toEqual(want.losses.slice(2));
  });
});
