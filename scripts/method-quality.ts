/**
 * The method-quality study: the shipped pretrained base fine-tuned on a held-out skill (one it never saw
 * in pre-training) by every method on the same data and steps, each with its learning rate tuned on a
 * validation set (never the held-out test examples), over several seeds. Reports held-out answer
 * accuracy and loss (mean ± standard deviation over seeds), trainable parameters, the learning rate
 * chosen and, for data-driven masks, the selection cost.
 *
 *   npx tsx scripts/method-quality.ts [--task next] [--steps 40] [--rows 4] [--seeds 3]
 *                                     [--only REGEX] [--out bench/results/method-quality.json]
 *
 * Results are appended run by run to --out (a rerun skips runs already there), so the study can be split
 * across calls with --only and resumed after an interruption; the table is printed from everything in
 * the file.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { packExamples, skillExamples, HELD_OUT_SKILLS, type HeldOutSkill } from '../src/data/skills.js';
import { folderSource } from '../src/io/sources.js';
import { CausalLM } from '../src/model/causal-lm.js';
import { openCheckpoint } from '../src/model/checkpoint.js';
import { requestDevice } from '../src/node.js';
import { selectMask, type Selection, type SparseMask } from '../src/methods/sparse/index.js';
import type { MethodName } from '../src/methods/registry.js';
import { FineTuner, type FineTuneOptions } from '../src/train/finetuner.js';
import { taskCalibration } from '../src/train/main-task.js';
import { evaluateSkill } from '../src/train/skills-eval.js';

const { values } = parseArgs({
  options: {
    task: { type: 'string', default: 'next' },
    steps: { type: 'string', default: '40' },
    rows: { type: 'string', default: '4' },
    seeds: { type: 'string', default: '3' },
    only: { type: 'string' },
    out: { type: 'string', default: 'bench/results/method-quality.json' },
    model: { type: 'string', default: 'public/models/tiny-llama-skills' },
  },
  strict: true,
});
const task = values.task as HeldOutSkill;
if (!HELD_OUT_SKILLS.includes(task)) throw new Error(`--task must be one of ${HELD_OUT_SKILLS.join(', ')}`);
const steps = Number(values.steps);
const rows = Number(values.rows);
const seeds = Number(values.seeds);
const SEQ = 64;
const only = values.only ? new RegExp(values.only) : null;

/** A row of the table: a method with its options, and the learning rates its tuning tries. */
interface Config {
  label: string;
  method: MethodName;
  lrs: number[];
  /** Method options for a seed, given the mask when the method is sparse. */
  options: (mask: SparseMask | undefined, seed: number) => Partial<FineTuneOptions>;
  mask?: { selection: Selection; density?: number; loraRank?: number };
  /** AdamW's decoupled weight decay. Default 0. */
  weightDecay?: number;
  /** Optimizer steps, when not the study's (a zeroth-order method given the steps it needs). */
  steps?: number;
}

