/**
 * Pre-trains the shipped tiny base (public/models/tiny-llama-skills) from random weights on the synthetic
 * skills corpus (src/data/skills.ts), with this engine's own full fine-tuning, and writes it in Hugging
 * Face format with its training record (training.json: the loss curve and held-out metrics).
 *
 *   npx tsx scripts/pretrain-tiny-base.ts [--steps N] [--out DIR] [--eval-every N] [--batch ROWS] [--lr X]
 *                                         [--continue]
 *
 * The model is saved at every evaluation, so an interrupted run leaves a usable base. `--continue` trains
 * the base in --out further, as a new phase (fresh AdamW moments, its own warmup and decay), appending to
 * its record; data seeds continue from the step count, so no batch repeats.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { requestDevice } from '../src/node.js';
import { existsSync, readFileSync } from 'node:fs';
import { folderSource, memorySource } from '../src/io/sources.js';
import { openCheckpoint } from '../src/model/checkpoint.js';
import { tinyModelFiles } from '../src/model/tiny.js';
import { PRETRAINED_BASE } from '../src/model/shipped.js';
import { FineTuner } from '../src/train/finetuner.js';
import { writeSafetensors, type TensorToWrite } from '../src/io/safetensors.js';
import { packExamples, skillExamples, SKILL_NAMES } from '../src/data/skills.js';
import { evaluateSkills, type SkillScores } from '../src/train/skills-eval.js';

const { values } = parseArgs({
  options: {
    steps: { type: 'string', default: '3000' },
    out: { type: 'string', default: 'public/models/tiny-llama-skills' },
    'eval-every': { type: 'string', default: '250' },
    batch: { type: 'string', default: '16' },
    seq: { type: 'string', default: '64' },
    lr: { type: 'string', default: '3e-3' },
    continue: { type: 'boolean' },
  },
  strict: true,
});
const steps = Number(values.steps);
const evalEvery = Number(values['eval-every']);
const rows = Number(values.batch);
const seq = Number(values.seq);
const lr = Number(values.lr);
for (const [name, v] of Object.entries({ steps, evalEvery, rows, seq, lr })) {
  if (!(Number.isFinite(v) && v > 0)) throw new Error(`--${name} must be a positive number`);
}

interface CurvePoint { step: number; tokens: number; seconds: number; trainLoss: number; lr: number }
interface EvalPoint { step: number; answerLoss: number; answerAccuracy: number; bySkill: SkillScores }
interface Phase { fromStep: number; steps: number; optimizer: Record<string, unknown> }
interface TrainingRecord { curve: CurvePoint[]; evals: EvalPoint[]; phases: Phase[]; stepsDone: number; seconds: number }

const gpu = await requestDevice({ powerPreference: 'high-performance' });
const files = tinyModelFiles(PRETRAINED_BASE.init);
const recordFile = join(values.out!, 'training.json');
if (values.continue && !existsSync(recordFile)) throw new Error(`--continue: no training.json in ${values.out}`);
const prior: TrainingRecord = values.continue ? JSON.parse(readFileSync(recordFile, 'utf8')) : { curve: [], evals: [], phases: [], stepsDone: 0, seconds: 0 };
const ckpt = await openCheckpoint(values.continue ? folderSource(values.out!) : memorySource(files, 'random init'));
const optimizer = { lr, warmupSteps: Math.min(100, steps / 10), totalSteps: steps, schedule: 'cosine' as const, minLrRatio: 0.1, weightDecay: 0.01 };
const ft = await FineTuner.create(gpu, ckpt, { method: 'full', optimizer });
console.log(`device: ${gpu.describe()}`);
console.log(`model: ${ckpt.config.numLayers} layers, d=${ckpt.config.hiddenSize}; ${steps} steps of ${rows}x${seq} tokens from step ${prior.stepsDone}, lr ${lr}`);

const { curve, evals } = prior;
const phases = [...prior.phases, { fromStep: prior.stepsDone, steps, optimizer }];
const t0 = performance.now() - prior.seconds * 1000;
let tokens = prior.curve.at(-1)?.tokens ?? 0;
let lossSum = 0;
let lossCount = 0;

async function save(step: number, final: boolean): Promise<void> {
  const seconds = Math.round((performance.now() - t0) / 1000);
  mkdirSync(values.out!, { recursive: true });
  const tensors: Record<string, TensorToWrite> = {};
  for (const name of ft.model.hfNames) {
    const shape = ckpt.tensors.get(name)!.info.shape;
    tensors[name] = { dtype: 'F32', shape, data: await ft.model.readHf(name) };
  }
  for (const [file, content] of Object.entries(files)) {
    if (file !== 'model.safetensors') writeFileSync(join(values.out!, file), content);
  }
  writeFileSync(join(values.out!, 'model.safetensors'), writeSafetensors(tensors, { format: 'pt' }));
  const record = {
    model: PRETRAINED_BASE.init, corpus: { skills: SKILL_NAMES, packedRows: `${rows}x${seq}`, loss: 'every token' },
    phases, stepsDone: step, finished: final, seconds, device: gpu.describe(), curve, evals,
  };
  writeFileSync(recordFile, JSON.stringify(record, null, 1) + '\n');
}

for (let local = 1; local <= steps; local++) {
  const step = prior.stepsDone + local;
  const r = await ft.step(packExamples(skillExamples(rows * seq, step), rows, seq, 'all'));
  tokens += rows * seq;
  lossSum += r.loss;
  lossCount++;
  if (local % 25 === 0 || local === steps) {
    const seconds = (performance.now() - t0) / 1000;
    curve.push({ step, tokens, seconds: Math.round(seconds), trainLoss: lossSum / lossCount, lr: r.lr });
    console.log(`step ${step}  loss ${(lossSum / lossCount).toFixed(4)}  lr ${r.lr.toExponential(2)}  ${(tokens / seconds).toFixed(0)} tokens/s`);
    lossSum = lossCount = 0;
  }
  if (local % evalEvery === 0 || local === steps) {
    const scores = await evaluateSkills(ft, { generate: local === steps });
    evals.push({ step, ...scores });
    console.log(`  held-out answers: loss ${scores.answerLoss.toFixed(3)}, accuracy ${(100 * scores.answerAccuracy).toFixed(1)}%`);
    await save(step, local === steps);
  }
}
console.log(JSON.stringify(evals.at(-1), null, 1));
ft.destroy();
gpu.destroy();
