/**
 * Dataset formats against hand-written expectations (token ids and loss masks), chat templates against
 * transformers.js's own rendering, packing's invariants and waste, and the bad-row table: every
 * malformed row reported with its file, line and reason.
 */
import { describe, expect, it } from 'vitest';
import { PreTrainedTokenizer } from '@huggingface/transformers';
import { parquetWriteBuffer } from 'hyparquet-writer';
import { byteTokenizerFiles } from '../../src/data/byte-tokenizer.js';
import { ChatTemplate, type ChatMessage } from '../../src/data/chat-template.js';
import { DatasetRowsError, loadDataset, type DatasetOptions } from '../../src/data/dataset.js';
import { firstFitDecreasing, PackedRows } from '../../src/data/packing.js';
import { DatasetError, type DatasetFile } from '../../src/data/records.js';
import { skillExamples } from '../../src/data/skills.js';
import { loadTokenizer } from '../../src/data/tokenizer.js';
import type { TextTokenizer } from '../../src/data/examples.js';
import { memorySource } from '../../src/io/sources.js';
import templates from '../fixtures/chat-templates.json';
import { freshSeed, rng } from '../helpers.js';

const EOT = 256;
const PAD = 257;
const bytes = (s: string) => [...new TextEncoder().encode(s)];
const file = (name: string, text: string | Uint8Array): DatasetFile => ({ name, bytes: typeof text === 'string' ? new TextEncoder().encode(text) : text });
const jsonl = (rows: unknown[]) => rows.map((r) => JSON.stringify(r)).join('\n');

let tokenizerPromise: Promise<TextTokenizer> | null = null;
/** The shipped tiny models' byte-level tokenizer (one token per byte, EOS 256, PAD 257) with their chat template. */
function byteTokenizer(): Promise<TextTokenizer> {
  tokenizerPromise ??= loadTokenizer(memorySource({ ...byteTokenizerFiles('PreTrainedTokenizerFast', 128) }));
  return tokenizerPromise;
}

/** One unpacked example per row: the row's ids and loss mask up to its padding. */
async function rowsOf(f: DatasetFile, o: Partial<DatasetOptions> = {}) {
  const d = await loadDataset(f, await byteTokenizer(), { seqLength: 64, pack: false, ...o });
  const S = d.train.S;
  return {
    report: d.report,
    rows: Array.from({ length: d.train.rows }, (_, r) => {
      const ids = Array.from(d.train.ids.subarray(r * S, (r + 1) * S));
      const mask = Array.from(d.train.lossMask.subarray(r * S, (r + 1) * S));
      const n = d.train.segments.subarray(r * S, (r + 1) * S).filter((s) => s === 0).length;
      return { ids: ids.slice(0, n), mask: mask.slice(0, n), padding: ids.slice(n) };
    }),
  };
}