const ALL_LINEAR = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'];
const SPARSE_LRS = [1e-2, 3e-2, 1e-1];
const configs: Config[] = [
  // The starting point: the pretrained base as it is (an adapter that has not trained changes nothing).
  { label: 'the base, untrained', method: 'lora', steps: 0, lrs: [0], options: () => ({}) },
  { label: 'full', method: 'full', lrs: [3e-4, 1e-3, 3e-3], options: () => ({}), weightDecay: 0.01 },
  ...[8, 16].map((rank): Config => ({ label: `LoRA r${rank}`, method: 'lora', lrs: [3e-3, 1e-2, 3e-2], options: (_m, seed) => ({ lora: { rank, targetModules: ALL_LINEAR, seed } }) })),
  // LoRA's PEFT variants at the same rank: DoRA's magnitude, PiSSA's and OLoRA's starts from the base
  // weight, and LoRA+ (B at 16 times A's rate; its tried rates a third of plain LoRA's, as the paper
  // suggests lowering it).
  ...([
    ['DoRA r8', { dora: true }, [3e-3, 1e-2, 3e-2]],
    ['PiSSA r8', { init: 'pissa' }, [3e-3, 1e-2, 3e-2]],
    ['OLoRA r8', { init: 'olora' }, [3e-3, 1e-2, 3e-2]],
    ['LoRA+ r8 (ratio 16)', { loraplusLrRatio: 16 }, [1e-3, 3e-3, 1e-2]],
  ] as const).map(([label, variant, lrs]): Config => ({ label, method: 'lora', lrs: [...lrs], options: (_m, seed) => ({ lora: { rank: 8, targetModules: ALL_LINEAR, seed, ...variant } }) })),
  // QLoRA: the same adapter over the base quantized to 4 bits at load.
  ...(['nf4', 'int4'] as const).map((quantize): Config => ({
    label: `QLoRA r8 (${quantize} base)`, method: 'lora', lrs: [3e-3, 1e-2, 3e-2], options: (_m, seed) => ({ lora: { rank: 8, targetModules: ALL_LINEAR, seed }, quantize }),
  })),
];
for (const selection of ['sylva', 'fisher', 'snip', 'random', 'columns'] as const) {
  for (const density of [0.005, 0.01, 0.03, 0.1]) {
    configs.push({ label: `sparse ${selection} ${100 * density}%`, method: 'sparse', lrs: SPARSE_LRS, mask: { selection, density }, options: (mask) => ({ sparse: { mask } }) });
  }
}
// Drop-and-regrow (SpIEL) from the same masks: every 5 steps (7 swaps in a run), 10% of each layer's
// entries dropped by smallest change and grown by largest gradient.
for (const selection of ['sylva', 'random'] as const) {
  for (const density of [0.01, 0.03]) {
    configs.push({
      label: `sparse ${selection} ${100 * density}% + regrowth (every 5, 10%)`, method: 'sparse', lrs: SPARSE_LRS, mask: { selection, density },
      options: (mask) => ({ sparse: { mask, regrow: true, regrowEvery: 5, regrowFraction: 0.1 } }),
    });
  }
}
// The same trainable-parameter count as LoRA r8 in every layer, r (in + out) elements (SHiRA's budget).
for (const selection of ['sylva', 'random'] as const) {
  configs.push({ label: `sparse ${selection}, LoRA r8's count`, method: 'sparse', lrs: SPARSE_LRS, mask: { selection, loraRank: 8 }, options: (mask) => ({ sparse: { mask } }) });
}
configs.push({
  label: 'sparse+LoRA (sylva 1% + r8)', method: 'sparse+lora', lrs: [3e-3, 1e-2, 3e-2], mask: { selection: 'sylva', density: 0.01 },
  options: (mask, seed) => ({ 'sparse+lora': { sparse: { mask }, lora: { rank: 8, targetModules: ALL_LINEAR, seed } } }),
});

// The memory-frugal methods: LISA trains every weight a few layers at a time; zeroth-order (MeZO) runs
// forward passes only, so it is given the study's steps and ten times as many (its wall-clock is reported).
configs.push({ label: 'LISA (1 of 3 layers, K 5)', method: 'lisa', lrs: [3e-4, 1e-3, 3e-3], options: (_m, seed) => ({ lisa: { layers: 1, interval: 5, seed } }), weightDecay: 0.01 });
// GaLore at r = hidden / 8 (96 / 8), its projections recomputed every 10 steps (4 times in a run; T = 200 would fix
// the first step's subspace for all 40), α 0.25 as transformers' default.
configs.push({ label: 'GaLore r12 (T 10)', method: 'galore', lrs: [1e-3, 3e-3, 1e-2], options: (_m, seed) => ({ galore: { rank: 12, updateGap: 10, seed } }), weightDecay: 0.01 });
// At ten times the steps only the rates around the best at the study's steps are tried (each run takes minutes).
for (const times of [1, 10]) {
  const more = times > 1 ? `, ${times}x steps` : '';
  const zoSteps = steps * times;
  const lrs = (all: number[], longer: number[]) => (times > 1 ? longer : all);
  configs.push({ label: `ZO-LoRA r8${more}`, method: 'zo', steps: zoSteps, lrs: lrs([1e-4, 3e-4, 1e-3, 3e-3], [3e-4, 1e-3]), options: (_m, seed) => ({ zo: { target: 'lora', lora: { rank: 8, targetModules: ALL_LINEAR, seed }, seed } }) });
  configs.push({ label: `ZO-full${more}`, method: 'zo', steps: zoSteps, lrs: lrs([1e-5, 3e-5, 1e-4, 3e-4], [1e-4]), options: (_m, seed) => ({ zo: { target: 'full', seed } }) });
  configs.push({ label: `QZO (NF4 block scales)${more}`, method: 'zo', steps: zoSteps, lrs: lrs([1e-4, 1e-3, 1e-2, 1e-1], [1e-3, 1e-2]), options: (_m, seed) => ({ zo: { target: 'quantized', seed }, quantize: 'nf4' }) });
  configs.push({
    label: `Sparse-MeZO (random 10%)${more}`, method: 'zo', steps: zoSteps, lrs: lrs([1e-4, 3e-4, 1e-3, 3e-3], [1e-3, 3e-3]), mask: { selection: 'random', density: 0.1 },
    options: (mask, seed) => ({ zo: { target: 'sparse', sparse: { mask }, seed } }),
  });
}

