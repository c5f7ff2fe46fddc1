/**
 * The demo page: choose a model, a dataset and a method, train in a Web Worker with a live loss chart,
 * pause, stop, save to the browser and resume after a reload, compare base and fine-tuned generations,
 * and download the adapter or the merged model. The page thread only renders; everything else runs in
 * the worker (SessionWorker). State for tests is on window.demo.
 */
import { zipSync } from 'fflate';
import {
  DEFAULT_METHOD, indexedDbCheckpointStore, indexedDbRuns, methodDefinition, methodLearningRate, PRETRAINED_BASE, SHIPPED_DATASETS, SHIPPED_MODELS, SessionWorker, TRAINING_DEFAULTS,
  type MethodName, type SessionEvent, type SessionSpec, type StoredRun, type WorkerFineTuneSession,
} from '../src/index.js';
import { LossChart } from './chart.js';
import { buildMethodForm, readMethodForm, showMethodOptions } from './method-form.js';

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const input = (id: string) => $<HTMLInputElement>(id);
const select = (id: string) => $<HTMLSelectElement>(id);
const BASE = import.meta.env.BASE_URL;

/** What the page remembers of a run in IndexedDB, to restart it after a reload. */
interface RunInfo {
  label: string;
  created: number;
  /** The spec without its model when the model was local files (they are not copied into storage). */
  spec: SessionSpec;
  localModel: boolean;
  /** The losses up to the latest checkpoint, so the chart of a resumed run starts where it was. */
  history?: { steps: { step: number; loss: number }[]; evals: { step: number; loss: number }[] };
}

type Phase = 'idle' | 'opening' | 'running' | 'paused' | 'done';

const state = {
  phase: 'idle' as Phase,
  session: null as WorkerFineTuneSession | null,
  run: null as string | null,
  dataFile: null as File | null,
  lastError: null as string | null,
  steps: [] as { step: number; loss: number }[],
  evals: [] as { step: number; loss: number }[],
  samples: { base: '', tuned: '' },
  /** Model files this page fetched or found in the browser's cache, the latest word on each. */
  downloads: {} as Record<string, { loaded: number; total: number; cached: boolean }>,
};
const chart = new LossChart($('chart'));
const worker = new SessionWorker();
(window as unknown as { demo: unknown }).demo = { state, chart };

const log = (line: string) => {
  const el = $('log');
  el.textContent += `${line}\n`;
  el.scrollTop = el.scrollHeight;
};
const fail = (e: unknown) => {
  const message = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  state.lastError = message;
  log(message);
};
const mb = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
const seconds = (s: number) => (!Number.isFinite(s) ? '–' : s < 60 ? `${s.toFixed(0)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`);

// ---- choices -------------------------------------------------------------------------------------

for (const name of [PRETRAINED_BASE.name, ...Object.keys(SHIPPED_MODELS)]) {
  select('model-shipped').add(new Option(name === PRETRAINED_BASE.name ? `${name} (pre-trained on synthetic skills)` : `${name} (random init)`, name));
}
for (const name of SHIPPED_DATASETS) select('data-shipped').add(new Option(name, name));
select('data-shipped').add(new Option('the file chosen below', ''));
buildMethodForm(select('method'), $('method-fields'), $('quantize-field'));
// The run's defaults, as the Trainer and the command line have them.
input('lr').value = String(methodLearningRate(methodDefinition(DEFAULT_METHOD)));
input('epochs').value = String(TRAINING_DEFAULTS.epochs);
input('batch-size').value = String(TRAINING_DEFAULTS.batchSize);
input('validation').value = String(TRAINING_DEFAULTS.validation);
input('save-every').value = String(TRAINING_DEFAULTS.checkpointEvery);

function showFor(attr: string, value: string) {
  for (const el of document.querySelectorAll<HTMLElement>(`[${attr}]`)) el.hidden = !el.getAttribute(attr)!.split(' ').includes(value);
}
select('model-kind').onchange = () => showFor('data-kind', select('model-kind').value);
/** The method's rate for the options on the form (zeroth-order's depends on what it trains). */
function formLearningRate(): string {
  const method = select('method').value;
  try {
    return String(methodLearningRate(methodDefinition(method), readMethodForm(method)));
  } catch {
    return String(methodLearningRate(methodDefinition(method)));
  }
}
/** The rate last filled in for the method and options (a rate typed over it stays). */
let filledRate = input('lr').value;
select('method').onchange = () => {
  showFor('data-method', select('method').value);
  input('lr').value = filledRate = formLearningRate();
};
// A choice that changes the method's default rate changes the field, unless the rate was edited.
$('method-fields').addEventListener('change', () => {
  if (input('lr').value === filledRate) input('lr').value = filledRate = formLearningRate();
});
showFor('data-method', DEFAULT_METHOD);

