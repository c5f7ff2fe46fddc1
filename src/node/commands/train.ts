/**
 * `webgpu-finetune train`: fine-tune a model on a dataset with any method, with a live progress bar,
 * checkpoints in the output folder (Ctrl-C stops after the current step and writes one; --resume
 * continues), greedy generations of held-out prompts before and after, and the result exported in the
 * method's formats (and as a merged model with --merge).
 */
import { mkdir } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import cliProgress from 'cli-progress';
import { writeFileAtomic } from '../../io/files.js';
import { methodDefinition, methodLearningRate, methodNames } from '../../methods/registry.js';
import type { Example } from '../../data/examples.js';
import type { TrainingData } from '../../data/dataset.js';
import { mergedModelFiles } from '../../train/export.js';
import type { FineTuner } from '../../train/finetuner.js';
import { Trainer, type TrainerEvent, type TrainerOptions } from '../../train/trainer.js';
import { loadProgress } from '../../train/progress.js';
import { TRAINING_DEFAULTS } from '../../train/defaults.js';
import { progressReporter } from '../progress.js';
import { Generator } from '../../serve/generate.js';
import { folderCheckpointStore } from '../checkpoint-folder.js';
import { choiceFlag, HELP_FLAG, numberFlag, optionalNumber, UsageError, type Command, type FlagTable, type FlagValues } from '../flags.js';
import { DATA_FLAGS, datasetFromFlags, describeDataset, MODEL_FLAGS, openModel, readDataFlags, type OpenedModel } from '../setup.js';
import { methodFlagTable, methodFromFlags, readMethodFlags } from '../method-flags.js';
import { planRunFolder, RUN_FILE, runFlags } from '../run-folder.js';

const D = TRAINING_DEFAULTS;

/** A method's default rate as help shows it ('zo 0.0001 (by its options)' where the options change it). */
function learningRateShown(name: string): string {
  const definition = methodDefinition(name);
  return `${name} ${methodLearningRate(definition)}${typeof definition.learningRate === 'function' ? ' (by its options)' : ''}`;
}

/** The flags, made when asked: a method registered after this module loaded has its flags here. */
const trainFlags = (): FlagTable => ({
  ...MODEL_FLAGS,
  ...DATA_FLAGS,
  ...methodFlagTable(),
  steps: { type: 'string', value: 'N', help: 'optimizer steps (default: --epochs over the data)' },
  epochs: { type: 'string', value: 'E', default: String(D.epochs), help: 'passes over the training rows, when --steps is not given' },
  'batch-size': { type: 'string', value: 'B', default: String(D.batchSize), help: 'rows per optimizer step' },
  'micro-batch': { type: 'string', value: 'auto|N', default: 'auto', help: 'rows per pass: the largest that fits, or a divisor of --batch-size' },
  'gradient-checkpointing': { type: 'string', value: 'auto|on|off', default: 'auto', help: 'recompute layers in the backward pass to save memory (auto: only when nothing fits without)' },
  lr: { type: 'string', value: 'X', shownDefault: `the method's: ${methodNames().map((n) => learningRateShown(n)).join(', ')}`, help: 'peak learning rate' },
  schedule: { type: 'string', value: 'cosine|linear|constant', default: D.schedule, help: 'learning-rate decay after warmup' },
  'warmup-ratio': { type: 'string', value: 'X', default: String(D.warmupRatio), help: 'warmup as a fraction of the steps' },
  'weight-decay': { type: 'string', value: 'X', default: String(D.weightDecay), help: 'AdamW weight decay' },
  'max-grad-norm': { type: 'string', value: 'X', default: String(D.maxGradNorm), help: 'global gradient clipping (0: off)' },
  seed: { type: 'string', value: 'S', default: String(D.seed), help: 'seed of the row order' },
  'eval-every': { type: 'string', value: 'N', help: 'evaluate on the held-out rows every N steps (always at the end)' },
  output: { type: 'string', value: 'DIR', help: 'where checkpoints and exports go (default runs/<model>-<method>)' },
  'save-every': { type: 'string', value: 'N', default: String(D.checkpointEvery), help: 'write a checkpoint every N steps (and at the end)' },
  keep: { type: 'string', value: 'N', default: String(D.checkpointsKept), help: 'checkpoints kept' },
  resume: { type: 'boolean', help: 'continue from the latest checkpoint in --output, also with changed options (the same options continue without it)' },
  overwrite: { type: 'boolean', help: 'start over in an --output that holds a run (its files go once the new run saves a checkpoint)' },
  merge: { type: 'boolean', help: 'also write the merged model (a Hugging Face folder) to <output>/merged (always, for a method with no adapter format)' },
  samples: { type: 'string', value: 'N', default: '4', help: 'held-out prompts generated before and after' },
  'log-json': { type: 'boolean', help: 'print every event as a JSON line instead of the progress bar' },
  help: HELP_FLAG,
});

