/**
 * Records to training examples: token ids with a mark on each token the loss trains on. Three row
 * formats, as TRL and Hugging Face datasets write them:
 *   text                 {"text": "..."}: language modelling, every token trained; BOS as the tokenizer adds it, EOS appended
 *   prompt + completion  {"prompt": "...", "completion": "..."}: the completion and EOS trained (or everything)
 *   chat                 {"messages": [{"role": "user", "content": "..."}, ...]}: rendered by the model's chat
 *                        template; assistant turns trained (or everything)
 * Prompt and completion are tokenized apart, as the prompt is at inference, so the trained tokens are
 * the ones the model produces after that prompt. A row that cannot be used becomes a RowProblem naming
 * its file, line and reason.
 */
import { ChatTemplateError, type ChatMessage, type ChatTemplate } from './chat-template.js';
import type { DataRecord, RecordLocation, RowProblem } from './records.js';

export type RowFormat = 'text' | 'prompt-completion' | 'chat';

/** What the loss trains on: completions and assistant turns only, or every token. Text rows train on every token either way. */
export type LossOn = 'completion' | 'all';

/** What happens to a row longer than the sequence: reported and left out, cut to the sequence, or (text) split into pieces. */
export type LongRows = 'skip' | 'truncate' | 'split';

/** What a dataset reader needs of a tokenizer (src/data/tokenizer.ts adapts the tokenizer library's). */
export interface TextTokenizer {
  /** Token ids of `text`; `addSpecialTokens` adds what the tokenizer adds around a sequence (BOS for Llama). */
  encode(text: string, addSpecialTokens: boolean): number[];
  readonly eosTokenId: number | null;
  readonly padTokenId: number | null;
  readonly chatTemplate: ChatTemplate | null;
}

export interface Example {
  at: RecordLocation;
  ids: number[];
  /** 1 where the token is a target (predicted from the tokens before it), 0 where it is context only. */
  trained: Uint8Array;
}

export interface ExampleOptions {
  /** Default 'auto': from the first row's fields (messages, then prompt and completion, then text). */
  format?: RowFormat | 'auto';
  /** Default 'completion'. */
  lossOn?: LossOn;
  /** Tokens per row: the sequence length. */
  maxTokens: number;
  /** Default 'skip'. 'split' applies to text rows only. */
  longRows?: LongRows;
  /** Column names, where a dataset uses others: default text, prompt, completion, messages. */
  fields?: { text?: string; prompt?: string; completion?: string; messages?: string };
}

const describe = (v: unknown) => (v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v);

/** The row format of a dataset: `format`, or what its first usable row holds. */
export function detectFormat(records: DataRecord[], o: Pick<ExampleOptions, 'format' | 'fields'>): RowFormat | null {
  if (o.format && o.format !== 'auto') return o.format;
  const f = fieldNames(o.fields);
  for (const { value } of records) {
    if (!value || typeof value !== 'object' || Array.isArray(value)) continue;
    if (f.messages in value) return 'chat';
    if (f.prompt in value && f.completion in value) return 'prompt-completion';
    if (f.text in value) return 'text';
  }
  return null;
}

function fieldNames(fields: ExampleOptions['fields'] = {}) {
  return { text: fields.text ?? 'text', prompt: fields.prompt ?? 'prompt', completion: fields.completion ?? 'completion', messages: fields.messages ?? 'messages' };
}