function modelChoice(): Pick<SessionSpec, 'model' | 'hub' | 'cache'> & { label: string; local: boolean } {
  const kind = select('model-kind').value;
  if (kind === 'hub') {
    const id = input('model-hub').value.trim();
    if (!id) throw new Error('enter a hub model id, e.g. Qwen/Qwen2.5-0.5B');
    return { model: id, hub: { endpoint: input('model-endpoint').value.trim() || undefined }, cache: true, label: id, local: false };
  }
  if (kind === 'url') {
    const url = input('model-url').value.trim();
    if (!/^https?:\/\//.test(url)) throw new Error('enter the http(s) URL of a model folder');
    return { model: url, cache: true, label: url, local: false };
  }
  if (kind === 'files') {
    const files = [...(input('model-files').files ?? [])];
    if (!files.length) throw new Error('pick or drop a model folder (config.json, *.safetensors, tokenizer.json)');
    return { model: files, label: `local files (${files.length})`, local: true };
  }
  const name = select('model-shipped').value;
  return { model: new URL(`${BASE}models/${name}/`, location.href).href, label: name, local: false };
}

async function datasetFile(): Promise<File> {
  const shipped = select('data-shipped').value;
  if (!shipped) {
    if (!state.dataFile) throw new Error('choose or drop a dataset file');
    return state.dataFile;
  }
  const r = await fetch(`${BASE}datasets/${shipped}`);
  if (!r.ok) throw new Error(`datasets/${shipped}: HTTP ${r.status}`);
  return new File([await r.blob()], shipped);
}

async function preview(): Promise<void> {
  try {
    const file = await datasetFile();
    const p = await worker.previewDataset(file);
    const problems = p.problems.map((x) => `  ${x.at.file}:${x.at.line}: ${x.reason}`).join('\n');
    $('data-preview').textContent =
      `${p.name}: ${p.records} rows, ${p.format ?? 'no known row format'} (${p.fileFormat}, ${(p.bytes / 1024).toFixed(1)} KiB)\n` +
      (p.problemCount ? `${p.problemCount} bad row(s), left out:\n${problems}\n` : 'no bad rows\n') +
      p.sample.map((s) => `  ${s}`).join('\n');
  } catch (e) {
    $('data-preview').textContent = e instanceof Error ? e.message : String(e);
  }
}
select('data-shipped').onchange = () => void preview();
input('data-file').onchange = () => {
  state.dataFile = input('data-file').files?.[0] ?? null;
  select('data-shipped').value = '';
  void preview();
};

// A file dropped anywhere: a dataset, or (several files, or a config.json among them) a model.
document.addEventListener('dragover', (e) => {
  e.preventDefault();
  document.body.classList.add('dragging');
});
document.addEventListener('dragleave', () => document.body.classList.remove('dragging'));
document.addEventListener('drop', (e) => {
  e.preventDefault();
  document.body.classList.remove('dragging');
  const files = [...(e.dataTransfer?.files ?? [])];
  if (files.some((f) => f.name === 'config.json' || f.name.endsWith('.safetensors'))) {
    const dt = new DataTransfer();
    files.forEach((f) => dt.items.add(f));
    input('model-files').files = dt.files;
    select('model-kind').value = 'files';
    showFor('data-kind', 'files');
  } else if (files[0]) {
    state.dataFile = files[0];
    select('data-shipped').value = '';
    void preview();
  }
});

function trainOptions(): SessionSpec['train'] {
  const method = select('method').value as MethodName;
  const num = (id: string, min: number, integer = false) => {
    const v = Number(input(id).value);
    if (!Number.isFinite(v) || v < min || (integer && !Number.isInteger(v))) throw new Error(`${id}: expected ${integer ? 'an integer' : 'a number'} >= ${min}, got '${input(id).value}'`);
    return v;
  };
  const quantize = $('quantize-field').getAttribute('data-method')!.split(' ').includes(method) ? (select('quantize').value as '' | 'nf4' | 'int4') : '';
  return {
    method, [method]: readMethodForm(method), ...(quantize ? { quantize } : {}),
    ...(input('steps').value ? { steps: num('steps', 1, true) } : { epochs: num('epochs', 1e-3) }), batchSize: num('batch-size', 1, true), microBatch: 'auto', evalEvery: num('save-every', 1, true),
    optimizer: { lr: num('lr', 0) },
  };
}

// ---- running -------------------------------------------------------------------------------------

function setPhase(phase: Phase) {
  state.phase = phase;
  const on = (id: string, enabled: boolean) => ($<HTMLButtonElement>(id).disabled = !enabled);
  const ready = phase === 'idle' || phase === 'done';
  on('start', ready);
  on('pause', phase === 'running');
  on('continue', phase === 'paused');
  on('stop', phase === 'running' || phase === 'paused');
  on('save', phase === 'paused' || (phase === 'done' && !!state.session));
  on('generate', !!state.session && (phase === 'paused' || phase === 'done'));
  on('download-adapter', !!state.session && (phase === 'paused' || phase === 'done'));
  on('download-merged', !!state.session && (phase === 'paused' || phase === 'done'));
  $('resume-run').toggleAttribute('disabled', !ready);
}

function onEvent(e: SessionEvent) {
  if (e.type === 'status') log(e.message);
  else if (e.type === 'download') {
    state.downloads[e.file] = { loaded: e.loaded, total: e.total, cached: e.cached };
    $('download').hidden = e.cached || e.loaded === e.total;
    input('download-bar' as never).value = String(e.total ? e.loaded / e.total : 1);
    $('download-text').textContent = `${e.file}: ${mb(e.loaded)} of ${mb(e.total)}`;
  } else if (e.type === 'progress') {
    // Loading the weights, choosing a mask, evaluating: a phase the user waits through, with its bar.
    const what = { load: 'loading the weights', select: 'choosing the mask', evaluate: 'evaluating on the held-out rows' }[e.task];
    $('progress').hidden = e.total !== null && e.done >= e.total;
    input('progress-bar' as never).value = String(e.total ? e.done / e.total : 0);
    $('progress-text').textContent = `${what}: ${e.done}${e.total ? ` of ${e.total}` : ''}${e.detail ? ` (${e.detail})` : ''}`;
  } else if (e.type === 'plan') {
    $('stat-batch').textContent = `${e.batchSize} = ${e.microBatch} × ${e.accumulation}`;
    $('stat-batch').title = e.microBatchReason;
    log(`plan: ${e.totalSteps} steps of ${e.batchSize} rows × ${e.seqLength} tokens; ${e.microBatchReason}; padding ${(100 * e.packing.waste).toFixed(1)}% (unpacked ${(100 * e.packing.unpackedWaste).toFixed(1)}%)`);
  } else if (e.type === 'step') {
    state.steps.push({ step: e.step, loss: e.loss });
    chart.addTrain(e.step, e.loss);
    $('stat-step').textContent = `${e.step} / ${e.totalSteps}`;
    $('stat-loss').textContent = e.loss.toFixed(4);
    $('stat-tps').textContent = e.tokensPerSecond.toFixed(0);
    $('stat-mem').textContent = mb(e.gpuBytes);
    $('stat-eta').textContent = seconds(e.etaSeconds);
  } else if (e.type === 'eval') {
    state.evals.push({ step: e.step, loss: e.loss });
    chart.addValidation(e.step, e.loss);
    $('stat-eval').textContent = `${e.loss.toFixed(4)} (perplexity ${e.perplexity.toFixed(2)})`;
  } else if (e.type === 'checkpoint') {
    log(`saved ${e.name} to ${e.store} in ${e.seconds.toFixed(2)} s`);
    void rememberHistory(e.step);
  }
  else if (e.type === 'paused') setPhase('paused');
  else if (e.type === 'resumed') setPhase('running');
  else if (e.type === 'error') log(`stopped: ${e.message} (${e.advice})`);
  else if (e.type === 'done') {
    log(`${e.reason} at step ${e.step} in ${seconds(e.seconds)}`);
    $('stat-eta').textContent = e.reason === 'completed' ? 'done' : `${e.reason} at step ${e.step}`;
  }
}

/** Keep the chart's points up to `step` with the run's info, for a resumed run to show. */
async function rememberHistory(step: number) {
  if (!state.run) return;
  const store = indexedDbCheckpointStore(state.run);
  const info = (await store.loadRunInfo()) as RunInfo | null;
  if (!info) return;
  const upTo = (points: { step: number; loss: number }[]) => points.filter((p) => p.step <= step);
  await store.saveRunInfo({ ...info, history: { steps: upTo(state.steps), evals: upTo(state.evals) } });
}

async function closeSession() {
  state.session?.destroy();
  state.session = null;
}

/** Open a session for `spec` in the worker and train it to the end (or until stopped). */
async function run(spec: SessionSpec, runName: string, fresh: boolean, history?: RunInfo['history']) {
  setPhase('opening');
  await closeSession();
  state.run = runName;
  state.steps = [];
  state.evals = [];
  chart.clear();
  // A resumed run's chart starts with its earlier points (state.steps holds this session's only).
  for (const p of history?.steps ?? []) chart.addTrain(p.step, p.loss);
  for (const p of history?.evals ?? []) chart.addValidation(p.step, p.loss);
  try {
    state.session = await worker.open(spec, { onEvent });
    const info = state.session.info;
    log(`model: ${info.model.description} (${info.model.architecture}, ${info.model.layers} layers, hidden ${info.model.hiddenSize})`);
    for (const w of info.model.warnings) log(`warning: ${w}`);
    log(`data: ${info.dataset.trainRows} training rows, ${info.dataset.validationRows} held out, ${info.dataset.skipped} bad rows left out`);
    log(`method: ${info.method.name}, ${info.method.trainableParameters.toLocaleString()} parameters train${info.method.quantize ? `, ${info.method.quantize} base` : ''}${info.prepared ? `; ${info.prepared.label}: ${info.prepared.text}` : ''}`);
    // The evaluation's own event draws the point: the held-out loss before training, at step 0.
    if (fresh && info.dataset.validationRows) await state.session.evaluate();
    setPhase('running');
    await state.session.train();
    setPhase('done');
    await refreshResumeBanner();
  } catch (e) {
    fail(e);
    setPhase('idle');
  }
}

$('start').onclick = async () => {
  // The last run's points go at once: nothing reads them as this run's while it opens.
  setPhase('opening');
  state.steps = [];
  state.evals = [];
  state.lastError = null;
  try {
    const model = modelChoice();
    const file = await datasetFile();
    const runName = `run-${Date.now().toString(36)}`;
    const spec: SessionSpec = {
      model: model.model, hub: model.hub, cache: model.cache,
      data: file,
      dataset: { seqLength: Number(input('seq-len').value), validation: Number(input('validation').value) || undefined },
      train: trainOptions(),
      checkpoints: { indexedDb: runName, every: Number(input('save-every').value), keep: 2 },
    };
    const info: RunInfo = { label: `${model.label}, ${spec.train.method}, ${file.name}`, created: Date.now(), spec: model.local ? { ...spec, model: '' } : spec, localModel: model.local };
    await indexedDbCheckpointStore(runName).saveRunInfo(info);
    await run(spec, runName, true);
  } catch (e) {
    fail(e);
    setPhase('idle');
  }
};
$('pause').onclick = () => state.session?.pause();
$('continue').onclick = () => state.session?.resume();
$('stop').onclick = () => state.session?.cancel();
$('save').onclick = async () => {
  try {
    log(`saved step ${await state.session!.save()}`);
    await refreshResumeBanner();
  } catch (e) {
    fail(e);
  }
};

// ---- resume after a reload -----------------------------------------------------------------------

let resumable: StoredRun | null = null;

async function refreshResumeBanner() {
  const runs = (await indexedDbRuns()).filter((r) => r.latest && r.info);
  resumable = runs[0] ?? null;
  $('resume-banner').hidden = !resumable || (resumable.run === state.run && state.phase !== 'idle');
  if (!resumable) return;
  const info = resumable.info as RunInfo;
  const step = Number(/(\d+)$/.exec(resumable.latest!)?.[1] ?? 0);
  $('resume-text').textContent = `A run of ${info.label} is saved in this browser at step ${step} (${mb(resumable.bytes)}, ${new Date(resumable.updated).toLocaleString()}).`;
}

$('resume-run').onclick = async () => {
  if (!resumable) return;
  const info = resumable.info as RunInfo;
  try {
    const spec = { ...info.spec, resume: true as const };
    if (info.localModel) spec.model = modelChoice().model; // local files cannot be kept: pick them again
    $('resume-banner').hidden = true;
    showRunOptions(spec);
    await run(spec, resumable.run, false, info.history);
  } catch (e) {
    fail(e);
  }
};
/** The form as the resumed run was set up, so what is shown is what trains. */
function showRunOptions(spec: SessionSpec) {
  const t = spec.train;
  select('method').value = t.method;
  showFor('data-method', t.method);
  showMethodOptions(t.method, (t as Record<string, unknown>)[t.method]);
  if (t.quantize !== undefined) select('quantize').value = typeof t.quantize === 'string' ? t.quantize : t.quantize.format;
  input('lr').value = String(t.optimizer?.lr ?? input('lr').value);
  input('batch-size').value = String(t.batchSize ?? TRAINING_DEFAULTS.batchSize);
  input('steps').value = t.steps === undefined ? '' : String(t.steps);
  if (t.epochs !== undefined) input('epochs').value = String(t.epochs);
  input('seq-len').value = String(spec.dataset.seqLength);
  if (spec.checkpoints?.every) input('save-every').value = String(spec.checkpoints.every);
}

$('discard-run').onclick = async () => {
  if (!resumable) return;
  await indexedDbCheckpointStore(resumable.run).clear();
  await refreshResumeBanner();
};

// ---- generation and downloads ----------------------------------------------------------------------

$('generate').onclick = async () => {
  const session = state.session;
  if (!session) return;
  $<HTMLButtonElement>('generate').disabled = true;
  const request = { maxNewTokens: Number(input('max-tokens').value) || 16, chat: input('chat').checked };
  try {
    for (const which of ['base', 'tuned'] as const) {
      const out = $(`out-${which}`);
      out.textContent = '';
      state.samples[which] = await session.generate(input('prompt').value, { ...request, model: which }, (text) => (out.textContent = text));
      out.textContent = state.samples[which];
    }
  } catch (e) {
    fail(e);
  } finally {
    setPhase(state.phase);
  }
};

function download(name: string, files: Record<string, Uint8Array>) {
  const zip = zipSync(files, { level: 0 });
  const url = URL.createObjectURL(new Blob([zip as Uint8Array<ArrayBuffer>], { type: 'application/zip' }));
  const a = Object.assign(document.createElement('a'), { href: url, download: name });
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
$('download-adapter').onclick = async () => {
  try {
    download(`${state.run}-adapter.zip`, await state.session!.exportAdapter());
  } catch (e) {
    fail(e);
  }
};
$('download-merged').onclick = async () => {
  try {
    download(`${state.run}-merged.zip`, await state.session!.exportMerged());
  } catch (e) {
    fail(e);
  }
};

// ---- start-up ------------------------------------------------------------------------------------

/** Why this browser cannot train here, or null. */
async function webgpuProblem(): Promise<string | null> {
  const gpu = (navigator as Navigator & { gpu?: GPU }).gpu;
  const what = 'Use a recent Chrome or Edge (113 or later; on Linux start it with --enable-unsafe-webgpu or enable chrome://flags/#enable-unsafe-webgpu), Safari 26 or later, or Firefox 141 or later on Windows.';
  if (!gpu) return `This browser has no WebGPU, which this page needs to train. ${what}`;
  const adapter = await gpu.requestAdapter().catch(() => null);
  if (!adapter) return `WebGPU is present but gave no GPU adapter (it may be turned off, or the GPU blocklisted). ${what}`;
  return null;
}

const problem = await webgpuProblem();
if (problem) {
  $('no-webgpu').textContent = problem;
  $('no-webgpu').hidden = false;
  $('device').textContent = 'no WebGPU';
  state.lastError = problem;
} else {
  const adapter = await navigator.gpu.requestAdapter();
  const i = adapter!.info;
  $('device').textContent = `WebGPU: ${[i.vendor, i.architecture, i.device, i.description].filter(Boolean).join(' ')}`;
  setPhase('idle');
  await Promise.all([preview(), refreshResumeBanner()]);
}
(window as unknown as { demoReady: boolean }).demoReady = true;