export const trainCommand: Command = {
  name: 'train',
  summary: 'fine-tune a model on a dataset (defaults: the shipped tiny base, LoRA, on the shipped sample dataset)',
  examples: [
    ['--steps 40', 'LoRA on the shipped tiny base and sample dataset'],
    ['--model Qwen/Qwen2.5-0.5B --data rows.jsonl --quantize nf4 --output runs/qwen', 'QLoRA on your rows (prompt/completion, text or chat messages)'],
    ['--method sparse --density 0.01 --data rows.jsonl', 'sparse fine-tuning: a Sylva mask chosen on the rows, then trained in place'],
    ['--model Qwen/Qwen2.5-0.5B --data rows.jsonl --quantize nf4 --output runs/qwen --steps 2000 --resume', 'continue that run with a changed option (here more steps)'],
  ],
  get flags() {
    return trainFlags();
  },
  run: train,
};

async function train(values: FlagValues): Promise<void> {
  const json = Boolean(values['log-json']);
  const log = json ? () => undefined : (line: string) => console.log(line);
  // Every number is read before anything loads, so a bad value costs nothing.
  const steps = optionalNumber(values, 'steps', { integer: true, min: 1, max: 1e9 });
  const epochs = numberFlag(values, 'epochs', { above: 0, max: 1e6 });
  const batchSize = numberFlag(values, 'batch-size', { integer: true, min: 1, max: 65536 });
  const microBatch = values['micro-batch'] === 'auto' ? 'auto' : numberFlag(values, 'micro-batch', { integer: true, min: 1, max: batchSize });
  if (microBatch !== 'auto' && batchSize % microBatch !== 0) throw new UsageError(`--micro-batch must divide --batch-size ${batchSize}, got ${microBatch}`);
  const checkpointing = { auto: 'auto' as const, on: true, off: false }[choiceFlag(values, 'gradient-checkpointing', ['auto', 'on', 'off'] as const)];
  const lr = optionalNumber(values, 'lr', { min: 0, max: 10 });
  const schedule = choiceFlag(values, 'schedule', ['cosine', 'linear', 'constant'] as const);
  const warmupRatio = numberFlag(values, 'warmup-ratio', { min: 0, max: 1 });
  const weightDecay = numberFlag(values, 'weight-decay', { min: 0, max: 10 });
  const maxGradNorm = numberFlag(values, 'max-grad-norm', { min: 0 });
  const seed = numberFlag(values, 'seed', { integer: true, min: 0, max: 2 ** 32 - 1 });
  const evalEvery = optionalNumber(values, 'eval-every', { integer: true, min: 1 });
  const saveEvery = numberFlag(values, 'save-every', { integer: true, min: 1 });
  const keep = numberFlag(values, 'keep', { integer: true, min: 1, max: 1000 });
  const samples = numberFlag(values, 'samples', { integer: true, min: 0, max: 64 });
  const methodFlags = await readMethodFlags(values);
  const method = methodFlags.method;
  const dataFlags = await readDataFlags(values);
  if (evalEvery && dataFlags.validation === 0) throw new UsageError('--eval-every needs held-out rows: --validation FRACTION or FILE');
  const output = resolve((values.output as string | undefined) ?? join('runs', `${basename(String(values.model)).replace(/[^\w.-]+/g, '_')}-${method.replace('+', '-')}`));
  const folder = await planRunFolder(output, values, log);

  const m = await openModel(values, log);
  try {
    const methodOptions = await methodFromFlags(methodFlags, m);
    const quantize = methodFlags.quantize;
    const data = await datasetFromFlags(dataFlags, m);
    for (const line of describeDataset(data)) log(line);
    if (evalEvery && !data.validation) throw new UsageError('--eval-every needs held-out rows: --validation FRACTION or FILE');
    const store = folderCheckpointStore(join(output, 'checkpoints'));
    const progress = progressReporter(json, log);
    const options: TrainerOptions = {
      method, [method]: methodOptions, quantize, precision: methodFlags.precision, steps, epochs, batchSize, microBatch, gradientCheckpointing: checkpointing, seed, evalEvery,
      optimizer: { lr, schedule, warmupRatio, weightDecay, maxGradNorm },
      checkpoints: { store, every: saveEvery, keep },
      resume: folder.resume || undefined,
      overwrite: folder.overwrite || undefined,
      onProgress: (p) => progress(loadProgress(p)),
      // The method's preparation on the training rows (a sparse mask's selection) reports progress here.
      onEvent: (e) => e.type === 'progress' && progress(e),
    };
    const trainer = await Trainer.create(m.gpu, m.ckpt, data, options);
    if (trainer.prepared) log(`${`${trainer.prepared.label}:`.padEnd(8)} ${trainer.prepared.text}`);
    try {
      await mkdir(output, { recursive: true });
      await writeFileAtomic(join(output, RUN_FILE), new TextEncoder().encode(JSON.stringify({ command: 'train', flags: runFlags(values), output }, null, 2)));
      log(`method:  ${method} (${methodDefinition(method).summary}): ${trainer.ft.trainableParameters} parameters train${quantize ? `; base ${typeof quantize === 'string' ? quantize : quantize.format}, ${(trainer.ft.model.linearWeightBytes / 2 ** 20).toFixed(2)} MiB of linear weights` : ''}${methodFlags.precision === 'mixed' ? '; mixed precision (f16 operands)' : ''}`);
      const prompts = samplePrompts(data, samples);
      const before = folder.resume || !prompts.length ? null : await generateSamples(trainer.ft, prompts);
      if (!folder.resume && data.validation) {
        trainer.onEvent = (e) => e.type === 'progress' && progress(e);
        const e = await trainer.evaluateValidation();
        log(`eval before training: loss ${e.loss.toFixed(4)}, perplexity ${e.perplexity.toFixed(2)} (${e.tokens} held-out tokens)`);
      }
      const result = await runWithProgress(trainer, json, log);
      if (result.skippedSteps) log(`${result.skippedSteps} optimizer step(s) skipped: their gradient norm was not finite (an f16 overflow under mixed precision)`);
      if (prompts.length) printSamples(m, prompts, before, await generateSamples(trainer.ft, prompts), log);
      if (result.reason === 'cancelled') {
        log(`stopped at step ${result.step}; the checkpoint is in ${join(output, 'checkpoints')}: continue with the same command and --resume`);
        process.exitCode = 130;
        return;
      }
      // A method with no adapter format of its own (full fine-tuning) exports the merged model.
      await exportRun(trainer.ft, m, output, Boolean(values.merge), String(values.model), log);
    } finally {
      trainer.destroy();
    }
  } finally {
    m.gpu.destroy();
  }
}

