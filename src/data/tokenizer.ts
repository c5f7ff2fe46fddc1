/**
 * Tokenizers through @huggingface/tokenizers (what transformers.js is built on), from the tokenizer.json
 * and tokenizer_config.json of any model source (hub, folder, File objects), so tokenizer and weights
 * always come from one place. Special tokens are read from the config as transformers.js reads them
 * (the padding token falls back to the end-of-sequence token), and the chat template is rendered by
 * src/data/chat-template.ts as transformers.js's apply_chat_template renders it.
 */
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { WebGPUFinetuneError } from '../errors.js';
import { MalformedFileError, missingFileMessage, ModelSourceError, readJson, resolveSource, type HubOptions, type SourceLike } from '../io/sources.js';
import { brief } from '../io/strict-json.js';
import { ChatTemplate, type ChatMessage } from './chat-template.js';
import type { TextTokenizer } from './examples.js';

/** A tokenizer file that is malformed or that the tokenizer library cannot build a tokenizer from. */
export class InvalidTokenizerError extends WebGPUFinetuneError {
  constructor(
    readonly file: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super('invalid-tokenizer', `${file}: ${message}`, options);
  }
}

/** tokenizer.json can be tens of megabytes (large vocabularies); beyond this it is refused unread. */
const MAX_TOKENIZER_BYTES = 256 << 20;

async function readObject(source: { description: string }, read: () => Promise<unknown>, file: string): Promise<Record<string, unknown> | null> {
  let json: unknown;
  try {
    json = await read();
  } catch (e) {
    // Network failures and unsafe names stay what they are; a malformed file is the tokenizer's fault.
    if (!(e instanceof MalformedFileError)) throw e;
    throw new InvalidTokenizerError(`${source.description}: ${file}`, e.problem, { cause: e });
  }
  if (json === null) return null;
  if (typeof json !== 'object' || Array.isArray(json)) throw new InvalidTokenizerError(`${source.description}: ${file}`, 'is not a JSON object');
  return json as Record<string, unknown>;
}

/** A special token of tokenizer_config.json: a string, or an AddedToken object with its content. */
function tokenText(config: Record<string, unknown>, ...keys: string[]): string | null {
  for (const key of keys) {
    const v = config[key];
    if (typeof v === 'string' && v) return v;
    if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  }
  return null;
}

/** A model's tokenizer: encoding, decoding, its special token ids and its chat template. */
export class Tokenizer implements TextTokenizer {
  readonly eosTokenId: number | null;
  readonly bosTokenId: number | null;
  readonly padTokenId: number | null;
  private template: ChatTemplate | null | undefined;

  constructor(
    private readonly inner: HfTokenizer,
    /** tokenizer_config.json as read. */
    readonly config: Record<string, unknown>,
  ) {
    const id = (token: string | null) => {
      const v = token === null ? undefined : inner.token_to_id(token);
      return typeof v === 'number' && Number.isInteger(v) ? v : null;
    };
    this.eosTokenId = id(tokenText(config, 'eos_token'));
    this.bosTokenId = id(tokenText(config, 'bos_token'));
    this.padTokenId = id(tokenText(config, 'pad_token', 'eos_token'));
  }

  /** Token ids of `text`; `addSpecialTokens` (default true) adds what the tokenizer adds around a sequence (BOS for Llama). */
  encode(text: string, addSpecialTokens = true): number[] {
    return this.inner.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: ArrayLike<number>, o: { skipSpecialTokens?: boolean } = {}): string {
    return ids.length === 0 ? '' : this.inner.decode(Array.from(ids), { skip_special_tokens: o.skipSpecialTokens ?? false });
  }

  /** The chat template of tokenizer_config.json, or null when it has none. */
  get chatTemplate(): ChatTemplate | null {
    try {
      return (this.template ??= ChatTemplate.fromTokenizerConfig(this.config));
    } catch (e) {
      throw new InvalidTokenizerError('tokenizer_config.json', (e as Error).message, { cause: e });
    }
  }

  /** The conversation rendered by the chat template, as transformers.js's apply_chat_template(messages, { tokenize: false }). */
  applyChatTemplate(messages: ChatMessage[], o: { addGenerationPrompt?: boolean } = {}): string {
    const template = this.chatTemplate;
    if (!template) throw new InvalidTokenizerError('tokenizer_config.json', 'has no chat_template');
    return template.render(messages, o);
  }
}

/** The tokenizer of a model: the same sources as the weights (hub id or URL, folder, File objects). */
export async function loadTokenizer(from: SourceLike, hub: HubOptions = {}): Promise<Tokenizer> {
  const source = await resolveSource(from, hub);
  const json = await readObject(source, () => readJson(source, 'tokenizer.json', MAX_TOKENIZER_BYTES), 'tokenizer.json');
  if (!json) throw new ModelSourceError(missingFileMessage(source, 'tokenizer.json', ' (only fast tokenizers are supported)'));
  const config = (await readObject(source, () => readJson(source, 'tokenizer_config.json'), 'tokenizer_config.json')) ?? {};
  // The library reports malformed files with plain Errors and TypeErrors, some only on first use, so a
  // tokenizer is built and tried once here and any failure is named after its file.
  try {
    const tokenizer = new Tokenizer(new HfTokenizer(json, config), config);
    tokenizer.decode(tokenizer.encode('a'));
    return tokenizer;
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    throw new InvalidTokenizerError(`${source.description}: tokenizer.json`, `the tokenizer library cannot use it (${brief(message, 160)})`, { cause: e });
  }
}
