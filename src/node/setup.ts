/**
 * What several commands share: the flags naming a model, a dataset and a method, read and checked
 * into the library's options, and the shipped defaults (the pretrained tiny base, its sample dataset).
 */
import { readFile, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { requestDevice } from '../gpu/device.js';
import type { Gpu } from '../gpu/gpu.js';
import { resolveSource, type ModelSource } from '../io/sources.js';
import { openCheckpoint, type Checkpoint } from '../model/checkpoint.js';
import { QUANT_FORMATS, type QuantizeOption } from '../model/quantized-weights.js';
import { fileUrlPath, PRETRAINED_BASE, shippedDatasetUrl, shippedModelUrl } from '../model/shipped.js';
import { loadTokenizer, type Tokenizer } from '../data/tokenizer.js';
import { formatProblem, loadDataset, REPORTED_PROBLEMS, type DatasetOptions, type TrainingData } from '../data/dataset.js';
import { DatasetError, fileFormat, type DatasetFile } from '../data/records.js';
import { methodNames, METHODS, type MethodName, type MethodOptions } from '../methods/registry.js';
import { BLOCK_SIZES, SELECTIONS, SparseMask, type BlockSize, type Granularity, type Selection } from '../methods/sparse/index.js';
import { choiceFlag, numberFlag, optionalNumber, UsageError, type FlagTable, type FlagValues } from './flags.js';

export const SHIPPED_MODEL = fileUrlPath(shippedModelUrl()).replace(/\/$/, '');
export const SHIPPED_DATASET = fileUrlPath(shippedDatasetUrl());

export const MODEL_FLAGS: FlagTable = {
  model: { type: 'string', value: 'PATH|ID|URL', default: SHIPPED_MODEL, shownDefault: `the shipped ${PRETRAINED_BASE.name}`, help: 'a model folder, a hub id or a URL' },
  hub: { type: 'string', value: 'ENDPOINT', help: 'hub endpoint for hub ids (default https://huggingface.co)' },
};

export const DATA_FLAGS: FlagTable = {
  data: { type: 'string', value: 'FILE', default: SHIPPED_DATASET, shownDefault: 'the shipped sample, datasets/next-letter.jsonl', help: 'training data: .jsonl/.json (text, prompt+completion or chat messages), .txt or .parquet' },
  validation: { type: 'string', value: 'FRACTION|FILE', default: '0.05', help: 'held-out rows: a fraction of the data, or a file' },
  format: { type: 'string', value: 'auto|text|prompt-completion|chat', default: 'auto', help: 'row format' },
  'loss-on': { type: 'string', value: 'completion|all', default: 'completion', help: 'train on completions and assistant turns only, or on every token' },
  'seq-len': { type: 'string', value: 'N', help: 'tokens per packed row (default: the model\'s positions, at most 1024)' },
  'long-rows': { type: 'string', value: 'skip|truncate|split', default: 'skip', help: 'rows longer than the sequence: reported and skipped, cut, or (text) split' },
  'bad-rows': { type: 'string', value: 'skip|fail', default: 'skip', help: 'a malformed row is reported and skipped, or fails the run' },
  'no-packing': { type: 'boolean', help: 'one example per row instead of packing several' },
  'text-sampling': { type: 'string', value: 'line|paragraph|document', default: 'line', help: '.txt files: a row per line, paragraph or file' },
};

export const METHOD_FLAGS: FlagTable = {
  method: { type: 'string', value: methodNames().join('|'), default: 'lora', help: 'what trains' },
  rank: { type: 'string', value: 'R', default: '16', help: 'LoRA rank' },
  alpha: { type: 'string', value: 'A', help: 'LoRA alpha (default 2 x rank)' },
  dropout: { type: 'string', value: 'P', default: '0', help: 'LoRA dropout' },
  'target-modules': { type: 'string', value: 'LIST', default: 'all-linear', help: 'comma-separated layers LoRA adapts (q_proj,v_proj,... or all-linear)' },
  quantize: { type: 'string', value: QUANT_FORMATS.join('|'), help: 'store the frozen base 4-bit (QLoRA with --method lora)' },
  'double-quant': { type: 'boolean', help: 'nf4: store the absmax 8-bit too' },
  mask: { type: 'string', value: 'FILE', help: 'sparse methods: a saved mask (select-mask)' },
  selection: { type: 'string', value: SELECTIONS.join('|'), default: 'sylva', help: 'sparse methods without --mask: how the mask is chosen (data-driven ones calibrate on the training rows)' },
  density: { type: 'string', value: 'X', default: '0.01', help: 'sparse methods: fraction of each weight that trains' },
  granularity: { type: 'string', value: `element|${BLOCK_SIZES.join('|')}`, default: 'element', help: 'sparse methods: single weights or square blocks' },
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
  const seqLength = flags.seqLength ?? Math.min(maxPositions, 1024);
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

/** The method flags, checked against each other before any model loads (a mask file is read, not yet parsed). */
export interface MethodFlags {
  method: MethodName;
  lora: { rank: number; alpha?: number; dropout: number; targetModules: string[] };
  quantize?: QuantizeOption;
  /** Sparse methods: a saved mask, or how to choose one. */
  sparse?: { maskFile: DatasetFile } | { selection: Selection; density: number; granularity: Granularity };
}

export async function readMethodFlags(values: FlagValues): Promise<MethodFlags> {
  const method = choiceFlag(values, 'method', methodNames());
  const usesLora = method === 'lora' || method === 'sparse+lora';
  const sparse = method === 'sparse' || method === 'sparse+lora';
  const loraFlags = ['alpha'].filter((f) => values[f] !== undefined);
  if (!usesLora && loraFlags.length) throw new UsageError(`--${loraFlags[0]} applies to LoRA (--method lora or sparse+lora), not '${method}'`);
  const sparseGiven = ['mask', 'selection', 'density', 'granularity'].filter((f) => values[f] !== undefined && values[f] !== METHOD_FLAGS[f].default);
  if (!sparse && sparseGiven.length) throw new UsageError(`--${sparseGiven[0]} applies to the sparse methods (sparse, sparse+lora), not '${method}'`);
  let quantize: QuantizeOption | undefined;
  if (values.quantize !== undefined) {
    const format = choiceFlag(values, 'quantize', QUANT_FORMATS);
    if (METHODS[method].writesBase) throw new UsageError(`--quantize makes the frozen base 4-bit, and '${method}' trains inside the base weights: use --method lora`);
    if (method === 'full') throw new UsageError('--quantize makes the frozen base 4-bit, and full fine-tuning trains every weight: use --method lora');
    if (values['double-quant'] && format !== 'nf4') throw new UsageError('--double-quant quantizes the absmax of NF4: use it with --quantize nf4');
    quantize = values['double-quant'] ? { format, doubleQuant: true } : format;
  } else if (values['double-quant']) throw new UsageError('--double-quant quantizes the absmax of NF4: use it with --quantize nf4');
  const lora = {
    rank: numberFlag(values, 'rank', { integer: true, min: 1, max: 65536 }),
    alpha: optionalNumber(values, 'alpha', { above: 0 }),
    dropout: numberFlag(values, 'dropout', { min: 0, max: 0.99 }),
    targetModules: String(values['target-modules']).split(',').map((t) => t.trim()).filter(Boolean),
  };
  if (lora.targetModules.length === 0) throw new UsageError('--target-modules names no layer');
  if (!sparse) return { method, lora, quantize };
  if (values.mask !== undefined) return { method, lora, quantize, sparse: { maskFile: { ...(await fileBytes(String(values.mask), 'mask')), name: String(values.mask) } } };
  const selection = choiceFlag(values, 'selection', SELECTIONS);
  const density = numberFlag(values, 'density', { above: 0, max: 1 });
  const granularity = values.granularity === 'element' ? 'element' : (numberFlag(values, 'granularity', { integer: true }) as BlockSize);
  if (granularity !== 'element' && !BLOCK_SIZES.includes(granularity)) throw new UsageError(`--granularity must be element or one of ${BLOCK_SIZES.join(', ')}, got '${values.granularity}'`);
  return { method, lora, quantize, sparse: { selection, density, granularity } };
}

/** The method's options for the opened model: a saved mask parsed against it, the options checked against its layers. */
export async function methodFromFlags(flags: MethodFlags, m: OpenedModel): Promise<{ method: MethodName; options: MethodOptions; quantize?: QuantizeOption; select?: { selection: Selection; density: number; granularity: Granularity } }> {
  const { method, lora, quantize } = flags;
  const options: MethodOptions = {};
  let select: { selection: Selection; density: number; granularity: Granularity } | undefined;
  if (flags.sparse) {
    let sparseOptions: NonNullable<MethodOptions['sparse']> = {};
    if ('maskFile' in flags.sparse) {
      const file = flags.sparse.maskFile;
      sparseOptions = { mask: await SparseMask.fromSafetensors(file.bytes, m.ckpt.config, file.name) };
    } else {
      // Data-free selections happen at attach; the others calibrate on the training rows first (see train).
      const { selection, density, granularity } = flags.sparse;
      if (selection === 'random' || selection === 'columns') sparseOptions = { selection, density, granularity };
      else select = { selection, density, granularity };
    }
    if (method === 'sparse') options.sparse = sparseOptions;
    else options['sparse+lora'] = { sparse: sparseOptions, lora };
  } else if (method === 'lora') options.lora = lora;
  METHODS[method].check(m.ckpt.config, (options as Record<string, unknown>)[method] as never); // a bad rank or target fails before any weight loads
  return { method, options, quantize, select };
}
