/**
 * Training benchmark, runtime-neutral (Node: bench/train-node.ts; Chromium: bench/train-page.ts driven
 * by bench/train-chromium.ts). Per (model, method): step time, tokens/s, peak GPU memory and model FLOPs
 * utilization against this device's measured matmul peak; flash vs naive attention time and memory.
 * CPU implementations (SwiftShader) get smaller shapes; only ratios mean anything there.
 */
import {
  attentionBackward,
  attentionForward,
  blockSparseGrad,
  CausalLM,
  FineTuner,
  keepsScores,
  KEPT_SCORES_MAX_BYTES,
  keptScoresLength,
  matmul,
  matmulFlops,
  memorySource,
  methodDefinition,
  methodNames,
  naiveAttentionForward,
  naiveAttentionScratchBytes,
  openCheckpoint,
  paramSpecs,
  SHIPPED_MODELS,
  sparseGrad,
  tinyModelFiles,
  type BatchInput,
  type Checkpoint,
  type CommandRecorder,
  type FineTuneOptions,
  type Gpu,
  type MatmulVariant,
  type MethodName,
  type ModelConfig,
  type PreparedBatch,
  type TinyModelOptions,
  type WorkCounts,
} from '../src/index.js';
import { randomMask, selectMask } from '../src/methods/sparse/index.js';
import { GALORE_DEFAULTS } from '../src/methods/galore/config.js';
import { rng } from '../src/util/random.js';
import { quantizedModelFiles } from '../src/train/export.js';
import { bitsandbytesCheckpointFiles } from './bitsandbytes-checkpoint.js';
import { AS_ON_A_GPU, GPT2_D128, stepsInTurn, stepWorkWith, WORK_METHODS, type StepWork, type WorkRow } from './dispatches.js';

export interface TrainRow {
  model: string;
  /** A registered method, or 'lora-separate': LoRA with the adapter path as its own pass rather than fused into the base matmul. */
  method: string;
  batch: string;
  step_ms: number;
  tokens_per_s: number;
  peak_gpu_bytes: number;
  /** Bytes of the linear-layer weights as stored (16-bit bases halve them). */
  linear_weight_bytes: number;
  mfu: number;
  /** One training step split into its phases (wall time of each, recorded and run alone). */
  forward_ms: number;
  backward_ms: number;
  optimizer_ms: number;
  /** Bytes of the optimizer's state (AdamW's moments; GaLore's projections and projected moments). */
  optimizer_state_bytes: number;
  /** GaLore: one step that recomputes the projections (every updateGap steps). */
  refresh_step_ms?: number;
  /** What the last timed step asked of the device (bench/dispatches.ts): exact counts, not times. */
  dispatches_per_step?: number;
  submits_per_step?: number;
  bind_groups_per_step?: number;
  uniform_bytes_per_step?: number;
  buffers_per_step?: number;
}

/** The per-step work of a row, from the engine's counts. */
function workFields(w: WorkCounts): Pick<TrainRow, 'dispatches_per_step' | 'submits_per_step' | 'bind_groups_per_step' | 'uniform_bytes_per_step' | 'buffers_per_step'> {
  return { dispatches_per_step: w.dispatches, submits_per_step: w.submits, bind_groups_per_step: w.bindGroups, uniform_bytes_per_step: w.uniformBytes, buffers_per_step: w.buffersCreated };
}

/** Sylva-style mask selection on the large model: one calibration batch, every linear layer. */
export interface SelectionRow {
  model: string;
  seconds: number;
  layers: number;
  calibration_tokens: number;
  peak_gpu_bytes: number;
}

/** The masked weight-gradient kernels alone over every linear layer of the large model at 1%. */
export interface SparseGradRow {
  model: string;
  tokens: number;
  element_ms: number;
  block_ms: number;
  block_size: number;
}

export interface AttentionRow {
  seq: number;
  /** Forward, in the device's default kernel form. */
  flash_ms: number;
  /** Backward, default form (gradients in one buffer, as a training step holds them). */
  flash_backward_ms: number;
  /** Forward plus backward in each kernel form, at the longest sequence only. */
  tiled_fwd_bwd_ms?: number;
  blocked_fwd_bwd_ms?: number;
  /** The blocked backward recomputing the scores in its dK/dV pass, and keeping them from its dQ pass (short sequences). */
  blocked_backward_ms?: number;
  blocked_kept_backward_ms?: number;
  direct_fwd_bwd_ms?: number;
  naive_ms: number;
  flash_bytes: number;
  naive_bytes: number;
}

export interface TrainBenchResult {
  runtime: string;
  device: string;
  peakGflops: number;
  rows: TrainRow[];
  attention: AttentionRow[];
  selection: SelectionRow;
  sparse_grad: SparseGradRow;
  quantized_load: QuantizedLoadRow;
  work: WorkRow[];
  ratios: { flash_vs_naive_seq1024: number; flash_vs_naive_mem_seq1024: number; lora_vs_full_step: number; [k: string]: number };
  notes: string[];
  date: string;
}

export interface BenchModel {
  name: string;
  options: TinyModelOptions;
  B: number;
  S: number;
}

interface Preset {
  models: BenchModel[];
  steps: number;
  attentionSeqs: number[];
  attention: { nH: number; D: number };
  peakShape: [number, number, number];
}

const LARGE: TinyModelOptions = { architecture: 'llama', seed: 7, hiddenSize: 512, intermediateSize: 1376, numLayers: 8, numHeads: 8, numKvHeads: 8, maxPositions: 256 };

