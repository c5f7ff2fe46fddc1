/**
 * What one steady-state training step asks of the device: compute dispatches, submits, bind groups
 * created, uniform bytes written and buffers created, counted by the engine (Gpu.work) over the third
 * step of a fine-tuner, so the figures are exact and the same on every run and device with the same
 * tuning. On a small model each dispatch costs more than its arithmetic (milliseconds on a CPU
 * implementation, microseconds on a GPU): these counts are the step's fixed cost.
 */
import { FineTuner, memorySource, openCheckpoint, tinyModelFiles, type FineTuneOptions, type Gpu, type GpuTuning, type TinyModelOptions, type WorkCounts } from '../src/index.js';
import { rng } from '../src/util/random.js';

export interface WorkConfig {
  name: string;
  options: TinyModelOptions;
  B: number;
  S: number;
}

/** GPT-2 with d 128 and 4 layers at 4 x 128 tokens: a small model whose step is nearly all per-dispatch cost. */
export const GPT2_D128: WorkConfig = {
  name: 'gpt2-d128-L4',
  options: { architecture: 'gpt2', seed: 3, hiddenSize: 128, intermediateSize: 512, numLayers: 4, numHeads: 4, maxPositions: 128 },
  B: 4,
  S: 128,
};

/** The methods counted, each as a user would start it (LoRA r 8 on q, k, v and the MLP's first layer). */
export const WORK_METHODS: Record<string, FineTuneOptions> = {
  full: { method: 'full' },
  lora: { method: 'lora', lora: { rank: 8, targetModules: ['q', 'k', 'v', 'fc'] } },
};

export interface StepWork extends Omit<WorkCounts, 'byKernel'> {
  /** Dispatches by kernel, most first. */
  byKernel: Record<string, number>;
}

/** The work of one training step after two (pipelines compiled, activation arena made, projections computed). */
export async function stepWork(gpu: Gpu, c: WorkConfig, options: FineTuneOptions): Promise<StepWork> {
  const ckpt = await openCheckpoint(memorySource(tinyModelFiles(c.options)));
  const ft = await FineTuner.create(gpu, ckpt, { ...options, optimizer: { lr: 1e-3 } });
  try {
    const rand = rng(1);
    const batch = () => ({ ids: Array.from({ length: c.B * c.S }, () => Math.floor(rand() * 256)), B: c.B, S: c.S });
    for (let s = 0; s < 2; s++) await ft.step(batch()); // GaLore's first step computes its projections
    const before = gpu.workCounts();
    await ft.step(batch());
    const { byKernel, ...counts } = gpu.workSince(before);
    return { ...counts, byKernel: Object.fromEntries([...byKernel].sort((a, b) => b[1] - a[1])) };
  } finally {
    ft.destroy();
  }
}

/** How a GPU runs a step: grouped products and the tiled attention kernels (the dispatch targets' terms). */
export const AS_ON_A_GPU: Partial<GpuTuning> = { groupedProducts: true, attentionVariant: 'tiled' };

/** stepWork with these tuning choices for its steps (a count: it does not depend on the device's speed). */
export async function stepWorkWith(gpu: Gpu, tuning: Partial<GpuTuning>, c: WorkConfig, options: FineTuneOptions): Promise<StepWork> {
  const chosen = { ...gpu.tuning };
  Object.assign(gpu.tuning, tuning);
  try {
    return await stepWork(gpu, c, options);
  } finally {
    Object.assign(gpu.tuning, chosen);
  }
}

export interface WorkRow extends StepWork {
  model: string;
  method: string;
  batch: string;
  /** Whether products that share buffers ran grouped (GpuTuning.groupedProducts). */
  products: 'grouped' | 'separate';
  /** Mean wall time of the timed steps, the methods' steps taken in turn. */
  step_ms: number;
}

/**
 * Each method's step on one model, timed in turn (one step of each, `rounds` times, so that the machine's
 * drift falls on all alike), with the work of each method's last step counted.
 */
export async function stepsInTurn(gpu: Gpu, c: WorkConfig, methods: Record<string, FineTuneOptions>, rounds: number, products: WorkRow['products']): Promise<WorkRow[]> {
  const ckpt = await openCheckpoint(memorySource(tinyModelFiles(c.options)));
  const tuners: [string, FineTuner][] = [];
  // The device's choice, set for these steps alone: every step reads it as it records.
  const chosen = gpu.tuning.groupedProducts;
  gpu.tuning.groupedProducts = products === 'grouped';
  try {
    for (const [name, options] of Object.entries(methods)) tuners.push([name, await FineTuner.create(gpu, ckpt, { ...options, optimizer: { lr: 1e-3 } })]);
    const rand = rng(1);
    const batch = () => ({ ids: Array.from({ length: c.B * c.S }, () => Math.floor(rand() * 256)), B: c.B, S: c.S });
    for (const [, ft] of tuners) for (let s = 0; s < 2; s++) await ft.step(batch());
    const ms = new Map<string, number>(tuners.map(([name]) => [name, 0]));
    const work = new Map<string, WorkCounts>();
    for (let r = 0; r < rounds; r++) {
      for (const [name, ft] of tuners) {
        const before = gpu.workCounts();
        const t0 = performance.now();
        await ft.step(batch());
        ms.set(name, ms.get(name)! + performance.now() - t0);
        work.set(name, gpu.workSince(before));
      }
    }
    return tuners.map(([name]) => {
      const { byKernel, ...counts } = work.get(name)!;
      return { model: c.name, method: name, batch: `${c.B}x${c.S}`, products, step_ms: ms.get(name)! / rounds, ...counts, byKernel: Object.fromEntries([...byKernel].sort((a, b) => b[1] - a[1])) };
    });
  } finally {
    for (const [, ft] of tuners) ft.destroy();
    gpu.tuning.groupedProducts = chosen;
  }
}
