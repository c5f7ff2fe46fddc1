/**
 * Tokenizers in the formats of the families' tokenizer.json files, trained and run by the tokenizers
 * library (scripts/reference/make_fixtures.py): Llama 3's and Qwen's byte-level BPE (a regex split, bytes
 * as characters, merges ignored for whole-vocabulary words) and Gemma's SentencePiece-style BPE (spaces as
 * U+2581, the 256 byte tokens as fallback). The engine's loader gives the library's ids and texts.
 */
import { describe, expect, it } from 'vitest';
import { memorySource } from '../../src/io/sources.js';
import { loadTokenizer } from '../../src/data/tokenizer.js';
import { list, read, readJson } from './fixtures.js';

interface TokenizerCase {
  text: string;
  ids: number[];
  ids_plain: number[];
  decoded: string;
  decoded_skip: string;
}

describe('tokenizers match the tokenizers library', () => {
  it('has the three formats', () => {
    expect(list('tokenizers')).toEqual(['gemma-sentencepiece-bpe', 'llama3-byte-level-bpe', 'qwen3-byte-level-bpe']);
  });

  it.each(list('tokenizers'))('%s: ids with and without special tokens, and decoding', async (name) => {
    const files = Object.fromEntries(['tokenizer.json', 'tokenizer_config.json'].map((f) => [f, read('tokenizers', name, f)]));
    const tok = await loadTokenizer(memorySource(files));
    const { cases } = readJson<{ cases: TokenizerCase[] }>('tokenizers', name, 'expected.json');
    for (const c of cases) {
      expect(tok.encode(c.text), JSON.stringify(c.text)).toEqual(c.ids);
      expect(tok.encode(c.text, false), JSON.stringify(c.text)).toEqual(c.ids_plain);
      expect(tok.decode(c.ids)).toBe(c.decoded);
      expect(tok.decode(c.ids, { skipSpecialTokens: true })).toBe(c.decoded_skip);
    }
    const config = readJson<Record<string, string>>('tokenizers', name, 'tokenizer_config.json');
    expect(tok.eosTokenId).toBe(tok.encode(config.eos_token, false)[0]);
  });
});