const PRESETS: Record<'software' | 'hardware', Preset> = {
  software: {
    models: [
      { name: 'tiny-llama', options: SHIPPED_MODELS['tiny-llama'], B: 8, S: 64 },
      { name: 'llama-d512-L8', options: LARGE, B: 1, S: 256 },
    ],
    steps: 2,
    attentionSeqs: [128, 256, 512, 1024],
    attention: { nH: 4, D: 64 },
    peakShape: [256, 1024, 256],
  },
  hardware: {
    models: [
      { name: 'tiny-llama', options: SHIPPED_MODELS['tiny-llama'], B: 32, S: 128 },
      { name: 'llama-d512-L8', options: LARGE, B: 8, S: 256 },
    ],
    steps: 10,
    attentionSeqs: [128, 256, 512, 1024],
    attention: { nH: 8, D: 64 },
    peakShape: [4096, 4096, 4096],
  },
};

/**
 * Training FLOPs per token actually performed: per matmul parameter 2 (forward) + 2 (input gradient)
 * + 2 (weight gradient, when the base trains; a frozen base under an adapter skips it), plus causal attention.
 * LoRA's own matrices are negligible at these ranks and left out.
 */
export function trainFlopsPerToken(c: ModelConfig, S: number, baseWeightGradients: boolean): number {
  const matmulParams = paramSpecs(c)
    .filter((p) => p.shape.length === 2 && p.name !== 'embed' && p.name !== 'pos_embed')
    .reduce((s, p) => s + p.shape[0] * p.shape[1], 0) + (c.tieWordEmbeddings ? c.vocabSize * c.hiddenSize : 0);
  const attention = 6 * c.numLayers * S * c.numHeads * c.headDim; // q k^T and P v over ~S/2 keys, times 3 for training
  return (baseWeightGradients ? 6 : 4) * matmulParams + attention;
}

/** Settings per method where its defaults would not show its cost (every method runs; these are extras). */
const ALL_LINEAR = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];
export const BENCH_OPTIONS: Partial<Record<MethodName, Partial<FineTuneOptions>>> = {
  lora: { lora: { rank: 16, targetModules: ALL_LINEAR } },
  sparse: { sparse: { selection: 'random', density: 0.01, targetModules: ALL_LINEAR } },
  'sparse+lora': { 'sparse+lora': { sparse: { selection: 'random', density: 0.01, targetModules: ALL_LINEAR }, lora: { rank: 16, targetModules: ALL_LINEAR } } },
  zo: { zo: { target: 'lora', lora: { rank: 16, targetModules: ALL_LINEAR } } },
  lisa: { lisa: { layers: 2 } },
};
/** Block side of the block-mask runs on the large model (Sylva uses 64; 1376 rows are tiled by 32, not 64). */
const BENCH_BLOCK = 32;

/**
 * One training step of `ft` on `input`, phase by phase: forward (with the method's training state and
 * zeroed gradients), backward, optimizer, each recorded and run on its own and timed to completion.
 */
async function stepPhases(ft: FineTuner, input: BatchInput): Promise<{ forward: number; backward: number; optimizer: number }> {
  const { gpu, model } = ft;
  const batch = model.prepare(input);
  // A forward-only method's step is forward passes: one of them, alone, is its forward phase.
  if (methodDefinition(ft.options.method).forwardOnly) return { forward: await inferenceForwardMs(model, batch), backward: 0, optimizer: 0 };
  const pass = { training: true, pass: 1 };
  const acts = model.activationsFor(batch.B, batch.S, 'train');
  acts.pin();
  try {
    acts.load(gpu, batch);
    const timed = async (record: (rec: CommandRecorder) => void) => {
      const t0 = performance.now();
      const rec = gpu.recorder();
      record(rec);
      await rec.submit();
      await gpu.sync();
      return performance.now() - t0;
    };
    const forward = await timed((rec) => {
      ft.method.readyToTrain?.(rec);
      model.zeroGrads(rec);
      ft.method.zeroGrads(rec);
      model.transformer.forward(rec, acts, pass);
    });
    const backward = await timed((rec) => model.transformer.backward(rec, acts, 1 / Math.max(batch.targetCount, 1), pass));
    const optimizer = await timed((rec) => ft.optimizer.record(rec, 1e-4));
    return { forward, backward, optimizer };
  } finally {
    acts.unpin();
  }
}

/**
 * One benchmark row: a warm-up step, `steps` timed steps of random tokens, one step by phase, and the
 * peak GPU bytes over all of it beyond what was allocated before.
 */
export async function measureStep(gpu: Gpu, ckpt: Checkpoint, m: BenchModel, method: string, opts: FineTuneOptions, steps: number, peakGflops: number): Promise<TrainRow> {
  gpu.resetPeakMemory();
  const base = gpu.memoryStats().currentBytes;
  const ft = await FineTuner.create(gpu, ckpt, opts);
  try {
    const rand = rng(1);
    const batch = () => ({ ids: Array.from({ length: m.B * m.S }, () => Math.floor(rand() * 256)), B: m.B, S: m.S });
    await ft.step(batch()); // warm-up: pipelines, activation arena
    const t0 = performance.now();
    let work = gpu.workCounts();
    for (let s = 0; s < steps; s++) {
      if (s === steps - 1) work = gpu.workCounts(); // counted over the last step: the counts are exact either way
      await ft.step(batch());
    }
    const stepMs = (performance.now() - t0) / steps;
    work = gpu.workSince(work);
    let refreshStepMs: number | undefined;
    const gap = opts.method === 'galore' ? opts.galore?.updateGap ?? GALORE_DEFAULTS.updateGap : 0;
    if (gap) {
      // A step at a multiple of the gap recomputes every projection: timed alone, to amortize over the gap.
      ft.optimizer.step = gap * Math.ceil((ft.optimizer.step + 1) / gap);
      const t1 = performance.now();
      await ft.step(batch());
      refreshStepMs = performance.now() - t1;
    }
    const phases = await stepPhases(ft, batch());
    const tokens = m.B * m.S;
    // A forward-only step is two forward passes: as many FLOPs as a training step without weight gradients.
    const flops = trainFlopsPerToken(ckpt.config, m.S, ft.model.trainableNames.length > 0 && !methodDefinition(opts.method).forwardOnly) * tokens;
    return {
      model: m.name, method, batch: `${m.B}x${m.S}`, step_ms: stepMs, tokens_per_s: tokens / (stepMs / 1000),
      peak_gpu_bytes: gpu.memoryStats().peakBytes - base, linear_weight_bytes: ft.model.linearWeightBytes, mfu: flops / (stepMs / 1000) / (peakGflops * 1e9),
      forward_ms: phases.forward, backward_ms: phases.backward, optimizer_ms: phases.optimizer,
      optimizer_state_bytes: [...ft.optimizer.stateViews().values()].reduce((n, v) => n + v.size, 0), refresh_step_ms: refreshStepMs,
      ...workFields(work),
    };
  } finally {
    ft.destroy();
  }
}