describe('dataset formats', () => {
  it('prompt and completion: the completion and EOS trained, the prompt not (or everything when asked)', async () => {
    const f = file('pc.jsonl', jsonl([{ prompt: 'shift:ab=', completion: 'bc' }, { prompt: '', completion: 'x' }]));
    const { rows, report } = await rowsOf(f);
    expect(report.format).toBe('prompt-completion');
    expect(rows[0].ids).toEqual([...bytes('shift:ab='), ...bytes('bc'), EOT]);
    expect(rows[0].mask).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1]);
    expect(rows[0].padding.every((t) => t === PAD)).toBe(true);
    expect(rows[1].ids).toEqual([...bytes('x'), EOT]);
    expect(rows[1].mask).toEqual([1, 1]);
    const all = await rowsOf(f, { lossOn: 'all' });
    expect(all.rows[0].mask).toEqual(rows[0].ids.map(() => 1));
  });

  it('text: every token trained, EOS appended; .txt by line, paragraph or whole file', async () => {
    const { rows, report } = await rowsOf(file('t.jsonl', jsonl([{ text: 'hello' }])));
    expect(report.format).toBe('text');
    expect(rows[0].ids).toEqual([...bytes('hello'), EOT]);
    expect(rows[0].mask).toEqual([1, 1, 1, 1, 1, 1]);
    const txt = 'one\ntwo\n\nthree\r\nfour\n';
    expect((await rowsOf(file('t.txt', txt))).rows.map((r) => r.ids)).toEqual(['one', 'two', 'three', 'four'].map((s) => [...bytes(s), EOT]));
    expect((await rowsOf(file('t.txt', txt), { textSampling: 'paragraph' })).rows.map((r) => r.ids)).toEqual(['one\ntwo', 'three\nfour'].map((s) => [...bytes(s), EOT]));
    expect((await rowsOf(file('t.txt', txt), { textSampling: 'document' })).rows.map((r) => r.ids)).toEqual([[...bytes(txt), EOT]]);
  });

  it('chat: rendered by the model template, assistant turns (and their end token) trained', async () => {
    const messages = [
      { role: 'system', content: 'sys' },
      { role: 'user', content: 'shift:ab' },
      { role: 'assistant', content: 'bc' },
      { role: 'user', content: 'shift:z' },
      { role: 'assistant', content: 'a' },
    ];
    const { rows, report } = await rowsOf(file('c.jsonl', jsonl([{ messages }])));
    expect(report.format).toBe('chat');
    // The shipped template: system + '\n', user + '=', assistant + end-of-text.
    expect(rows[0].ids).toEqual([...bytes('sys\nshift:ab='), ...bytes('bc'), EOT, ...bytes('shift:z='), ...bytes('a'), EOT]);
    expect(rows[0].mask).toEqual([...bytes('sys\nshift:ab=').map(() => 0), 1, 1, 1, ...bytes('shift:z=').map(() => 0), 1, 1]);
    const all = await rowsOf(file('c.jsonl', jsonl([{ messages }])), { lossOn: 'all' });
    expect(all.rows[0].mask.every((m) => m === 1)).toBe(true);
  });

  it('a JSON array, other field names, and Parquet (flat columns and nested messages) read as JSON Lines do', async () => {
    const want = (await rowsOf(file('a.jsonl', jsonl([{ prompt: 'p=', completion: 'q' }, { prompt: 'r=', completion: 's' }])))).rows;
    expect((await rowsOf(file('a.json', JSON.stringify([{ prompt: 'p=', completion: 'q' }, { prompt: 'r=', completion: 's' }])))).rows).toEqual(want);
    const renamed = await rowsOf(file('b.jsonl', jsonl([{ q: 'p=', a: 'q' }, { q: 'r=', a: 's' }])), { format: 'prompt-completion', fields: { prompt: 'q', completion: 'a' } });
    expect(renamed.rows).toEqual(want);
    const flat = parquetWriteBuffer({ columnData: [{ name: 'prompt', data: ['p=', 'r='], type: 'STRING' }, { name: 'completion', data: ['q', 's'], type: 'STRING' }] });
    expect((await rowsOf(file('a.parquet', new Uint8Array(flat)))).rows).toEqual(want);
    const conversation = [{ role: 'user', content: 'shift:ab' }, { role: 'assistant', content: 'bc' }];
    const nested = parquetWriteBuffer({
      columnData: [{ name: 'messages', data: [conversation] }],
      schema: [
        { name: 'root', num_children: 1 },
        { name: 'messages', repetition_type: 'OPTIONAL', converted_type: 'LIST', num_children: 1 },
        { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
        { name: 'element', repetition_type: 'OPTIONAL', num_children: 2 },
        { name: 'role', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
        { name: 'content', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
      ],
    });
    const chat = await rowsOf(file('c.parquet', new Uint8Array(nested)));
    expect(chat.report.format).toBe('chat');
    expect(chat.rows[0].ids).toEqual([...bytes('shift:ab=bc'), EOT]);
  });

  it('a validation fraction is a seeded draw; a validation file is read in the training format', async () => {
    const rows = Array.from({ length: 40 }, (_, i) => ({ prompt: `n${i}=`, completion: 'x' }));
    const tok = await byteTokenizer();
    const a = await loadDataset(file('d.jsonl', jsonl(rows)), tok, { seqLength: 32, validation: 0.25, seed: 3 });
    const b = await loadDataset(file('d.jsonl', jsonl(rows)), tok, { seqLength: 32, validation: 0.25, seed: 3 });
    expect(a.report.validationExamples).toBe(10);
    expect(a.report.examples).toBe(40);
    expect(Array.from(a.validation!.ids)).toEqual(Array.from(b.validation!.ids));
    const held = await loadDataset(file('d.jsonl', jsonl(rows)), tok, { seqLength: 32, validation: [file('v.jsonl', jsonl(rows.slice(0, 3)))] });
    expect(held.report.validationExamples).toBe(3);
    expect(held.report).toMatchObject({ records: 43, examples: 43 }); // both files' rows
    await expect(loadDataset(file('d.jsonl', jsonl(rows)), tok, { seqLength: 32, validation: [file('v.jsonl', jsonl([{ text: 'x' }]))] })).resolves.toMatchObject({ validation: null, report: { skipped: 1 } });
  });
});

describe('chat templates', () => {
  const conversations: ChatMessage[][] = [
    [{ role: 'user', content: 'Hello, how are you?' }, { role: 'assistant', content: "I'm doing great." }, { role: 'user', content: 'Show me templates!' }],
    [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello' }],
    [{ role: 'user', content: 'Q1' }, { role: 'assistant', content: 'A1' }, { role: 'user', content: 'Q2' }, { role: 'assistant', content: 'A2' }],
  ];
  const entries = Object.entries(templates.templates);

  it.each(entries)('%s renders exactly as transformers.js renders it, with and without the generation prompt', (_, t) => {
    const config = { ...JSON.parse(byteTokenizerFiles('PreTrainedTokenizerFast', 128)['tokenizer_config.json']), ...t };
    const theirs = new PreTrainedTokenizer(JSON.parse(byteTokenizerFiles('PreTrainedTokenizerFast', 128)['tokenizer.json']), config);
    const ours = ChatTemplate.fromTokenizerConfig(config)!;
    let rendered = 0;
    for (const messages of conversations) {
      for (const addGenerationPrompt of [false, true]) {
        let want: string | null;
        try {
          want = theirs.apply_chat_template(messages, { tokenize: false, add_generation_prompt: addGenerationPrompt }) as string;
        } catch {
          want = null; // the template refuses this conversation (a system turn, say); so must ours
        }
        if (want === null) expect(() => ours.render(messages, { addGenerationPrompt })).toThrow();
        else {
          expect(ours.render(messages, { addGenerationPrompt })).toBe(want);
          rendered++;
        }
      }
    }
    expect(rendered).toBeGreaterThan(0);
  });

  it.each(entries)('%s: the spans put the rendering back together, each assistant span holding its reply', (_, t) => {
    const template = ChatTemplate.fromTokenizerConfig({ ...t })!;
    for (const messages of [conversations[2], conversations[0]]) {
      const spans = template.spans(messages);
      expect(spans.map((s) => s.text).join('')).toBe(template.render(messages));
      const replies = messages.filter((m) => m.role === 'assistant').map((m) => m.content);
      const assistant = spans.filter((s) => s.assistant).map((s) => s.text);
      expect(assistant).toHaveLength(replies.length);
      assistant.forEach((a, i) => expect(a).toContain(replies[i]));
      for (const s of spans.filter((x) => !x.assistant)) for (const r of replies) expect(s.text).not.toContain(r);
      // Every reply but a conversation's last is closed by its end-of-turn text, which trains.
      for (const a of assistant.slice(0, -1)) expect(a.length).toBeGreaterThan(2);
    }
  });

  it('a template that writes a turn differently once another follows cannot be split, and says so', () => {
    const template = new ChatTemplate("{% for m in messages %}{% if loop.last %}[{{ m.content }}]{% else %}{{ m.content }};{% endif %}{% endfor %}");
    expect(() => template.spans(conversations[2])).toThrow(/does not render turn 2 as a continuation/);
  });

  it('tokenizing by spans gives the ids of tokenizing the whole rendering (the byte tokenizer)', async () => {
    const tok = await byteTokenizer();
    const theirs = new PreTrainedTokenizer(JSON.parse(byteTokenizerFiles('PreTrainedTokenizerFast', 128)['tokenizer.json']), JSON.parse(byteTokenizerFiles('PreTrainedTokenizerFast', 128)['tokenizer_config.json']));
    const messages = [{ role: 'user', content: 'shift:abc' }, { role: 'assistant', content: 'bcd' }, { role: 'user', content: 'shift:q' }, { role: 'assistant', content: 'r' }];
    const { rows } = await rowsOf(file('c.jsonl', jsonl([{ messages }])));
    const want = Array.from(theirs.apply_chat_template(messages, { tokenize: true, return_tensor: false, return_dict: false }) as number[]);
    expect(rows[0].ids).toEqual(want);
    expect(tok.chatTemplate!.render(messages)).toBe(theirs.apply_chat_template(messages, { tokenize: false }));
  });
});

describe('tokenizer', () => {
  it('encodes, decodes and names special tokens exactly as transformers.js does (the shipped tokenizers)', async () => {
    const seed = freshSeed();
    const rand = rng(seed);
    const alphabet = 'abz=:>; \n\tÄé€😀<|endoftext|><|pad|>';
    for (const cls of ['PreTrainedTokenizerFast', 'GPT2Tokenizer']) {
      const files = byteTokenizerFiles(cls, 128);
      const ours = await loadTokenizer(memorySource({ ...files }));
      const theirs = new PreTrainedTokenizer(JSON.parse(files['tokenizer.json']), JSON.parse(files['tokenizer_config.json']));
      expect([ours.eosTokenId, ours.padTokenId, ours.bosTokenId]).toEqual([theirs.eos_token_id, theirs.pad_token_id, theirs.bos_token_id]);
      for (let i = 0; i < 50; i++) {
        const text = Array.from({ length: 1 + Math.floor(rand() * 30) }, () => [...alphabet][Math.floor(rand() * [...alphabet].length)]).join('');
        for (const special of [true, false]) {
          const ids = ours.encode(text, special);
          expect(ids, `seed ${seed}: ${JSON.stringify(text)}`).toEqual(Array.from(theirs.encode(text, { add_special_tokens: special }) as number[]));
          for (const skip of [true, false]) expect(ours.decode(ids, { skipSpecialTokens: skip })).toBe(theirs.decode(ids, { skip_special_tokens: skip }));
        }
      }
    }
  });
});

describe('packing', () => {
  it('first-fit decreasing: every example once, none across a row, each its own segment, order kept within a row', () => {
    const seed = freshSeed();
    const rand = rng(seed);
    const S = 50;
    const examples = Array.from({ length: 300 }, (_, i) => {
      const n = 2 + Math.floor(rand() * (rand() < 0.1 ? S - 2 : 20));
      return { at: { file: 'x', line: i + 1 }, ids: Array.from({ length: n }, () => Math.floor(rand() * 256)), trained: Uint8Array.from({ length: n }, () => (rand() < 0.5 ? 1 : 0)) };
    });
    const packed = new PackedRows(examples, S, { pack: true, padId: PAD });
    const seen = new Set<number>();
    for (let r = 0; r < packed.rows; r++) {
      let at = r * S;
      const members = packed.members[r];
      expect(members, `seed ${seed}`).toEqual([...members].sort((a, b) => a - b));
      members.forEach((i, k) => {
        expect(seen.has(i), `seed ${seed}: example ${i} twice`).toBe(false);
        seen.add(i);
        const e = examples[i];
        expect(Array.from(packed.ids.subarray(at, at + e.ids.length)), `seed ${seed}`).toEqual(e.ids);
        expect(Array.from(packed.lossMask.subarray(at, at + e.ids.length))).toEqual(Array.from(e.trained));
        expect(packed.segments.subarray(at, at + e.ids.length).every((s) => s === k)).toBe(true);
        at += e.ids.length;
      });
      expect(at, `seed ${seed}: row ${r} overflows`).toBeLessThanOrEqual((r + 1) * S);
      // Padding: its own segment, pad ids, never trained.
      for (let t = at; t < (r + 1) * S; t++) {
        expect(packed.segments[t]).toBe(members.length);
        expect(packed.ids[t]).toBe(PAD);
        expect(packed.lossMask[t]).toBe(0);
      }
    }
    expect(seen.size).toBe(examples.length);
    expect(packed.stats.tokens).toBe(examples.reduce((s, e) => s + e.ids.length, 0));
  });

  it('first-fit decreasing places each item in the first bin with room', () => {
    // Longest first: 7 opens bin 0, 6 bin 1, 5 bin 2, 3 goes to bin 0 (7+3=10), 2 to bin 1, 2 to bin 1 (6+2+2), 1 to bin 2.
    expect(firstFitDecreasing([3, 7, 2, 6, 5, 2, 1], 10)).toEqual([[0, 1], [2, 3, 5], [4, 6]]);
  });

  it('short, varied rows waste under 10% of the slots packed, against most of them unpacked', async () => {
    const rows = skillExamples(1500, 31_000, 'shift').map((e) => ({ prompt: String.fromCharCode(...e.prompt), completion: String.fromCharCode(...e.answer.slice(0, -1)) }));
    const tok = await byteTokenizer();
    const packed = await loadDataset(file('shift.jsonl', jsonl(rows)), tok, { seqLength: 64 });
    const unpacked = await loadDataset(file('shift.jsonl', jsonl(rows)), tok, { seqLength: 64, pack: false });
    expect(packed.report.packing.waste).toBeLessThan(0.1);
    expect(unpacked.report.packing.waste).toBeGreaterThan(0.6);
    expect(packed.report.packing.unpackedWaste).toBeCloseTo(unpacked.report.packing.waste, 12);
    expect(packed.train.rows).toBeLessThan(unpacked.train.rows / 3);
  });
});

describe('bad rows', () => {
  const long = 'x'.repeat(80);
  const table: [string, string, RegExp][] = [
    ['{"prompt": "a=", "completion": "b"', 'invalid JSON', /invalid JSON/],
    ['[1, 2]', 'not an object', /row is an array, not an object/],
    ['"text"', 'a string row', /row is string, not an object/],
    ['{"prompt": "a="}', 'missing completion', /missing field 'completion'/],
    ['{"prompt": 3, "completion": "b"}', 'wrong type', /field 'prompt' is number, not a string/],
    ['{"prompt": "a=", "completion": "  "}', 'empty completion', /field 'completion' is empty/],
    [`{"prompt": "${long}", "completion": "b"}`, 'longer than the sequence', /82 tokens, longer than the sequence \(64\)/],
    ['{"text": "a row of another format"}', 'another format', /missing field 'prompt'/],
  ];

  it('each malformed row is reported with file, line and reason; the good rows train', async () => {
    const lines = ['{"prompt": "good=", "completion": "yes"}', ...table.map(([l]) => l), '', '{"prompt": "also=", "completion": "fine"}'];
    const d = await loadDataset(file('bad.jsonl', lines.join('\n')), await byteTokenizer(), { seqLength: 64 });
    expect(d.report.examples).toBe(2);
    expect(d.report.skipped).toBe(table.length);
    // Every non-empty line is a row read, the unparsable one included: rows = examples + skipped.
    expect(d.report.records).toBe(table.length + 2);
    expect(d.report.problems).toHaveLength(5); // the first five, in file order
    const all = await loadDataset(file('bad.jsonl', lines.join('\n')), await byteTokenizer(), { seqLength: 64, onBadRow: 'fail' }).catch((e) => e);
    expect(all).toBeInstanceOf(DatasetRowsError);
    const problems = (all as DatasetRowsError).problems;
    table.forEach(([, what, reason], i) => {
      expect(problems[i].at, what).toEqual({ file: 'bad.jsonl', line: i + 2 });
      expect(problems[i].reason, what).toMatch(reason);
    });
    expect((all as Error).message).toMatch(/^8 bad rows: bad\.jsonl:2: invalid JSON/);
  });

  it('chat rows: empty conversations, messages without roles or strings, no assistant turn, roles the template refuses', async () => {
    const rows = [
      { messages: [] },
      { messages: 'hi' },
      { messages: [{ content: 'x' }] },
      { messages: [{ role: 'user', content: 5 }] },
      { messages: [{ role: 'user', content: 'shift:a' }] },
      { messages: [{ role: 'tool', content: 'x' }, { role: 'assistant', content: 'y' }] },
      { messages: [{ role: 'user', content: 'shift:a' }, { role: 'assistant', content: 'b' }] },
    ];
    const d = await loadDataset(file('chat.jsonl', jsonl(rows)), await byteTokenizer(), { seqLength: 64, onBadRow: 'fail' }).catch((e) => e as DatasetRowsError);
    expect((d as DatasetRowsError).problems.map((p) => [p.at.line, p.reason])).toEqual([
      [1, "field 'messages' is an empty conversation"],
      [2, "field 'messages' is string, not a list of messages"],
      [3, 'message 1 has no role string'],
      [4, 'message 1 content is number, not a string'],
      [5, 'no assistant turn to train on'],
      [6, expect.stringMatching(/the chat template failed on this conversation \(.*roles are system, user and assistant/)],
    ]);
  });

  it('whole files: an unknown format, bytes that are not UTF-8, a broken Parquet file, nothing usable, a chat dataset without a template', async () => {
    const tok = await byteTokenizer();
    const o = { seqLength: 64 };
    await expect(loadDataset(file('data.csv', 'a,b'), tok, o)).rejects.toThrow(/data\.csv: unknown dataset format; use \.jsonl, \.json, \.txt or \.parquet/);
    await expect(loadDataset(file('d.jsonl', new Uint8Array([0x7b, 0xff, 0xfe])), tok, o)).rejects.toThrow(/d\.jsonl: is not UTF-8 text/);
    await expect(loadDataset(file('d.parquet', new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9])), tok, o)).rejects.toThrow(/d\.parquet: not a readable Parquet file/);
    await expect(loadDataset(file('d.jsonl', ''), tok, o)).rejects.toThrow(/d\.jsonl: no rows/);
    await expect(loadDataset(file('d.jsonl', '{"a": 1}'), tok, o)).rejects.toThrow(/no row has a 'text', 'prompt' and 'completion', or 'messages' field/);
    await expect(loadDataset(file('d.jsonl', '{"text": ""}\n{"text": 3}'), tok, o)).rejects.toThrow(/no usable training rows; 2 bad rows, first: d\.jsonl:1: field 'text' is empty/);
    await expect(loadDataset(file('d.json', '[{"text": "a"'), tok, o)).rejects.toThrow(/d\.json: invalid JSON/);
    const plain: TextTokenizer = { encode: (t, special) => tok.encode(t, special), eosTokenId: tok.eosTokenId, padTokenId: tok.padTokenId, chatTemplate: null };
    await expect(loadDataset(file('c.jsonl', jsonl([{ messages: [{ role: 'user', content: 'a' }] }])), plain, o)).rejects.toThrow(/needs the model's chat template/);
    await expect(loadDataset(file('c.jsonl', jsonl([{ text: 'a' }])), tok, { seqLength: 64, longRows: 'split', format: 'chat' })).rejects.toThrow(/'split' applies to text rows/);
    for (const e of [await loadDataset(file('data.csv', ''), tok, o).catch((x) => x)]) expect(e).toBeInstanceOf(DatasetError);
  });

  it('long rows: truncated to the sequence, or (text) split into pieces, when asked', async () => {
    const tok = await byteTokenizer();
    const text = 'y'.repeat(100);
    const split = await loadDataset(file('t.jsonl', jsonl([{ text }])), tok, { seqLength: 64, longRows: 'split', pack: false });
    expect(split.report.examples).toBe(2);
    expect(split.report.tokens).toBe(101);
    const cut = await loadDataset(file('p.jsonl', jsonl([{ prompt: 'a=', completion: text }])), tok, { seqLength: 64, longRows: 'truncate' });
    expect(cut.report.tokens).toBe(64);
    const promptOnly = await loadDataset(file('p.jsonl', jsonl([{ prompt: text, completion: 'b' }, { prompt: 'a=', completion: 'b' }])), tok, { seqLength: 64, longRows: 'truncate' });
    expect(promptOnly.report.problems[0].reason).toMatch(/nothing to train on within the first 64 tokens/);
  });
});