/** Tokenize records of one format into examples; rows that cannot be used are returned as problems. */
export function tokenizeRecords(
  records: DataRecord[],
  tokenizer: TextTokenizer,
  format: RowFormat,
  o: ExampleOptions,
): { examples: Example[]; problems: RowProblem[] } {
  const examples: Example[] = [];
  const problems: RowProblem[] = [];
  const longRows = o.longRows ?? 'skip';
  if (longRows === 'split' && format !== 'text') throw new RangeError(`longRows 'split' applies to text rows; this dataset is ${format}: use 'skip' or 'truncate'`);
  if (format === 'chat' && !tokenizer.chatTemplate) throw new RangeError('a chat dataset needs the model\'s chat template, and its tokenizer_config.json has no chat_template');
  for (const record of records) {
    let pieces: { ids: number[]; trained: number[] }[];
    try {
      pieces = [tokenizeRow(record.value, tokenizer, format, o)];
    } catch (e) {
      if (!(e instanceof RowError)) throw e;
      problems.push({ at: record.at, reason: e.message });
      continue;
    }
    const { ids, trained } = pieces[0];
    if (ids.length > o.maxTokens) {
      if (longRows === 'skip') {
        problems.push({ at: record.at, reason: `${ids.length} tokens, longer than the sequence (${o.maxTokens})` });
        continue;
      }
      pieces = [];
      const step = longRows === 'split' ? o.maxTokens : ids.length;
      for (let s = 0; s < ids.length; s += step) pieces.push({ ids: ids.slice(s, s + o.maxTokens), trained: trained.slice(s, s + o.maxTokens) });
    }
    for (const p of pieces) {
      // The first token of a row predicts nothing before it; a piece needs a trained token after it.
      if (p.ids.length < 2 || !p.trained.some((t, i) => t === 1 && i > 0)) {
        problems.push({ at: record.at, reason: ids.length > o.maxTokens ? `nothing to train on within the first ${o.maxTokens} tokens` : 'nothing to train on (no completion or assistant token)' });
        continue;
      }
      examples.push({ at: record.at, ids: p.ids, trained: Uint8Array.from(p.trained) });
    }
  }
  return { examples, problems };
}

class RowError extends Error {}

function tokenizeRow(value: unknown, tok: TextTokenizer, format: RowFormat, o: ExampleOptions): { ids: number[]; trained: number[] } {
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw new RowError(`row is ${describe(value)}, not an object`);
  const row = value as Record<string, unknown>;
  const f = fieldNames(o.fields);
  const all = (o.lossOn ?? 'completion') === 'all';
  const eos = tok.eosTokenId === null ? [] : [tok.eosTokenId];
  const string = (field: string, allowEmpty = false): string => {
    if (!(field in row)) throw new RowError(`missing field '${field}' (this dataset's rows are ${format})`);
    const v = row[field];
    if (typeof v !== 'string') throw new RowError(`field '${field}' is ${describe(v)}, not a string`);
    if (!allowEmpty && v.trim() === '') throw new RowError(`field '${field}' is empty`);
    return v;
  };
  if (format === 'text') {
    const ids = [...tok.encode(string(f.text), true), ...eos];
    return { ids, trained: ids.map(() => 1) };
  }
  if (format === 'prompt-completion') {
    const prompt = tok.encode(string(f.prompt, true), true);
    const completion = [...tok.encode(string(f.completion), false), ...eos];
    return { ids: [...prompt, ...completion], trained: [...prompt.map(() => (all ? 1 : 0)), ...completion.map(() => 1)] };
  }
  const messages = chatMessages(row[f.messages], f.messages);
  if (!all && !messages.some((m) => m.role === 'assistant')) throw new RowError('no assistant turn to train on');
  let spans;
  try {
    spans = tok.chatTemplate!.spans(messages);
  } catch (e) {
    if (e instanceof ChatTemplateError) throw new RowError(e.message);
    throw e;
  }
  const ids: number[] = [];
  const trained: number[] = [];
  for (const s of spans) {
    // Templates write their own special tokens (BOS included), as apply_chat_template tokenizes.
    const piece = tok.encode(s.text, false);
    ids.push(...piece);
    trained.push(...piece.map(() => (all || s.assistant ? 1 : 0)));
  }
  return { ids, trained };
}

function chatMessages(v: unknown, field: string): ChatMessage[] {
  if (v === undefined) throw new RowError(`missing field '${field}' (this dataset's rows are chat)`);
  if (!Array.isArray(v)) throw new RowError(`field '${field}' is ${describe(v)}, not a list of messages`);
  if (v.length === 0) throw new RowError(`field '${field}' is an empty conversation`);
  v.forEach((m, i) => {
    if (!m || typeof m !== 'object' || Array.isArray(m)) throw new RowError(`message ${i + 1} is ${describe(m)}, not an object`);
    const { role, content } = m as Record<string, unknown>;
    if (typeof role !== 'string' || role === '') throw new RowError(`message ${i + 1} has no role string`);
    if (typeof content !== 'string') throw new RowError(`message ${i + 1} content is ${describe(content)}, not a string`);
  });
  return v as ChatMessage[];
}