/** One inference forward pass (per-token losses) of the batch, recorded, run and waited for. */
async function inferenceForwardMs(model: CausalLM, batch: PreparedBatch): Promise<number> {
  const t0 = performance.now();
  const rec = model.gpu.recorder();
  const acts = model.record(rec, batch);
  try {
    await rec.submit();
    await model.gpu.sync();
  } finally {
    acts.unpin();
  }
  return performance.now() - t0;
}

/**
 * Inference on the same model and batch shape as a training row: the base loaded without anything
 * trainable, forward passes timed (step_ms is one pass), and the peak GPU bytes of loading plus passes.
 */
export async function measureInference(gpu: Gpu, ckpt: Checkpoint, m: BenchModel, steps: number): Promise<TrainRow> {
  gpu.resetPeakMemory();
  const base = gpu.memoryStats().currentBytes;
  const model = await CausalLM.fromCheckpoint(gpu, ckpt);
  try {
    const rand = rng(1);
    const batch = () => model.prepare({ ids: Array.from({ length: m.B * m.S }, () => Math.floor(rand() * 256)), B: m.B, S: m.S });
    await inferenceForwardMs(model, batch()); // warm-up
    let total = 0;
    for (let s = 0; s < steps; s++) total += await inferenceForwardMs(model, batch());
    const ms = total / steps;
    return {
      model: m.name, method: 'inference', batch: `${m.B}x${m.S}`, step_ms: ms, tokens_per_s: (m.B * m.S) / (ms / 1000), peak_gpu_bytes: gpu.memoryStats().peakBytes - base,
      linear_weight_bytes: model.linearWeightBytes, mfu: 0, forward_ms: ms, backward_ms: 0, optimizer_ms: 0, optimizer_state_bytes: 0,
    };
  } finally {
    model.destroy();
  }
}

export type TrainPreset = 'software' | 'hardware';

/** The preset a device gets unless one is named: small shapes on a CPU implementation. */
export function trainPreset(gpu: Gpu, preset?: TrainPreset): TrainPreset {
  return preset ?? (gpu.adapter.isSoftware ? 'software' : 'hardware');
}

/** The models and batch shapes a preset trains (the PyTorch reference of the GPU kit uses the same). */
export function trainBenchModels(preset: TrainPreset): Preset['models'] {
  return PRESETS[preset].models;
}

