/**
 * A fine-tuning dataset from files: records read (records.ts), tokenized with loss masks
 * (examples.ts), split into training and validation, and packed into rows of the sequence length
 * (packing.ts). Bad rows are never dropped silently: they are counted and the first few reported with
 * file, line and reason, or, with `onBadRow: 'fail'`, the load fails naming them.
 */
import { checkOptionKeys, optionKeys } from '../util/options.js';
import { rng } from '../util/random.js';
import { detectFormat, tokenizeRecords, type Example, type ExampleOptions, type RowFormat, type TextTokenizer } from './examples.js';
import { PackedRows, type PackingStats } from './packing.js';
import { DatasetError, fileFormat, readRecords, type DataRecord, type DatasetFile, type FileFormat, type RowProblem, type TextSampling } from './records.js';

export interface DatasetOptions extends Omit<ExampleOptions, 'maxTokens'> {
  /** Tokens per row. */
  seqLength: number;
  /** A row that cannot be used is left out and reported ('skip', the default) or fails the load. */
  onBadRow?: 'skip' | 'fail';
  /** Held-out rows: a fraction of the examples (drawn with `seed`), or files of their own. Default none. */
  validation?: number | DatasetFile[];
  /** Seed of the validation draw. Default 0. */
  seed?: number;
  /** Several examples per row (default true), or one each. */
  pack?: boolean;
  /** Text files: a record per line (default), paragraph or file. */
  textSampling?: TextSampling;
}

const DATASET_OPTION_KEYS = optionKeys<DatasetOptions>()(['seqLength', 'onBadRow', 'validation', 'seed', 'pack', 'textSampling', 'format', 'lossOn', 'longRows', 'fields']);

/** Problems kept in full in a report; the rest are counted. */
export const REPORTED_PROBLEMS = 5;

export interface DatasetReport {
  files: string[];
  format: RowFormat;
  /**
   * Rows read from every file (a line that is not JSON counts too), examples made from them (training and
   * held out; a split row counts once per piece), and rows left out: records = examples + skipped unless
   * rows were split.
   */
  records: number;
  examples: number;
  skipped: number;
  /** The first REPORTED_PROBLEMS bad rows. */
  problems: RowProblem[];
  /** Tokens of the training examples, and those the loss trains on. */
  tokens: number;
  trainedTokens: number;
  packing: PackingStats;
  validationExamples: number;
}

export interface TrainingData {
  train: PackedRows;
  validation: PackedRows | null;
  report: DatasetReport;
}

/** Bad rows, when the options say a bad row fails the load. */
export class DatasetRowsError extends DatasetError {
  constructor(readonly problems: RowProblem[]) {
    const first = problems.slice(0, REPORTED_PROBLEMS).map((p) => `${p.at.file}:${p.at.line}: ${p.reason}`).join('; ');
    super(`${problems.length} bad row${problems.length === 1 ? '' : 's'}: ${first}${problems.length > REPORTED_PROBLEMS ? '; ...' : ''}`);
  }
}

export function formatProblem(p: RowProblem): string {
  return `${p.at.file}:${p.at.line}: ${p.reason}`;
}

async function examplesOf(files: DatasetFile[], tokenizer: TextTokenizer, o: DatasetOptions, format?: RowFormat) {
  const records: DataRecord[] = [];
  const problems: RowProblem[] = [];
  for (const f of files) {
    const r = await readRecords(f, { textSampling: o.textSampling });
    records.push(...r.records);
    problems.push(...r.problems);
  }
  const detected = format ?? detectFormat(records, o);
  if (!detected) {
    const names = files.map((f) => f.name).join(', ');
    throw new DatasetError(records.length === 0 ? `${names}: no rows` : `${names}: no row has a 'text', 'prompt' and 'completion', or 'messages' field (set the format or the field names)`);
  }
  const t = tokenizeRecords(records, tokenizer, detected, { ...o, maxTokens: o.seqLength });
  // Rows read: the records and the lines that could not be read as one.
  const rows = records.length + problems.length;
  problems.push(...t.problems);
  problems.sort((a, b) => (a.at.file === b.at.file ? a.at.line - b.at.line : 0));
  return { records: rows, examples: t.examples, problems, format: detected };
}

