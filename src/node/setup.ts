/**
 * What several commands share: the flags naming a model and a dataset, read and checked into the
 * library's options, and the shipped defaults (the pretrained tiny base, its sample dataset). The
 * method's flags are ./method-flags.ts.
 */
import { readFile, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { requestDevice } from '../gpu/device.js';
import type { Gpu } from '../gpu/gpu.js';
import { resolveSource, type ModelSource } from '../io/sources.js';
import { openCheckpoint, type Checkpoint } from '../model/checkpoint.js';
import { fileUrlPath, PRETRAINED_BASE, shippedDatasetUrl, shippedModelUrl } from '../model/shipped.js';
import { loadTokenizer, type Tokenizer } from '../data/tokenizer.js';
import { formatProblem, loadDataset, REPORTED_PROBLEMS, type DatasetOptions, type TrainingData } from '../data/dataset.js';
import { DatasetError, fileFormat, type DatasetFile } from '../data/records.js';
import { TRAINING_DEFAULTS } from '../train/defaults.js';
import { choiceFlag, optionalNumber, UsageError, type FlagTable, type FlagValues } from './flags.js';

export const SHIPPED_MODEL = fileUrlPath(shippedModelUrl()).replace(/\/$/, '');
export const SHIPPED_DATASET = fileUrlPath(shippedDatasetUrl());

export const MODEL_FLAGS: FlagTable = {
  model: { type: 'string', value: 'PATH|ID|URL', default: SHIPPED_MODEL, shownDefault: `the shipped ${PRETRAINED_BASE.name}`, help: 'a model folder, a hub id or a URL' },
  hub: { type: 'string', value: 'ENDPOINT', help: 'hub endpoint for hub ids (default https://huggingface.co)' },
};

export const DATA_FLAGS: FlagTable = {
  data: { type: 'string', value: 'FILE', default: SHIPPED_DATASET, shownDefault: 'the shipped sample, datasets/next-letter.jsonl', help: 'training data: .jsonl/.json (text, prompt+completion or chat messages), .txt or .parquet' },
  validation: { type: 'string', value: 'FRACTION|FILE', default: String(TRAINING_DEFAULTS.validation), help: 'held-out rows: a fraction of the data, or a file' },
  format: { type: 'string', value: 'auto|text|prompt-completion|chat', default: 'auto', help: 'row format' },
  'loss-on': { type: 'string', value: 'completion|all', default: 'completion', help: 'train on completions and assistant turns only, or on every token' },
  'seq-len': { type: 'string', value: 'N', help: `tokens per packed row (default: the model's positions, at most ${TRAINING_DEFAULTS.maxSeqLength})` },
  'long-rows': { type: 'string', value: 'skip|truncate|split', default: 'skip', help: 'rows longer than the sequence: reported and skipped, cut, or (text) split' },
  'bad-rows': { type: 'string', value: 'skip|fail', default: 'skip', help: 'a malformed row is reported and skipped, or fails the run' },
  'no-packing': { type: 'boolean', help: 'one example per row instead of packing several' },
  'text-sampling': { type: 'string', value: 'line|paragraph|document', default: 'line', help: '.txt files: a row per line, paragraph or file' },
};

export async function fileBytes(path: string, flag: string): Promise<DatasetFile> {
  const info = await stat(path).catch(() => null);
  if (!info) throw new UsageError(`--${flag}: no file '${path}'`);
  if (!info.isFile()) throw new UsageError(`--${flag}: '${path}' is not a file`);
  return { name: basename(path), bytes: new Uint8Array(await readFile(path)) };
}

export interface OpenedModel {
  gpu: Gpu;
  source: ModelSource;
  ckpt: Checkpoint;
  tokenizer: Tokenizer;
}

/** Notes on what was loaded (a config field the engine does not know, ...), on stderr whatever the output mode. */
export function warn(warnings: string[]): void {
  for (const w of warnings) console.warn(`warning: ${w}`);
}

export async function openModel(values: FlagValues, log: (line: string) => void): Promise<OpenedModel> {
  const source = await resolveSource(values.model as string, { endpoint: values.hub as string | undefined });
  const ckpt = await openCheckpoint(source);
  const tokenizer = await loadTokenizer(source);
  const gpu = await requestDevice({ powerPreference: 'high-performance' });
  const c = ckpt.config;
  log(`device:  ${gpu.describe()}`);
  log(`model:   ${source.description}: ${c.architecture}, ${c.numLayers} layers, d=${c.hiddenSize}, vocab ${c.vocabSize}, ${c.maxPositions} positions`);
  warn(c.warnings);
  return { gpu, source, ckpt, tokenizer };
}

/** The dataset flags read and checked before any model loads: files present and of a known format, choices valid. */
export interface DataFlags {
  data: DatasetFile;
  validation: number | DatasetFile[];
  options: Omit<DatasetOptions, 'seqLength' | 'validation'>;
  /** --seq-len as given (checked against the model's positions once it is open). */
  seqLength?: number;
}

export async function readDataFlags(values: FlagValues): Promise<DataFlags> {
  const validationText = String(values.validation ?? '0');
  const fraction = Number(validationText);
  const validation = validationText.trim() !== '' && Number.isFinite(fraction)
    ? (fraction >= 0 && fraction < 1 ? fraction : (() => { throw new UsageError(`--validation must be a fraction in [0, 1) or a file, got '${validationText}'`); })())
    : [await datasetFile(validationText, 'validation')];
  return {
    data: await datasetFile(values.data as string, 'data'),
    validation,
    seqLength: optionalNumber(values, 'seq-len', { integer: true, min: 2 }),
    options: {
      format: choiceFlag(values, 'format', ['auto', 'text', 'prompt-completion', 'chat'] as const),
      lossOn: choiceFlag(values, 'loss-on', ['completion', 'all'] as const),
      longRows: choiceFlag(values, 'long-rows', ['skip', 'truncate', 'split'] as const),
      onBadRow: choiceFlag(values, 'bad-rows', ['skip', 'fail'] as const),
      pack: !values['no-packing'],
      textSampling: choiceFlag(values, 'text-sampling', ['line', 'paragraph', 'document'] as const),
    },
  };
}

/** A dataset file's bytes, its format known by its name. */
async function datasetFile(path: string, flag: string): Promise<DatasetFile> {
  try {
    fileFormat(path);
  } catch (e) {
    if (e instanceof DatasetError) throw new UsageError(`--${flag}: ${e.message}`);
    throw e;
  }
  return fileBytes(path, flag);
}

/** The dataset of the flags read earlier, tokenized; the sequence is checked against the model's positions. */
export async function datasetFromFlags(flags: DataFlags, m: OpenedModel): Promise<TrainingData> {
  const maxPositions = m.ckpt.config.maxPositions;
  if (flags.seqLength !== undefined && flags.seqLength > maxPositions) throw new UsageError(`--seq-len must be an integer >= 2 and <= ${maxPositions} (the model's positions), got '${flags.seqLength}'`);
  const seqLength = flags.seqLength ?? Math.min(maxPositions, TRAINING_DEFAULTS.maxSeqLength);
  return loadDataset(flags.data, m.tokenizer, { ...flags.options, seqLength, validation: flags.validation });
}

export function describeDataset(d: TrainingData): string[] {
  const r = d.report;
  const p = r.packing;
  const lines = [
    `data:    ${r.files.join(', ')}: ${r.format}, ${r.records} rows read -> ${r.examples} examples (${r.validationExamples} held out)${r.skipped ? `, ${r.skipped} bad rows left out` : ''}; ${r.tokens} training tokens (${r.trainedTokens} trained on)`,
    `packing: ${p.rows} rows of ${d.train.S} tokens, ${(100 * p.waste).toFixed(1)}% padding (${(100 * p.unpackedWaste).toFixed(1)}% with one example per row)`,
  ];
  if (r.skipped) {
    lines.push(`skipped: ${r.skipped} bad row${r.skipped === 1 ? '' : 's'}${r.skipped > REPORTED_PROBLEMS ? `, the first ${REPORTED_PROBLEMS}` : ''}:`);
    for (const problem of r.problems) lines.push(`         ${formatProblem(problem)}`);
  }
  return lines;
}