export async function runTrainBench(gpu: Gpu, options: { preset?: TrainPreset; log?: (l: string) => void } = {}): Promise<TrainBenchResult> {
  const preset = PRESETS[trainPreset(gpu, options.preset)];
  const log = options.log ?? (() => {});
  const notes: string[] = [];

  // Compute peak: the best matmul variant at one large shape.
  const [M, N, K] = preset.peakShape;
  const a = gpu.createBuffer(M * K * 4);
  const b = gpu.createBuffer(K * N * 4);
  const c = gpu.createBuffer(M * N * 4);
  let peakGflops = 0;
  for (const variant of ['tiled', 'direct'] as MatmulVariant[]) {
    await gpu.run((rec) => matmul(rec, { a, b, c, M, N, K, transB: true, variant }));
    for (let rep = 0; rep < 3; rep++) {
      const t0 = performance.now();
      await gpu.run((rec) => matmul(rec, { a, b, c, M, N, K, transB: true, variant }));
      peakGflops = Math.max(peakGflops, matmulFlops(M, N, K) / (performance.now() - t0) / 1e6); // best of three
    }
  }
  for (const x of [a, b, c]) gpu.destroyBuffer(x);
  log(`matmul peak ${peakGflops.toFixed(2)} GFLOP/s`);

  const rows: TrainRow[] = [];
  for (const m of preset.models) {
    const ckpt = await openCheckpoint(memorySource(tinyModelFiles(m.options)));
    const isLarge = m === preset.models[preset.models.length - 1];
    // Every registered method; on the large model also LoRA with its path as a separate pass.
    const variants: [string, FineTuneOptions][] = methodNames().map((name) => [name, { method: name, ...BENCH_OPTIONS[name], optimizer: { lr: 1e-4 } }]);
    // GaLore at r = hidden / 8, the rank its optimizer-memory target is stated at.
    variants.find(([name]) => name === 'galore')![1].galore = { rank: ckpt.config.hiddenSize / 8 };
    if (isLarge) {
      // Sparse fine-tuning with square blocks instead of single elements, the same density.
      variants.push(['sparse-block', { method: 'sparse', sparse: { ...BENCH_OPTIONS.sparse!.sparse, granularity: BENCH_BLOCK }, optimizer: { lr: 1e-4 } }]);
      variants.push(['lora-separate', { method: 'lora', lora: { ...BENCH_OPTIONS.lora!.lora, fused: false }, optimizer: { lr: 1e-4 } }]);
      // The same LoRA step over a frozen base stored bf16 and read packed by the matmul.
      variants.push(['lora-bf16-base', { method: 'lora', ...BENCH_OPTIONS.lora, baseDtype: 'bf16', optimizer: { lr: 1e-4 } }]);
      // QLoRA: the same LoRA step over a 4-bit base, quantized at load.
      variants.push(['qlora-nf4', { method: 'lora', ...BENCH_OPTIONS.lora, quantize: 'nf4', optimizer: { lr: 1e-4 } }]);
      variants.push(['qlora-int4', { method: 'lora', ...BENCH_OPTIONS.lora, quantize: 'int4', optimizer: { lr: 1e-4 } }]);
      // DoRA: the same adapter with a magnitude per output row, on the f32 and the NF4 base (QDoRA).
      variants.push(['dora', { method: 'lora', lora: { ...BENCH_OPTIONS.lora!.lora, dora: true }, optimizer: { lr: 1e-4 } }]);
      variants.push(['qdora-nf4', { method: 'lora', lora: { ...BENCH_OPTIONS.lora!.lora, dora: true }, quantize: 'nf4', optimizer: { lr: 1e-4 } }]);
      // Zeroth-order on every base parameter (MeZO's full model).
      variants.push(['zo-full', { method: 'zo', zo: { target: 'full' }, optimizer: { lr: 1e-6 } }]);
    }
    const inference = await measureInference(gpu, ckpt, m, preset.steps);
    rows.push(inference);
    log(`${m.name} inference: ${inference.step_ms.toFixed(0)} ms/forward, peak ${(inference.peak_gpu_bytes / 2 ** 20).toFixed(1)} MiB`);
    for (const [method, opts] of variants) {
      const row = await measureStep(gpu, ckpt, m, method, opts, preset.steps, peakGflops);
      rows.push(row);
      log(`${m.name} ${method}: ${row.step_ms.toFixed(0)} ms/step (forward ${row.forward_ms.toFixed(0)}, backward ${row.backward_ms.toFixed(0)}, optimizer ${row.optimizer_ms.toFixed(0)}), ${row.tokens_per_s.toFixed(0)} tokens/s, peak ${(row.peak_gpu_bytes / 2 ** 20).toFixed(1)} MiB, MFU ${(100 * row.mfu).toFixed(1)}%`);
    }
  }
  // The small GPT-2 whose step is nearly all per-dispatch cost: full and LoRA in turn, with their counts.
  const work: WorkRow[] = [];
  for (const products of ['grouped', 'separate'] as const) work.push(...(await stepsInTurn(gpu, GPT2_D128, WORK_METHODS, preset.steps + 1, products)));
  for (const w of work) log(`${w.model} ${w.method} (${w.products} products): ${w.step_ms.toFixed(0)} ms/step, ${w.dispatches} dispatches, ${w.submits} submits, ${w.bindGroups} bind groups made, ${w.uniformBytes} uniform bytes, ${w.buffersCreated} buffers made`);
  // The dispatch targets are a GPU's: counted with its choices whatever this device would choose.
  const onGpu: Record<string, StepWork> = {};
  for (const [m, o] of Object.entries(WORK_METHODS)) onGpu[m] = await stepWorkWith(gpu, AS_ON_A_GPU, GPT2_D128, o);
  for (const [m, w] of Object.entries(onGpu)) log(`${GPT2_D128.name} ${m} as a GPU runs it (grouped products, tiled attention): ${w.dispatches} dispatches`);
  notes.push(`work: ${GPT2_D128.name} (GPT-2, d ${GPT2_D128.options.hiddenSize}, ${GPT2_D128.options.numLayers} layers, ${GPT2_D128.B} x ${GPT2_D128.S} tokens), full and LoRA r8 on q, k, v and fc, steps taken in turn, with grouped products (GPUs' default) and without (SwiftShader's); dispatches and the other counts are what one steady-state step asks of the device, counted by the engine (exact, the same on every run). Each row has the same counts over its last timed step.`);

  const largeModel = preset.models[preset.models.length - 1];
  const selection = await benchSelection(gpu, largeModel);
  log(`mask selection (sylva) on ${selection.model}: ${selection.seconds.toFixed(1)} s for ${selection.layers} layers, peak ${(selection.peak_gpu_bytes / 2 ** 20).toFixed(1)} MiB`);
  const load = await benchQuantizedLoad(gpu, largeModel);
  log(`loading ${load.model} 4-bit (nf4): quantized as it loads ${load.quantize_at_load_ms.toFixed(0)} ms, from a 4-bit checkpoint ${load.prequantized_ms.toFixed(0)} ms (${(load.prequantized_bytes / 2 ** 20).toFixed(1)} MiB of files vs ${(load.f32_bytes / 2 ** 20).toFixed(1)} MiB), from bitsandbytes' ${load.bitsandbytes_ms.toFixed(0)} ms`);
  notes.push('prequantized_vs_quantize_load: loading the large model with its linear weights NF4, quantized on the GPU as each f32 tensor loads, over loading the same model from the 4-bit checkpoint it saved (packed arrays straight to the GPU); both from memory, each waited for on the GPU.');
  notes.push('bitsandbytes_vs_quantize_load: the same, over loading the same codes from a checkpoint in bitsandbytes\' format (bytes re-packed on the host, then straight to the GPU).');
  const sparseGrad = await benchSparseGrad(gpu, largeModel);
  log(`masked weight gradients at 1% (${sparseGrad.tokens} tokens): elements ${sparseGrad.element_ms.toFixed(1)} ms, ${BENCH_BLOCK}x${BENCH_BLOCK} blocks ${sparseGrad.block_ms.toFixed(1)} ms`);
  notes.push(`sparse: 1% of every linear layer's elements (random mask), trained in place; sparse-block: the same density in ${BENCH_BLOCK}x${BENCH_BLOCK} blocks (large model only: the tiny model's 172 rows are not tiled by blocks); sparse+lora: that mask plus LoRA r16 on every linear layer.`);
  notes.push('forward_ms / backward_ms / optimizer_ms: one step split into phases, each recorded, submitted and waited for on its own (so their sum exceeds step_ms by the per-submit overhead).');
  notes.push('mask_selection_seconds_per_layer: Sylva selection (one calibration batch of the benchmark shape, K-FAC factors, saliency, top-k) over every linear layer of the large model, per layer.');
  notes.push('sparse_block_vs_element_grad: time of the masked weight-gradient kernels alone for every linear layer of the large model at 1% density, blocks over elements.');
  notes.push('lora-separate: the same LoRA step with the adapter path as its own pass over each output and input gradient instead of fused into the base matmul (lora_fused_vs_separate_step: its step time over the fused one).');
  notes.push('lora-bf16-base: the same LoRA step with the frozen base stored bf16, read packed by the matmul (lora_bf16_base_vs_f32_step; bf16_base_bytes_vs_f32: its linear-weight bytes over the f32 base).');
  notes.push('qlora-nf4 / qlora-int4: the same LoRA step with the frozen base stored 4-bit (NF4 with absmax per 64; int4 with groups of 64), read by the fused 4-bit products (qlora_vs_lora_step, qlora_int4_vs_lora_step; qlora_base_bytes_vs_f32: NF4 linear-weight bytes over the f32 base).');
  notes.push('dora / qdora-nf4: the LoRA step with DoRA (a magnitude per output row; the norm of W + s B A recomputed each pass from A W^T and A A^T, the unscaled output kept for the magnitude gradient) on the f32 and the NF4 base (lora_dora_vs_lora_step, qdora_vs_qlora_step, and their peaks).');
  notes.push('inference: the base alone (nothing trainable) and forward passes of the same batch (step_ms: one pass). zo: zeroth-order (MeZO) on LoRA r16 over every linear layer, one direction per step: two forward passes plus the perturbation and update passes; zo-full: the same on every base parameter. zo_*_peak_vs_inference_peak: its peak over inference\'s; zo_step_vs_two_forwards: its step over two forward passes of the same model (forward_ms, timed alone).');
  notes.push('galore: GaLore at r = hidden / 8 on every linear layer (T 200, α 0.25), AdamW for the rest; galore_optimizer_bytes_vs_adamw: its optimizer state over full fine-tuning\'s AdamW moments; galore_step_amortized_vs_full_step: a step recomputing the projections once every 200 steps (refresh_step_ms) amortized with 199 plain ones. lisa: LISA with 2 of the layers sampled (the embeddings and head always train).');
  notes.push('MFU: FLOPs performed (6 per matmul parameter per token for full fine-tuning, 4 for LoRA whose frozen base needs no weight gradients, plus causal attention) over the measured matmul peak.');

  const attention: AttentionRow[] = [];
  const { nH, D } = preset.attention;
  for (const S of preset.attentionSeqs) {
    const n = S * nH * D;
    const rand = rng(S);
    const data = () => Float32Array.from({ length: n }, () => rand() * 2 - 1);
    const [q, k, v] = [gpu.upload(data()), gpu.upload(data()), gpu.upload(data())];
    const o = gpu.createBuffer(n * 4);
    const stats = gpu.createBuffer(S * nH * 2 * 4);
    const scores = gpu.createBuffer(naiveAttentionScratchBytes(1, S, nH));
    // The gradients share a buffer, as a training step holds them: the tiled and blocked backward passes
    // then run in one dispatch.
    const dO = gpu.upload(data());
    // With room after them for the scores, where the blocked backward keeps them at this length.
    const kept = keepsScores('blocked', 1, S, nH) ? keptScoresLength(1, S, nH) : 0;
    const dQKV = gpu.createBuffer((3 * n + kept) * 4);
    const [dQ, dK, dV, keptScores] = [0, 1, 2, 3].map((i) => ({ buffer: dQKV, offset: i * n * 4, size: (i < 3 ? n : kept) * 4 }));
    const shape = { B: 1, S, nH, nKV: nH, headDim: D, q, k, v, o, stats };
    const grads = { ...shape, dO, dQ, dK, dV };
    const time = async (record: (rec: CommandRecorder) => void) => {
      await gpu.run(record); // warm-up
      const t0 = performance.now();
      await gpu.run(record);
      return performance.now() - t0;
    };
    const flashMs = await time((rec) => attentionForward(rec, shape));
    const backwardMs = await time((rec) => attentionBackward(rec, grads));
    const naiveMs = await time((rec) => naiveAttentionForward(rec, { ...shape, scores }));
    const row: AttentionRow = {
      seq: S, flash_ms: flashMs, flash_backward_ms: backwardMs, naive_ms: naiveMs,
      flash_bytes: n * 4 + S * nH * 8, naive_bytes: n * 4 + naiveAttentionScratchBytes(1, S, nH),
    };
    if (kept) {
      row.blocked_backward_ms = await time((rec) => attentionBackward(rec, { ...grads, variant: 'blocked' }));
      row.blocked_kept_backward_ms = await time((rec) => attentionBackward(rec, { ...grads, variant: 'blocked', keptScores }));
    }
    if (S === preset.attentionSeqs[preset.attentionSeqs.length - 1]) {
      for (const variant of ['tiled', 'blocked', 'direct'] as const) {
        const ms = await time((rec) => {
          attentionForward(rec, { ...shape, variant });
          attentionBackward(rec, { ...grads, variant });
        });
        row[`${variant}_fwd_bwd_ms`] = ms;
      }
    }
    attention.push(row);
    log(`attention S=${S}: flash ${flashMs.toFixed(1)} ms (backward ${backwardMs.toFixed(1)} ms), naive ${naiveMs.toFixed(1)} ms`);
    for (const x of [q, k, v, o, stats, scores, dO, dQKV]) gpu.destroyBuffer(x);
  }
  notes.push(`Attention: B=1, ${nH} heads of ${D}; naive is forward only. Memory is the workspace beyond q, k, v (output and log-sum-exp for flash; output and the S x S probabilities for naive). At the longest sequence, forward plus backward runs in each kernel form (tiled: K/V or Q/dO tiles shared through workgroup memory; blocked: 32 x 32 score blocks in workgroup memory, register-blocked as a matmul is; direct: one invocation per row reading storage). Where the scores fit in ${KEPT_SCORES_MAX_BYTES >> 20} MiB, the blocked backward is timed alone twice: its dK/dV pass computing the scores again (blocked_backward_ms) and reading them as its dQ pass kept them (blocked_kept_backward_ms).`);

  const at1024 = attention.find((r) => r.seq === 1024)!;
  const at256 = attention.find((r) => r.seq === 256)!;
  const large = preset.models[preset.models.length - 1].name;
  const row = (method: string) => rows.find((r) => r.model === large && r.method === method)!;
  const tinyRow = (method: string) => rows.find((r) => r.model === preset.models[0].name && r.method === method)!;
  const workRow = (method: string, products: WorkRow['products'] = 'grouped') => work.find((r) => r.method === method && r.products === products)!;
  const step = (method: string) => row(method).step_ms;
  return {
    runtime: gpu.runtime === 'node' ? 'node' : 'chromium',
    device: gpu.describe(),
    peakGflops,
    rows,
    attention,
    selection,
    sparse_grad: sparseGrad,
    quantized_load: load,
    work,
    ratios: {
      dispatches_per_step_full_tiny: tinyRow('full').dispatches_per_step!,
      dispatches_per_step_lora_tiny: tinyRow('lora').dispatches_per_step!,
      lora_vs_full_step_tiny: tinyRow('lora').step_ms / tinyRow('full').step_ms,
      dispatches_per_step_full_gpt2_d128: onGpu.full.dispatches,
      dispatches_per_step_lora_gpt2_d128: onGpu.lora.dispatches,
      lora_vs_full_step_gpt2_d128: workRow('lora').step_ms / workRow('full').step_ms,
      dispatches_per_step_full_gpt2_d128_separate: workRow('full', 'separate').dispatches,
      dispatches_per_step_lora_gpt2_d128_separate: workRow('lora', 'separate').dispatches,
      lora_vs_full_step_gpt2_d128_separate: workRow('lora', 'separate').step_ms / workRow('full', 'separate').step_ms,
      flash_vs_naive_seq1024: at1024.naive_ms / at1024.flash_ms,
      flash_vs_naive_mem_seq1024: at1024.naive_bytes / at1024.flash_bytes,
      attention_tiled_vs_direct_seq1024: at1024.direct_fwd_bwd_ms! / at1024.tiled_fwd_bwd_ms!,
      attention_blocked_vs_tiled_seq1024: at1024.blocked_fwd_bwd_ms! / at1024.tiled_fwd_bwd_ms!,
      attention_backward_kept_vs_recomputed_seq256: at256.blocked_kept_backward_ms! / at256.blocked_backward_ms!,
      lora_vs_full_step: step('lora') / step('full'),
      lora_fused_vs_separate_step: step('lora-separate') / step('lora'),
      lora_bf16_base_vs_f32_step: step('lora-bf16-base') / step('lora'),
      bf16_base_bytes_vs_f32: row('lora-bf16-base').linear_weight_bytes / row('lora').linear_weight_bytes,
      qlora_vs_lora_step: step('qlora-nf4') / step('lora'),
      qlora_int4_vs_lora_step: step('qlora-int4') / step('lora'),
      qlora_base_bytes_vs_f32: row('qlora-nf4').linear_weight_bytes / row('lora').linear_weight_bytes,
      qlora_vs_lora_peak_memory: row('qlora-nf4').peak_gpu_bytes / row('lora').peak_gpu_bytes,
      ...adapterRatios(row),
      prequantized_vs_quantize_load: load.quantize_at_load_ms / load.prequantized_ms,
      bitsandbytes_vs_quantize_load: load.quantize_at_load_ms / load.bitsandbytes_ms,
      lora_vs_full_peak_memory: row('lora').peak_gpu_bytes / row('full').peak_gpu_bytes,
      sparse_vs_lora_step: step('sparse') / step('lora'),
      sparse_block_vs_lora_step: step('sparse-block') / step('lora'),
      sparse_lora_vs_lora_step: step('sparse+lora') / step('lora'),
      sparse_vs_lora_peak_memory: row('sparse').peak_gpu_bytes / row('lora').peak_gpu_bytes,
      sparse_block_vs_element_grad: sparseGrad.block_ms / sparseGrad.element_ms,
      mask_selection_seconds_per_layer: selection.seconds / selection.layers,
      ...frugalRatios(row),
    },
    notes,
    date: new Date().toISOString(),
  };
}

