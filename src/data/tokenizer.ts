/**
 * Tokenizers through @huggingface/transformers, built from the tokenizer.json and tokenizer_config.json
 * of any model source (hub, folder, File objects) so tokenizer and weights always come from one place.
 * The class is chosen the way AutoTokenizer does, by tokenizer_config.tokenizer_class.
 */
import type { PreTrainedTokenizer } from '@huggingface/transformers';
import { WebGPUFinetuneError } from '../errors.js';
import { MalformedFileError, ModelSourceError, readJson, resolveSource, type HubOptions, type SourceLike } from '../io/sources.js';
import { brief } from '../io/strict-json.js';
import { ChatTemplate } from './chat-template.js';
import type { TextTokenizer } from './examples.js';

export type Tokenizer = PreTrainedTokenizer;

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

/** The tokenizer of a model: the same sources as the weights (hub id or URL, folder, File objects). */
export async function loadTokenizer(from: SourceLike, hub: HubOptions = {}): Promise<Tokenizer> {
  const source = await resolveSource(from, hub);
  const json = await readObject(source, () => readJson(source, 'tokenizer.json', MAX_TOKENIZER_BYTES), 'tokenizer.json');
  if (!json) throw new ModelSourceError(`${source.description} has no tokenizer.json (only fast tokenizers are supported)`);
  const config = (await readObject(source, () => readJson(source, 'tokenizer_config.json'), 'tokenizer_config.json')) ?? {};
  // Loaded on first use: the package is large and only tokenization needs it.
  const transformers = (await import('@huggingface/transformers')) as unknown as Record<string, unknown>;
  const name = String(config.tokenizer_class ?? 'PreTrainedTokenizer').replace(/Fast$/, '');
  const Class = (transformers[name] ?? transformers.PreTrainedTokenizer) as new (json: unknown, config: unknown) => Tokenizer;
  // The library reports malformed files with plain Errors and TypeErrors, some only on first use, so a
  // tokenizer is built and tried once here and any failure is named after its file.
  try {
    const tokenizer = new Class(json, config);
    tokenizer.decode(tokenizer.encode('a'));
    return tokenizer;
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    throw new InvalidTokenizerError(`${source.description}: tokenizer.json`, `the tokenizer library cannot use it (${brief(message, 160)})`, { cause: e });
  }
}

/**
 * What the dataset readers use of a tokenizer (src/data/examples.ts): encoding, the EOS and padding
 * ids, and the chat template of its tokenizer_config.json, rendered by src/data/chat-template.ts.
 */
export function textTokenizer(tokenizer: Tokenizer): TextTokenizer {
  const t = tokenizer as unknown as { config?: Record<string, unknown>; eos_token_id?: number | null; pad_token_id?: number | null };
  const id = (v: number | null | undefined) => (typeof v === 'number' && Number.isInteger(v) ? v : null);
  let chatTemplate: ChatTemplate | null | undefined;
  return {
    encode: (text, addSpecialTokens) => Array.from(tokenizer.encode(text, { add_special_tokens: addSpecialTokens }) as number[]),
    eosTokenId: id(t.eos_token_id),
    padTokenId: id(t.pad_token_id),
    get chatTemplate() {
      try {
        return (chatTemplate ??= ChatTemplate.fromTokenizerConfig(t.config ?? {}));
      } catch (e) {
        throw new InvalidTokenizerError('tokenizer_config.json', (e as Error).message, { cause: e });
      }
    },
  };
}