interface RunResult {
  label: string;
  lr: number;
  seed: number;
  phase: 'tune' | 'final';
  validLoss: number;
  heldOutAccuracy: number;
  heldOutLoss: number;
  trainable: number;
  seconds: number;
  selection?: { seconds: number; peakGpuBytes: number; calibrationTokens: number };
  /** The training loss over each tenth of the run (runs from before it was recorded have none). */
  curve?: number[];
}

const results: RunResult[] = existsSync(values.out!) ? JSON.parse(readFileSync(values.out!, 'utf8')).runs : [];
/** One run per line: the file stays a short list however many runs it holds. */
const save = () => {
  const head = JSON.stringify({ task, steps, rows, seq: SEQ, seeds });
  writeFileSync(values.out!, `${head.slice(0, -1)}, "runs": [\n${results.map((r) => JSON.stringify(r)).join(',\n')}\n]}\n`);
};
const has = (label: string, lr: number, seed: number) => results.some((r) => r.label === label && r.lr === lr && r.seed === seed);

const gpu = await requestDevice({ powerPreference: 'high-performance' });
const open = () => openCheckpoint(folderSource(values.model!));
const calibration = taskCalibration(rows, task);
/** Validation for tuning: examples from seeds apart from training and from the held-out test set. */
const validation = packExamples(skillExamples(256, 700_000, task), 16, SEQ, 'answer');

const masks = new Map<string, { mask: SparseMask; cost: RunResult['selection'] }>();
async function maskFor(c: Config, seed: number): Promise<{ mask: SparseMask; cost: RunResult['selection'] } | undefined> {
  if (!c.mask) return undefined;
  const dataFree = c.mask.selection === 'random' || c.mask.selection === 'columns';
  const key = `${c.mask.selection} ${c.mask.density} ${c.mask.loraRank} ${dataFree ? seed : ''}`;
  if (!masks.has(key)) {
    const model = await CausalLM.fromCheckpoint(gpu, await open());
    try {
      const { mask, cost } = await selectMask(model, calibration, { ...c.mask, targetModules: ALL_LINEAR, seed });
      masks.set(key, { mask, cost: { seconds: cost.seconds, peakGpuBytes: cost.peakGpuBytes, calibrationTokens: cost.calibrationTokens } });
    } finally {
      model.destroy();
    }
  }
  return masks.get(key);
}

// Mixed precision (f16 operands in every linear product; needs shader-f16): the same runs as their f32 rows.
for (const label of ['full', 'LoRA r8']) {
  const c = configs.find((x) => x.label === label)!;
  configs.push({ ...c, label: `${label}, mixed precision`, options: (mask, seed) => ({ ...c.options(mask, seed), precision: 'mixed' }) });
}