/** A (model's) row by method. */
export type RowOf = (method: string) => TrainRow;

/** The memory-frugal methods against full fine-tuning, LoRA and inference (bench:train, bench:frugal). */
export function frugalRatios(row: RowOf): Record<string, number> {
  const step = (method: string) => row(method).step_ms;
  const gap = GALORE_DEFAULTS.updateGap;
  return {
    zo_lora_peak_vs_inference_peak: row('zo').peak_gpu_bytes / row('inference').peak_gpu_bytes,
    zo_full_peak_vs_inference_peak: row('zo-full').peak_gpu_bytes / row('inference').peak_gpu_bytes,
    // Against two forward passes of the same model (its adapter included), timed alone.
    zo_step_vs_two_forwards: step('zo') / (2 * row('zo').forward_ms),
    zo_full_step_vs_two_forwards: step('zo-full') / (2 * row('zo-full').forward_ms),
    galore_optimizer_bytes_vs_adamw: row('galore').optimizer_state_bytes / row('full').optimizer_state_bytes,
    galore_step_vs_full_step: step('galore') / step('full'),
    galore_step_amortized_vs_full_step: (step('galore') * (gap - 1) + row('galore').refresh_step_ms!) / gap / step('full'),
    lisa_peak_vs_full_peak: row('lisa').peak_gpu_bytes / row('full').peak_gpu_bytes,
    lisa_peak_vs_lora_peak: row('lisa').peak_gpu_bytes / row('lora').peak_gpu_bytes,
    lisa_step_vs_full_step: step('lisa') / step('full'),
  };
}