async function runWithProgress(trainer: Trainer, json: boolean, log: (l: string) => void) {
  let bar: cliProgress.SingleBar | null = null;
  const tty = process.stdout.isTTY && !json;
  let lastLine = 0;
  const onSignal = () => {
    log('\nstopping after the current step (Ctrl-C again to quit at once)');
    trainer.cancel();
    process.once('SIGINT', () => process.exit(130));
  };
  process.once('SIGINT', onSignal);
  const onEvent = (e: TrainerEvent) => {
    if (json) return console.log(JSON.stringify(e));
    if (e.type === 'plan') {
      log(`plan:    ${e.totalSteps} steps of ${e.batchSize} rows x ${e.seqLength} tokens (${e.epochs.toFixed(2)} epochs); ${e.microBatchReason}${e.resumedFrom !== null ? `; resumed at step ${e.resumedFrom}` : ''}`);
      if (tty) {
        bar = new cliProgress.SingleBar({ format: 'train |{bar}| {value}/{total} steps | loss {loss} | {tps} tok/s | {mem} MiB | ETA {eta}', hideCursor: true }, cliProgress.Presets.shades_classic);
        bar.start(e.totalSteps, e.resumedFrom ?? 0, { loss: '-', tps: '-', mem: '-', eta: '-' });
      }
    } else if (e.type === 'step') {
      const payload = { loss: e.loss.toFixed(4), tps: e.tokensPerSecond.toFixed(0), mem: (e.gpuBytes / 2 ** 20).toFixed(0), eta: formatSeconds(e.etaSeconds) };
      if (bar) bar.update(e.step, payload);
      else if (e.step === e.totalSteps || performance.now() - lastLine > 5000 || e.step === 1) {
        lastLine = performance.now();
        log(`step ${String(e.step).padStart(5)}/${e.totalSteps}  loss ${payload.loss}  lr ${e.lr.toExponential(2)}  ${payload.tps} tokens/s  ${payload.mem} MiB  ETA ${payload.eta}`);
      }
    } else if (e.type === 'eval') {
      const line = `eval at step ${e.step}: loss ${e.loss.toFixed(4)}, perplexity ${e.perplexity.toFixed(2)} (${e.tokens} tokens)`;
      if (bar) bar.stop(), log(line), bar.start(trainer.totalSteps, e.step);
      else log(line);
    } else if (e.type === 'error') {
      bar?.stop();
    } else if (e.type === 'done') {
      bar?.stop();
      log(`${e.reason} at step ${e.step} in ${formatSeconds(e.seconds)}`);
    }
  };
  trainer.onEvent = onEvent;
  try {
    return await trainer.train();
  } finally {
    process.removeListener('SIGINT', onSignal);
    (bar as cliProgress.SingleBar | null)?.stop();
  }
}

