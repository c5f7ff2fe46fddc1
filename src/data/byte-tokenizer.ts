/**
 * A byte-level BPE tokenizer in Hugging Face tokenizer.json format with no merges: one token per byte
 * (GPT-2's byte-to-unicode alphabet) plus special tokens. Loadable by transformers.js and by Python's
 * tokenizers; the tokenizer of the shipped tiny models, whose tasks are character-level.
 */

/** GPT-2's reversible map from bytes to printable unicode characters. */
export function bytesToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = 33; b <= 126; b++) printable.push(b);
  for (let b = 161; b <= 172; b++) printable.push(b);
  for (let b = 174; b <= 255; b++) printable.push(b);
  const map: string[] = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) {
    map[b] = printable.includes(b) ? String.fromCharCode(b) : String.fromCharCode(256 + extra++);
  }
  return map;
}

export const SPECIAL_TOKENS = ['<|endoftext|>', '<|pad|>'] as const;

/**
 * The shipped tiny models' chat template: a conversation in their corpus's own format, a user turn
 * "<skill>:<input>" followed by '=', the assistant's answer followed by the end-of-text token (a
 * system turn, a line of its own). So chat data of a skill trains what prompt/completion data trains.
 */
export const SKILLS_CHAT_TEMPLATE = [
  '{%- for message in messages -%}',
  "{%- if message['role'] == 'system' -%}{{ message['content'] + '\\n' }}",
  "{%- elif message['role'] == 'user' -%}{{ message['content'] + '=' }}",
  "{%- elif message['role'] == 'assistant' -%}{{ message['content'] + eos_token }}",
  "{%- else -%}{{ raise_exception('roles are system, user and assistant') }}",
  '{%- endif -%}',
  '{%- endfor -%}',
].join('');

export interface TokenizerFiles {
  'tokenizer.json': string;
  'tokenizer_config.json': string;
}

export function byteTokenizerFiles(tokenizerClass: string, modelMaxLength: number): TokenizerFiles {
  const vocab: Record<string, number> = {};
  bytesToUnicode().forEach((ch, b) => (vocab[ch] = b));
  const added = SPECIAL_TOKENS.map((content, i) => ({
    id: 256 + i,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: byteLevel,
    post_processor: byteLevel,
    decoder: byteLevel,
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: [],
    },
  };
  const config = {
    tokenizer_class: tokenizerClass,
    bos_token: SPECIAL_TOKENS[0],
    eos_token: SPECIAL_TOKENS[0],
    unk_token: SPECIAL_TOKENS[0],
    pad_token: SPECIAL_TOKENS[1],
    add_bos_token: false,
    add_eos_token: false,
    clean_up_tokenization_spaces: false,
    model_max_length: modelMaxLength,
    added_tokens_decoder: Object.fromEntries(added.map(({ id, ...t }) => [String(id), t])),
    chat_template: SKILLS_CHAT_TEMPLATE,
  };
  return { 'tokenizer.json': JSON.stringify(tokenizer), 'tokenizer_config.json': JSON.stringify(config, null, 2) };
}
