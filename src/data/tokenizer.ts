/**
 * Tokenizers through @huggingface/transformers, built from the tokenizer.json and tokenizer_config.json
 * of any model source (hub, folder, File objects) so tokenizer and weights always come from one place.
 * The class is chosen the way AutoTokenizer does, by tokenizer_config.tokenizer_class.
 */
import type { PreTrainedTokenizer } from '@huggingface/transformers';
import { ModelSourceError, readJson, resolveSource, type HubOptions, type SourceLike } from '../io/sources.js';

export type Tokenizer = PreTrainedTokenizer;

/** The tokenizer of a model: the same sources as the weights (hub id or URL, folder, File objects). */
export async function loadTokenizer(from: SourceLike, hub: HubOptions = {}): Promise<Tokenizer> {
  const source = await resolveSource(from, hub);
  const json = await readJson<Record<string, unknown>>(source, 'tokenizer.json');
  if (!json) throw new ModelSourceError(`${source.description} has no tokenizer.json (only fast tokenizers are supported)`);
  const config = (await readJson<Record<string, unknown>>(source, 'tokenizer_config.json')) ?? {};
  // Loaded on first use: the package is large and only tokenization needs it.
  const transformers = (await import('@huggingface/transformers')) as unknown as Record<string, unknown>;
  const name = String(config.tokenizer_class ?? 'PreTrainedTokenizer').replace(/Fast$/, '');
  const Class = (transformers[name] ?? transformers.PreTrainedTokenizer) as new (json: unknown, config: unknown) => Tokenizer;
  return new Class(json, config);
}