/** Read, tokenize, split and pack a dataset. */
export async function loadDataset(files: DatasetFile | DatasetFile[], tokenizer: TextTokenizer, o: DatasetOptions): Promise<TrainingData> {
  checkOptionKeys('dataset options', o, DATASET_OPTION_KEYS);
  checkOptionKeys('dataset options: fields', o.fields, ['text', 'prompt', 'completion', 'messages']);
  const list = Array.isArray(files) ? files : [files];
  if (list.length === 0) throw new DatasetError('no dataset files given');
  if (!Number.isInteger(o.seqLength) || o.seqLength < 2) throw new RangeError(`seqLength must be an integer >= 2, got ${o.seqLength}`);
  const main = await examplesOf(list, tokenizer, o);
  let train = main.examples;
  let validation: Example[] = [];
  let problems = main.problems;
  let rows = main.records;
  if (Array.isArray(o.validation)) {
    const held = await examplesOf(o.validation, tokenizer, o, main.format);
    validation = held.examples;
    problems = [...problems, ...held.problems];
    rows += held.records;
  } else if (o.validation !== undefined) {
    const fraction = o.validation;
    if (!(fraction >= 0 && fraction < 1)) throw new RangeError(`validation must be a fraction in [0, 1) or files, got ${fraction}`);
    ({ train, validation } = split(main.examples, fraction, o.seed ?? 0));
  }
  if ((o.onBadRow ?? 'skip') === 'fail' && problems.length > 0) throw new DatasetRowsError(problems);
  if (train.length === 0) {
    const why = problems.length ? `; ${problems.length} bad rows, first: ${formatProblem(problems[0])}` : '';
    throw new DatasetError(`${list.map((f) => f.name).join(', ')}: no usable training rows${why}`);
  }
  const padId = tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0;
  const pack = o.pack ?? true;
  const trainRows = new PackedRows(train, o.seqLength, { pack, padId });
  return {
    train: trainRows,
    validation: validation.length ? new PackedRows(validation, o.seqLength, { pack, padId }) : null,
    report: {
      files: list.map((f) => f.name),
      format: main.format,
      records: rows,
      examples: train.length + validation.length,
      skipped: problems.length,
      problems: problems.slice(0, REPORTED_PROBLEMS),
      tokens: trainRows.stats.tokens,
      trainedTokens: train.reduce((sum, e) => sum + e.trained.reduce((a, b) => a + b, 0), 0),
      packing: trainRows.stats,
      validationExamples: validation.length,
    },
  };
}

/** A seeded draw of round(fraction * n) examples (at least one when fraction > 0 and n > 1) for validation. */
function split(examples: Example[], fraction: number, seed: number): { train: Example[]; validation: Example[] } {
  if (fraction === 0) return { train: examples, validation: [] };
  const n = examples.length;
  const count = Math.min(n - 1, Math.max(1, Math.round(fraction * n)));
  const order = examples.map((_, i) => i);
  const rand = rng(seed ^ 0x5eed);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const held = new Set(order.slice(0, count));
  return { train: examples.filter((_, i) => !held.has(i)), validation: examples.filter((_, i) => held.has(i)) };
}

/** A first look at a dataset file before any model is loaded: what a page shows when a file is dropped. */
export interface DatasetPreview {
  name: string;
  bytes: number;
  fileFormat: FileFormat;
  /** Records read, and the row format they have (null: none recognised). */
  records: number;
  format: RowFormat | null;
  /** Records that could not be read (first REPORTED_PROBLEMS), and how many there are in all. */
  problems: RowProblem[];
  problemCount: number;
  /** The first few records, as JSON. */
  sample: string[];
}

/** Read a dataset file's records and report its format and unreadable rows; tokenizing waits for the model. */
export async function previewDataset(file: DatasetFile, o: Pick<DatasetOptions, 'textSampling' | 'format' | 'fields'> = {}): Promise<DatasetPreview> {
  const { records, problems } = await readRecords(file, { textSampling: o.textSampling });
  return {
    name: file.name,
    bytes: file.bytes.byteLength,
    fileFormat: fileFormat(file.name),
    records: records.length,
    format: detectFormat(records, o),
    problems: problems.slice(0, REPORTED_PROBLEMS),
    problemCount: problems.length,
    sample: records.slice(0, 3).map((r) => JSON.stringify(r.value).slice(0, 300)),
  };
}