/** DoRA against LoRA, on the f32 and the NF4 base (bench:train, bench:adapters). */
export function adapterRatios(row: RowOf): Record<string, number> {
  return {
    lora_dora_vs_lora_step: row('dora').step_ms / row('lora').step_ms,
    qdora_vs_qlora_step: row('qdora-nf4').step_ms / row('qlora-nf4').step_ms,
    dora_vs_lora_peak_memory: row('dora').peak_gpu_bytes / row('lora').peak_gpu_bytes,
    qdora_vs_qlora_peak_memory: row('qdora-nf4').peak_gpu_bytes / row('qlora-nf4').peak_gpu_bytes,
  };
}

export interface QuantizedLoadRow {
  model: string;
  quantize_at_load_ms: number;
  prequantized_ms: number;
  /** From the same codes in bitsandbytes' checkpoint format (a `*-bnb-4bit` upload). */
  bitsandbytes_ms: number;
  f32_bytes: number;
  prequantized_bytes: number;
  bitsandbytes_bytes: number;
}

/** Loading a model NF4: quantized as it loads from f32 files, and from the 4-bit checkpoint it saves. */
export async function benchQuantizedLoad(gpu: Gpu, m: BenchModel): Promise<QuantizedLoadRow> {
  const files = tinyModelFiles(m.options);
  const timeLoad = async (f: Record<string, string | Uint8Array>, quantize?: 'nf4') => {
    const t0 = performance.now();
    const model = await CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource(f)), { quantize });
    await gpu.sync();
    return { model, ms: performance.now() - t0 };
  };
  const atLoad = await timeLoad(files, 'nf4');
  const saved = await quantizedModelFiles(atLoad.model);
  atLoad.model.destroy();
  const f32 = await CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource(files)));
  const bnb = await bitsandbytesCheckpointFiles(f32);
  f32.destroy();
  const pre = await timeLoad({ ...files, ...saved });
  pre.model.destroy();
  const fromBnb = await timeLoad({ ...files, ...bnb });
  fromBnb.model.destroy();
  const bytes = (f: Record<string, string | Uint8Array>) => Object.values(f).reduce((n, v) => n + (typeof v === 'string' ? v.length : v.byteLength), 0);
  return {
    model: m.name, quantize_at_load_ms: atLoad.ms, prequantized_ms: pre.ms, bitsandbytes_ms: fromBnb.ms,
    f32_bytes: bytes(files), prequantized_bytes: bytes({ ...files, ...saved }), bitsandbytes_bytes: bytes({ ...files, ...bnb }),
  };
}

