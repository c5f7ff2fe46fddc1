/**
 * The Trainer's speed tricks, measured side by side on the shipped pretrained tiny base (LoRA r16 on
 * every linear layer) and its sample dataset of short, varied rows (next-letter.jsonl):
 *   - sample packing against one example per row: tokens of real data per second;
 *   - the automatic micro-batch against a fixed micro-batch of 1 (accumulated to the same batch);
 *   - the Trainer loop (its data order, events, pipelined loss readback) against bare FineTuner.step()
 *     calls on the same batches: the loop's overhead as a fraction of step time.
 * Runs are interleaved where they are compared, so a noisy machine slows both alike.
 */
import { loadDataset, loadTokenizer, openCheckpoint, Trainer, FineTuner, type Gpu, type ModelSource, type TrainerEvent, type TrainingData, type TrainerOptions } from '../src/index.js';

export interface TrainerBenchRow {
  name: string;
  steps: number;
  /** Mean over the timed steps (the first step of each run is warm-up and left out). */
  step_ms: number;
  tokens_per_s: number;
  micro_batch: number;
  padding: number;
}

export interface TrainerBenchResult {
  device: string;
  model: string;
  dataset: string;
  rows: TrainerBenchRow[];
  ratios: Record<string, number>;
  date: string;
}

const LORA = { method: 'lora' as const, lora: { rank: 16, targetModules: ['all-linear'] }, optimizer: { lr: 1e-3 } };

async function timedRun(gpu: Gpu, source: ModelSource, data: TrainingData, name: string, o: Partial<TrainerOptions>, steps: number): Promise<TrainerBenchRow> {
  const stepEvents: { at: number; tokens: number }[] = [];
  let micro = 0;
  const trainer = await Trainer.create(gpu, await openCheckpoint(source), data, {
    ...LORA, steps, batchSize: 8, ...o,
    onEvent: (e: TrainerEvent) => {
      if (e.type === 'step') stepEvents.push({ at: performance.now(), tokens: e.tokens });
      if (e.type === 'plan') micro = e.microBatch;
    },
  } as TrainerOptions);
  try {
    await trainer.train();
  } finally {
    trainer.destroy();
  }
  const timed = stepEvents.slice(1);
  const ms = timed[timed.length - 1].at - stepEvents[0].at;
  const tokens = timed.reduce((s, e) => s + e.tokens, 0);
  return { name, steps: timed.length, step_ms: ms / timed.length, tokens_per_s: (tokens / ms) * 1000, micro_batch: micro, padding: data.train.stats.waste };
}

/** The Trainer against bare step() calls on the very batches it would take, alternating, `rounds` times each. */
async function loopOverhead(gpu: Gpu, source: ModelSource, data: TrainingData, steps: number, rounds: number): Promise<{ trainer_ms: number; bare_ms: number }> {
  const trainerMs: number[] = [];
  const bareMs: number[] = [];
  const ckpt = await openCheckpoint(source);
  for (let r = 0; r < rounds; r++) {
    const t = await timedRun(gpu, source, data, 'loop', { microBatch: 8 }, steps + 1);
    trainerMs.push(t.step_ms);
    const ft = await FineTuner.create(gpu, ckpt, { ...LORA, optimizer: { lr: 1e-3, totalSteps: steps + 1, schedule: 'cosine' } });
    try {
      const batches = Array.from({ length: steps + 1 }, (_, s) => data.train.batch(Array.from({ length: 8 }, (_, i) => (s * 8 + i) % data.train.rows)));
      await ft.step(batches[0]); // warm-up, as the Trainer's first step is left out
      const t0 = performance.now();
      for (const b of batches.slice(1)) await ft.step(b);
      bareMs.push((performance.now() - t0) / steps);
    } finally {
      ft.destroy();
    }
  }
  const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
  return { trainer_ms: median(trainerMs), bare_ms: median(bareMs) };
}

export async function runTrainerBench(gpu: Gpu, source: ModelSource, datasetFile: { name: string; bytes: Uint8Array }, o: { steps?: number; log?: (line: string) => void } = {}): Promise<TrainerBenchResult> {
  const log = o.log ?? (() => undefined);
  const steps = o.steps ?? 5;
  const tokenizer = await loadTokenizer(source);
  const S = 64;
  const packed = await loadDataset(datasetFile, tokenizer, { seqLength: S });
  const unpacked = await loadDataset(datasetFile, tokenizer, { seqLength: S, pack: false });
  const rows: TrainerBenchRow[] = [];
  const add = (r: TrainerBenchRow) => {
    rows.push(r);
    log(`${r.name}: ${r.step_ms.toFixed(0)} ms/step, ${r.tokens_per_s.toFixed(0)} tokens/s of data, micro-batch ${r.micro_batch}, ${(100 * r.padding).toFixed(1)}% padding`);
    return r;
  };
  const packedRow = add(await timedRun(gpu, source, packed, 'packed', { microBatch: 'auto' }, steps + 1));
  const unpackedRow = add(await timedRun(gpu, source, unpacked, 'unpacked', { microBatch: 'auto' }, steps + 1));
  const batch1 = add(await timedRun(gpu, source, packed, 'packed, micro-batch 1', { microBatch: 1 }, steps + 1));
  const loop = await loopOverhead(gpu, source, packed, steps, 3);
  log(`trainer loop: ${loop.trainer_ms.toFixed(1)} ms/step against ${loop.bare_ms.toFixed(1)} ms/step of bare step() calls`);
  return {
    device: gpu.describe(),
    model: source.description,
    dataset: `${datasetFile.name}, rows of ${S} tokens, batch 8`,
    rows,
    ratios: {
      packing_vs_unpacked_throughput: packedRow.tokens_per_s / unpackedRow.tokens_per_s,
      auto_batch_vs_batch1_throughput: packedRow.tokens_per_s / batch1.tokens_per_s,
      trainer_loop_overhead: loop.trainer_ms / loop.bare_ms - 1,
      packed_padding: packed.train.stats.waste,
      unpacked_padding: unpacked.train.stats.waste,
    },
    date: new Date().toISOString(),
  };
}

export function formatTrainerBench(r: TrainerBenchResult): string {
  const lines = [`device: ${r.device}`, `model: ${r.model}; data: ${r.dataset}`, ''];
  lines.push(`${'run'.padEnd(24)} ${'ms/step'.padStart(9)} ${'tokens/s'.padStart(9)} ${'micro'.padStart(6)} ${'padding'.padStart(8)}`);
  for (const x of r.rows) lines.push(`${x.name.padEnd(24)} ${x.step_ms.toFixed(0).padStart(9)} ${x.tokens_per_s.toFixed(0).padStart(9)} ${String(x.micro_batch).padStart(6)} ${`${(100 * x.padding).toFixed(1)}%`.padStart(8)}`);
  lines.push('', 'ratios:', ...Object.entries(r.ratios).map(([k, v]) => `  ${k}: ${v.toFixed(3)}`));
  return lines.join('\n');
}
