/**
 * Dataset files as records with their locations: JSON Lines (one object per line), a JSON array,
 * plain text, and Parquet (the format of datasets on the Hugging Face hub, read by hyparquet). A record
 * is any JSON value; what it must hold is decided later (src/data/examples.ts). Lines that are not JSON
 * are reported with file and line, not thrown, so one bad row does not lose a file.
 */
import { WebGPUFinetuneError } from '../errors.js';
import { brief } from '../io/strict-json.js';

/** A dataset file by name (its extension picks the format) with its bytes. */
export interface DatasetFile {
  name: string;
  bytes: Uint8Array;
}

/** Where a record came from: file and 1-based line (JSONL, text) or row (JSON array, Parquet). */
export interface RecordLocation {
  file: string;
  line: number;
}

export interface DataRecord {
  at: RecordLocation;
  value: unknown;
}

/** A row that cannot be used, and why. */
export interface RowProblem {
  at: RecordLocation;
  reason: string;
}

export type FileFormat = 'jsonl' | 'json' | 'text' | 'parquet';

/** How a text file becomes records (as Hugging Face datasets' text loader): a line, a paragraph, or the whole file each. */
export type TextSampling = 'line' | 'paragraph' | 'document';

/** A dataset file that cannot be read at all (unknown format, not UTF-8, a broken Parquet file). */
export class DatasetError extends WebGPUFinetuneError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('invalid-dataset', message, options);
  }
}

/** Files above this are refused unread: a dataset is tokenized in memory. */
export const MAX_DATASET_BYTES = 2 ** 31 - 1;

export function fileFormat(name: string): FileFormat {
  const lower = name.toLowerCase();
  if (/\.(jsonl|ndjson)$/.test(lower)) return 'jsonl';
  if (lower.endsWith('.json')) return 'json';
  if (/\.(txt|text|md)$/.test(lower)) return 'text';
  if (lower.endsWith('.parquet')) return 'parquet';
  throw new DatasetError(`${name}: unknown dataset format; use .jsonl, .json, .txt or .parquet`);
}

function utf8(file: DatasetFile): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(file.bytes).replace(/^\uFEFF/, '');
  } catch (e) {
    throw new DatasetError(`${file.name}: is not UTF-8 text`, { cause: e });
  }
}

/** Records of a file and the lines that are no records. */
export async function readRecords(file: DatasetFile, o: { textSampling?: TextSampling } = {}): Promise<{ records: DataRecord[]; problems: RowProblem[] }> {
  if (file.bytes.byteLength > MAX_DATASET_BYTES) throw new DatasetError(`${file.name}: ${file.bytes.byteLength} bytes is more than this reader holds (${MAX_DATASET_BYTES})`);
  const format = fileFormat(file.name);
  if (format === 'parquet') return { records: await parquetRecords(file), problems: [] };
  const text = utf8(file);
  if (format === 'text') return { records: textRecords(file.name, text, o.textSampling ?? 'line'), problems: [] };
  if (format === 'json' && /^\s*\[/.test(text)) return { records: jsonArrayRecords(file.name, text), problems: [] };
  return jsonLines(file.name, text);
}

function jsonLines(name: string, text: string): { records: DataRecord[]; problems: RowProblem[] } {
  const records: DataRecord[] = [];
  const problems: RowProblem[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].replace(/\r$/, '');
    if (line.trim() === '') continue;
    const at = { file: name, line: i + 1 };
    try {
      records.push({ at, value: JSON.parse(line) });
    } catch (e) {
      problems.push({ at, reason: `invalid JSON (${brief((e as Error).message, 80)})` });
    }
  }
  return { records, problems };
}

function jsonArrayRecords(name: string, text: string): DataRecord[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new DatasetError(`${name}: invalid JSON (${brief((e as Error).message, 80)}); a .json dataset is an array of rows or one row per line`, { cause: e });
  }
  return (value as unknown[]).map((v, i) => ({ at: { file: name, line: i + 1 }, value: v }));
}

function textRecords(name: string, text: string, sampling: TextSampling): DataRecord[] {
  const lines = text.split('\n').map((l) => l.replace(/\r$/, ''));
  if (sampling === 'document') return text.trim() === '' ? [] : [{ at: { file: name, line: 1 }, value: { text } }];
  const records: DataRecord[] = [];
  if (sampling === 'line') {
    lines.forEach((l, i) => {
      if (l.trim() !== '') records.push({ at: { file: name, line: i + 1 }, value: { text: l } });
    });
    return records;
  }
  // Paragraphs: runs of non-blank lines, located at their first line.
  let start = -1;
  for (let i = 0; i <= lines.length; i++) {
    const blank = i === lines.length || lines[i].trim() === '';
    if (!blank && start < 0) start = i;
    if (blank && start >= 0) {
      records.push({ at: { file: name, line: start + 1 }, value: { text: lines.slice(start, i).join('\n') } });
      start = -1;
    }
  }
  return records;
}

async function parquetRecords(file: DatasetFile): Promise<DataRecord[]> {
  const { parquetReadObjects } = await import('hyparquet');
  const b = file.bytes;
  const buffer = b.byteOffset === 0 && b.byteLength === b.buffer.byteLength ? (b.buffer as ArrayBuffer) : (b.slice().buffer as ArrayBuffer);
  let rows: Record<string, unknown>[];
  try {
    rows = await parquetReadObjects({ file: buffer });
  } catch (e) {
    throw new DatasetError(`${file.name}: not a readable Parquet file (${brief((e as Error).message, 120)})`, { cause: e });
  }
  return rows.map((value, i) => ({ at: { file: file.name, line: i + 1 }, value: plainValue(value) }));
}

/** Parquet values as JSON would hold them: BigInts as numbers where exact (row ids, counts). */
function plainValue(v: unknown): unknown {
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v;
  if (Array.isArray(v)) return v.map(plainValue);
  if (v && typeof v === 'object' && !(v instanceof Uint8Array) && !(v instanceof Date)) {
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plainValue(x)]));
  }
  return v;
}