/** Sylva selection on a model: one calibration batch of its benchmark shape. */
async function benchSelection(gpu: Gpu, m: BenchModel): Promise<SelectionRow> {
  const model = await CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource(tinyModelFiles(m.options))));
  try {
    const rand = rng(3);
    const batch = { ids: Array.from({ length: m.B * m.S }, () => Math.floor(rand() * 256)), B: m.B, S: m.S };
    const { cost } = await selectMask(model, [batch], { selection: 'sylva', density: 0.01, targetModules: ALL_LINEAR });
    return { model: m.name, seconds: cost.seconds, layers: cost.layers, calibration_tokens: cost.calibrationTokens, peak_gpu_bytes: cost.peakGpuBytes };
  } finally {
    model.destroy();
  }
}

/** The masked weight-gradient kernels for every linear layer of a model, element vs block masks at 1%. */
async function benchSparseGrad(gpu: Gpu, m: BenchModel): Promise<SparseGradRow> {
  const config = (await openCheckpoint(memorySource(tinyModelFiles(m.options)))).config;
  const T = m.B * m.S;
  const element = randomMask(config, { density: 0.01, targetModules: ALL_LINEAR, seed: 1 });
  const block = randomMask(config, { density: 0.01, granularity: BENCH_BLOCK, targetModules: ALL_LINEAR, seed: 1 });
  const made: GPUBuffer[] = [];
  const upload = (data: Float32Array | Uint32Array) => {
    const b = gpu.upload(data);
    made.push(b);
    return b;
  };
  const rand = rng(5);
  const widest = Math.max(...[...element.entries.values()].flatMap((e) => [e.rows, e.cols]));
  const dY = upload(Float32Array.from({ length: T * widest }, () => rand() - 0.5));
  const x = upload(Float32Array.from({ length: T * widest }, () => rand() - 0.5));
  const out = gpu.createBuffer(Math.max(element.totalNnz, block.totalNnz) * 4);
  made.push(out);
  const elementArgs = [...element.entries].map(([name, e]) => ({ indices: upload(e.indices), nnz: e.indices.length, N: e.rows, K: e.cols, name }));
  const blockArgs = [...block.entries].map(([, e]) => ({ blocks: upload(e.indices), numBlocks: e.indices.length, N: e.rows, K: e.cols }));
  const time = async (record: (rec: CommandRecorder) => void) => {
    await gpu.run(record); // warm-up
    const t0 = performance.now();
    await gpu.run(record);
    return performance.now() - t0;
  };
  try {
    const elementMs = await time((rec) => {
      for (const a of elementArgs) sparseGrad(rec, { indices: a.indices, nnz: a.nnz, dY, x, T, N: a.N, K: a.K, out });
    });
    const blockMs = await time((rec) => {
      for (const a of blockArgs) blockSparseGrad(rec, { blocks: a.blocks, numBlocks: a.numBlocks, blockSize: BENCH_BLOCK, dY, x, T, N: a.N, K: a.K, out });
    });
    return { model: m.name, tokens: T, element_ms: elementMs, block_ms: blockMs, block_size: BENCH_BLOCK };
  } finally {
    for (const b of made) gpu.destroyBuffer(b);
  }
}