async function run(c: Config, lr: number, seed: number, phase: RunResult['phase']): Promise<RunResult> {
  const selected = await maskFor(c, seed);
  const t0 = performance.now();
  const ft = await FineTuner.create(gpu, await open(), {
    method: c.method,
    ...c.options(selected?.mask, seed),
    optimizer: { weightDecay: c.weightDecay ?? 0, lr, warmupSteps: 5, totalSteps: c.steps ?? steps, schedule: 'cosine' },
  });
  try {
    // The training loss's curve: its mean over each tenth of the run.
    const total = c.steps ?? steps;
    const curve: number[] = [];
    let window: number[] = [];
    for (let s = 0; s < total; s++) {
      // Seed-dependent data order: each seed draws its own training examples.
      window.push((await ft.step(packExamples(skillExamples(rows * SEQ, seed * 100_000 + s, task), rows, SEQ, 'answer'))).loss);
      if (window.length === Math.max(1, Math.floor(total / 10)) || s === total - 1) {
        curve.push(window.reduce((a, b) => a + b, 0) / window.length);
        window = [];
      }
    }
    const valid = await ft.evaluate(validation);
    const test = await evaluateSkill(ft, task, { examples: 64 });
    const trainable = ft.method.trainable.names.reduce((n, name) => n + ft.method.trainable.param(name).size / 4, 0);
    return {
      label: c.label, lr, seed, phase, validLoss: valid.loss, heldOutAccuracy: test.answerAccuracy, heldOutLoss: test.answerLoss,
      trainable, seconds: (performance.now() - t0) / 1000, selection: selected?.cost, curve,
    };
  } finally {
    ft.destroy();
  }
}

for (const c of configs) {
  if (only && !only.test(c.label)) continue;
  // Tune on seed 0 by validation loss, then the other seeds at the chosen rate.
  for (const lr of c.lrs) {
    if (has(c.label, lr, 0)) continue;
    const r = await run(c, lr, 0, 'tune');
    results.push(r);
    save();
    console.log(`${c.label} lr ${lr}: valid ${r.validLoss.toFixed(3)} held-out ${(100 * r.heldOutAccuracy).toFixed(1)}% (${r.seconds.toFixed(0)} s)`);
  }
  const best = bestLr(c.label);
  for (let seed = 1; seed < seeds; seed++) {
    if (has(c.label, best, seed)) continue;
    const r = await run(c, best, seed, 'final');
    results.push(r);
    save();
    console.log(`${c.label} lr ${best} seed ${seed}: held-out ${(100 * r.heldOutAccuracy).toFixed(1)}%`);
  }
}

function bestLr(label: string): number {
  const tuned = results.filter((r) => r.label === label && r.seed === 0);
  return tuned.reduce((a, b) => (b.validLoss < a.validLoss ? b : a)).lr;
}

const stats = (xs: number[]) => {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const sd = Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / Math.max(1, xs.length - 1));
  return { mean, sd };
};
const lines = [
  `Task '${task}', ${steps} steps of ${rows}x${SEQ} tokens, learning rate tuned on validation loss (seed 0), mean ± sd over seeds.`,
  '',
  '| method | trainable params | steps | lr | seeds | held-out accuracy % | held-out loss | s per run | selection s |',
  '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
];
for (const c of configs) {
  if (!results.some((r) => r.label === c.label && r.seed === 0)) continue;
  const lr = bestLr(c.label);
  const runs = results.filter((r) => r.label === c.label && r.lr === lr);
  const acc = stats(runs.map((r) => 100 * r.heldOutAccuracy));
  const loss = stats(runs.map((r) => r.heldOutLoss));
  const sel = runs[0].selection ? runs[0].selection.seconds.toFixed(1) : '';
  const seconds = stats(runs.map((r) => r.seconds)).mean;
  const trainable = c.steps === 0 ? 0 : runs[0].trainable; // the untrained base trains nothing
  lines.push(`| ${c.label} | ${trainable.toLocaleString('en-US')} | ${c.steps ?? steps} | ${lr} | ${runs.length} | ${acc.mean.toFixed(1)} ± ${acc.sd.toFixed(1)} | ${loss.mean.toFixed(3)} ± ${loss.sd.toFixed(3)} | ${seconds.toFixed(0)} | ${sel} |`);
}
// Where runs recorded their training loss, the curve of the chosen rate's first seed, per tenth of the run.
const curves = configs.flatMap((c) => {
  const run = results.find((r) => r.label === c.label && r.curve && results.some((t) => t.label === c.label && t.seed === 0) && r.lr === bestLr(c.label));
  return run ? [`- ${c.label} (lr ${run.lr}, seed ${run.seed}): ${run.curve!.map((l) => l.toFixed(2)).join(' → ')}`] : [];
});
if (curves.length) lines.push('', 'Training loss per tenth of the run:', '', ...curves);
console.log(lines.join('\n'));
writeFileSync(join(values.out!.replace(/\.json$/, '.md')), lines.join('\n') + '\n');