function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '-';
  if (s < 60) return `${s.toFixed(0)}s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

interface SamplePrompt {
  prompt: number[];
  expected: number[];
}

/** Held-out prompts: each example's tokens before its first trained token, and the trained run after. */
function samplePrompts(data: TrainingData, count: number): SamplePrompt[] {
  const pool: Example[] = (data.validation ?? data.train).examples;
  return pool.slice(0, count).map((e) => {
    let start = e.trained.findIndex((t, i) => i > 0 && t === 1);
    if (e.trained[0] === 1) start = Math.max(1, Math.floor(e.ids.length / 2)); // text: continue its first half
    let end = start;
    while (end < e.ids.length && e.trained[end] === 1) end++;
    return { prompt: e.ids.slice(0, start), expected: e.ids.slice(start, end) };
  });
}

async function generateSamples(ft: FineTuner, prompts: SamplePrompt[]): Promise<number[][]> {
  const gen = new Generator(ft.model);
  try {
    const maxNewTokens = Math.min(64, Math.max(...prompts.map((p) => p.expected.length)) + 4);
    return (await gen.generateBatch(prompts.map((p) => p.prompt), { maxNewTokens })).map((r) => r.tokens);
  } finally {
    gen.destroy();
  }
}

function printSamples(m: OpenedModel, prompts: SamplePrompt[], before: number[][] | null, after: number[][], log: (l: string) => void) {
  const text = (ids: number[]) => JSON.stringify(m.tokenizer.decode(ids, { skipSpecialTokens: true }));
  log(`\nheld-out prompts, greedy${before ? ': base -> fine-tuned' : ' (fine-tuned)'}:`);
  let right = 0;
  prompts.forEach((p, i) => {
    const ok = after[i].length >= p.expected.length && p.expected.every((t, k) => after[i][k] === t);
    if (ok) right++;
    log(`  ${text(p.prompt)}${before ? ` ${text(before[i])} ->` : ''} ${text(after[i])}  ${ok ? 'right' : `(want ${text(p.expected)})`}`);
  });
  log(`  ${right}/${prompts.length} as the held-out data says`);
}

async function exportRun(ft: FineTuner, m: OpenedModel, output: string, merge: boolean, baseModel: string, log: (l: string) => void) {
  const definition = methodDefinition(ft.options.method);
  // A method with no adapter format for its options exports the merged model alone.
  const files = (await definition.exportFiles?.(ft.method, m.ckpt.config, { baseModel })) ?? null;
  if (files) {
    const dir = join(output, 'adapter');
    await mkdir(dir, { recursive: true });
    for (const [name, bytes] of Object.entries(files)) await writeFileAtomic(join(dir, name), bytes);
    log(`\nsaved:   ${dir} (${Object.keys(files).join(', ')})`);
  }
  if (merge || !files) {
    const dir = join(output, 'merged');
    await mkdir(dir, { recursive: true });
    for (const [name, bytes] of Object.entries(await mergedModelFiles(ft))) await writeFileAtomic(join(dir, name), bytes);
    log(`saved:   ${dir} (a Hugging Face model folder with the change merged in)`);
  }
  log(`checkpoints: ${join(output, 'checkpoints')}`);
}