export function formatTrainBench(r: TrainBenchResult): string {
  const lines = [`device: ${r.device}   matmul peak ${r.peakGflops.toFixed(2)} GFLOP/s`, ''];
  lines.push(`${'model'.padEnd(16)} ${'method'.padEnd(14)} ${'batch'.padEnd(8)} ${'step ms'.padStart(10)} ${'fwd ms'.padStart(9)} ${'bwd ms'.padStart(9)} ${'opt ms'.padStart(8)} ${'tokens/s'.padStart(10)} ${'peak MiB'.padStart(9)} ${'MFU'.padStart(7)} ${'dispatches'.padStart(10)}`);
  for (const x of r.rows) {
    lines.push(`${x.model.padEnd(16)} ${x.method.padEnd(14)} ${x.batch.padEnd(8)} ${x.step_ms.toFixed(1).padStart(10)} ${x.forward_ms.toFixed(1).padStart(9)} ${x.backward_ms.toFixed(1).padStart(9)} ${x.optimizer_ms.toFixed(1).padStart(8)} ${x.tokens_per_s.toFixed(0).padStart(10)} ${(x.peak_gpu_bytes / 2 ** 20).toFixed(1).padStart(9)} ${`${(100 * x.mfu).toFixed(1)}%`.padStart(7)} ${String(x.dispatches_per_step ?? '').padStart(10)}`);
  }
  lines.push('', `${'model'.padEnd(16)} ${'method'.padEnd(14)} ${'batch'.padEnd(8)} ${'step ms'.padStart(10)} ${'dispatches'.padStart(10)} ${'submits'.padStart(8)} ${'bind groups'.padStart(11)} ${'uniform B'.padStart(10)} ${'buffers'.padStart(8)}`);
  for (const w of r.work) {
    lines.push(`${w.model.padEnd(16)} ${`${w.method} ${w.products}`.padEnd(14)} ${w.batch.padEnd(8)} ${w.step_ms.toFixed(1).padStart(10)} ${String(w.dispatches).padStart(10)} ${String(w.submits).padStart(8)} ${String(w.bindGroups).padStart(11)} ${String(w.uniformBytes).padStart(10)} ${String(w.buffersCreated).padStart(8)}`);
  }
  lines.push('', `mask selection (sylva, ${r.selection.model}): ${r.selection.seconds.toFixed(1)} s for ${r.selection.layers} layers (${r.selection.calibration_tokens} calibration tokens), peak ${(r.selection.peak_gpu_bytes / 2 ** 20).toFixed(1)} MiB`);
  lines.push(`masked weight gradients at 1% (${r.sparse_grad.model}, ${r.sparse_grad.tokens} tokens): elements ${r.sparse_grad.element_ms.toFixed(1)} ms, ${r.sparse_grad.block_size}x${r.sparse_grad.block_size} blocks ${r.sparse_grad.block_ms.toFixed(1)} ms`);
  lines.push('', `${'seq'.padStart(6)} ${'flash ms'.padStart(10)} ${'bwd ms'.padStart(10)} ${'naive ms'.padStart(10)} ${'flash MiB'.padStart(10)} ${'naive MiB'.padStart(10)}`);
  for (const a of r.attention) {
    lines.push(`${String(a.seq).padStart(6)} ${a.flash_ms.toFixed(1).padStart(10)} ${a.flash_backward_ms.toFixed(1).padStart(10)} ${a.naive_ms.toFixed(1).padStart(10)} ${(a.flash_bytes / 2 ** 20).toFixed(2).padStart(10)} ${(a.naive_bytes / 2 ** 20).toFixed(2).padStart(10)}`);
  }
  lines.push('', 'ratios:');
  for (const [k, v] of Object.entries(r.ratios)) lines.push(`  ${k.padEnd(30)} ${v.toFixed(2)}`);
  for (const n of r.notes) lines.push(`note: ${n}`);
  return lines.join('\n');
}
