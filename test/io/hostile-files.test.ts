/**
 * Loading what a careless or hostile user supplies: corrupt safetensors, index files that point outside
 * the model, tensors in two shards, configs with absurd sizes, broken tokenizers and non-sources. Every
 * case must end in a typed error with a short message that names the file, and never read outside the source.
 */
import { describe, expect, it } from 'vitest';
import { WebGPUFinetuneError } from '../../src/errors.js';
import { bytesSource } from '../../src/io/bytes.js';
import { InvalidModelFileError, readHeader } from '../../src/io/safetensors.js';
import { memorySource, ModelSourceError, resolveSource, UnsafeFileNameError, type ModelSource } from '../../src/io/sources.js';
import { InvalidTokenizerError, loadTokenizer } from '../../src/data/tokenizer.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { InvalidConfigError } from '../../src/model/config.js';
import { tinyConfig, tinyModelFiles } from '../../src/model/tiny.js';
import { FineTuner } from '../../src/train/finetuner.js';
import { corruptVariants } from '../fixtures/corrupt.js';
import { shard, type Repo } from '../fixtures/repos.js';
import { freshSeed } from '../helpers.js';

const llama = tinyModelFiles({ architecture: 'llama', seed: 4, hiddenSize: 32, numLayers: 2, numHeads: 4 });

/** A source that records every file it is asked for. */
function watched(files: Repo): { source: ModelSource; opened: string[] } {
  const inner = memorySource(files);
  const opened: string[] = [];
  return { opened, source: { description: 'memory', open: (f) => (opened.push(f), inner.open(f)) } };
}

async function failure(p: Promise<unknown>): Promise<WebGPUFinetuneError> {
  const e = await p.then(
    () => null,
    (err: unknown) => err,
  );
  expect(e, 'expected a failure').toBeInstanceOf(WebGPUFinetuneError);
  expect((e as Error).message.length).toBeLessThan(400);
  return e as WebGPUFinetuneError;
}

describe('corrupt safetensors files', () => {
  it('each of a few hundred corruptions gives a typed, short error or loads a valid file', async () => {
    const seed = freshSeed();
    const variants = corruptVariants(llama['model.safetensors'] as Uint8Array, seed, 250);
    const outcomes = new Map<string, number>();
    for (const v of variants) {
      let outcome = 'loaded';
      try {
        await openCheckpoint(memorySource({ ...llama, 'model.safetensors': v.bytes }));
      } catch (e) {
        if (!(e instanceof WebGPUFinetuneError)) throw new Error(`seed ${seed}, ${v.what}: untyped ${String(e).slice(0, 300)}`);
        expect(e.message.length, `seed ${seed}, ${v.what}`).toBeLessThan(400);
        outcome = e instanceof InvalidModelFileError ? e.rule : e.code;
      }
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    }
    // The named rules all fire somewhere in the set; most damage is caught by the header checks.
    for (const rule of ['size', 'json', 'header-start', 'duplicate-key', 'depth', 'dtype', 'shape', 'offsets', 'coverage', 'metadata']) {
      expect(outcomes.get(rule), `seed ${seed}: no variant broke '${rule}' (${JSON.stringify([...outcomes])})`).toBeGreaterThan(0);
    }
  });
});

describe('file names from an index stay inside the source', () => {
  it.each(['../outside.safetensors', '/etc/passwd', 'shards/../../x.safetensors', './model.safetensors', 'C:\\model.safetensors', 'a//b.safetensors', ''])(
    'refuses a shard named %j without opening it',
    async (name) => {
      const sharded = await shard(llama, 2);
      const index = JSON.parse(sharded['model.safetensors.index.json'] as string) as { weight_map: Record<string, string> };
      const first = Object.keys(index.weight_map)[0];
      index.weight_map[first] = name;
      const { source, opened } = watched({ ...sharded, 'model.safetensors.index.json': JSON.stringify(index) });
      const e = await failure(openCheckpoint(source));
      expect(e).toBeInstanceOf(UnsafeFileNameError);
      expect(opened).not.toContain(name);
    },
  );

  it('every source refuses such names itself', async () => {
    for (const name of ['../x', '/abs', 'a\\b', 'x\u0000y']) {
      await expect(memorySource(llama).open(name)).rejects.toThrow(UnsafeFileNameError);
    }
  });

  it('an index without a weight_map, or with non-string file names, is refused', async () => {
    for (const index of ['[]', '{"weight_map": 3}', '{"weight_map": {"a": 1}}']) {
      await failure(openCheckpoint(memorySource({ ...llama, 'model.safetensors.index.json': index })));
    }
  });
});

describe('tensors in two shards', () => {
  /** Two shards that each hold every tensor; the index names `named` for the embedding. */
  async function twoHolders(named: 'first' | 'second' | 'neither'): Promise<Repo> {
    const sharded = await shard(llama, 2);
    const files = Object.keys(sharded).filter((f) => f.endsWith('.safetensors')).sort();
    const out: Repo = { ...sharded, [files[0]]: llama['model.safetensors'], [files[1]]: llama['model.safetensors'] };
    const index = JSON.parse(sharded['model.safetensors.index.json'] as string) as { weight_map: Record<string, string> };
    const emb = 'model.embed_tokens.weight';
    if (named === 'first') index.weight_map[emb] = files[0];
    if (named === 'second') index.weight_map[emb] = files[1];
    if (named === 'neither') delete index.weight_map[emb];
    out['model.safetensors.index.json'] = JSON.stringify(index);
    return out;
  }

  it('follows the index when it names either copy', async () => {
    for (const named of ['first', 'second'] as const) {
      const ckpt = await openCheckpoint(memorySource(await twoHolders(named)));
      const shardFile = ckpt.tensors.get('model.embed_tokens.weight')!.file.name;
      expect(shardFile).toBe(named === 'first' ? ckpt.files[0] : ckpt.files[1]);
    }
  });

  it('loads the copy the index names when the copies differ, and warns naming both files', async () => {
    expect((await openCheckpoint(memorySource(await twoHolders('second')))).config.warnings).toEqual([]);
    const other = tinyModelFiles({ architecture: 'llama', seed: 5, hiddenSize: 32, numLayers: 2, numHeads: 4 });
    const files = await twoHolders('second');
    const [first, second] = Object.keys(files).filter((f) => f.endsWith('.safetensors')).sort();
    files[first] = other['model.safetensors'];
    const ckpt = await openCheckpoint(memorySource(files));
    expect(ckpt.config.warnings).toContain(
      `tensor 'model.embed_tokens.weight' is in ${second} and, with other values, in ${first}: model.safetensors.index.json names ${second}, whose copy is loaded (as transformers loads it)`,
    );
    const emb = ckpt.tensors.get('model.embed_tokens.weight')!;
    expect(emb.file.name).toBe(second);
    const mine = await readHeader(bytesSource('x', llama['model.safetensors'] as Uint8Array));
    const want = mine.byName.get('model.embed_tokens.weight')!;
    expect(await emb.file.read(emb.info.begin, emb.info.end - emb.info.begin)).toEqual((llama['model.safetensors'] as Uint8Array).slice(want.begin, want.end));
  });

  it('reports a duplicate the index does not resolve, naming both files', async () => {
    const e = await failure(openCheckpoint(memorySource(await twoHolders('neither'))));
    expect(e.message).toMatch(/'model.embed_tokens.weight' is also in model-00001-of-00002.safetensors, and model.safetensors.index.json names neither/);
  });

  it('says which file does hold a tensor the index misplaces', async () => {
    const sharded = await shard(llama, 2);
    const index = JSON.parse(sharded['model.safetensors.index.json'] as string) as { weight_map: Record<string, string> };
    const files = [...new Set(Object.values(index.weight_map))].sort();
    const inFirst = Object.keys(index.weight_map).find((k) => index.weight_map[k] === files[0])!;
    index.weight_map[inFirst] = files[1];
    const e = await failure(openCheckpoint(memorySource({ ...sharded, 'model.safetensors.index.json': JSON.stringify(index) })));
    expect(e.message).toContain(`lists '${inFirst}' in ${files[1]}, but that file does not hold it (${files[0]} does)`);
  });
});

describe('configs with absurd sizes fail fast', () => {
  const config = tinyConfig({ architecture: 'llama', hiddenSize: 32, numHeads: 4 }) as Record<string, unknown>;
  it.each([
    ['num_hidden_layers', 1e9, InvalidConfigError],
    ['num_hidden_layers', 1e6, InvalidConfigError],
    ['num_hidden_layers', 500, InvalidModelFileError],
    ['vocab_size', 2 ** 40, InvalidConfigError],
    ['hidden_size', 1e300, InvalidConfigError],
  ])('%s: %d', async (key, value, type) => {
    const started = Date.now();
    const e = await failure(openCheckpoint(memorySource({ ...llama, 'config.json': JSON.stringify({ ...config, [key]: value }) })));
    expect(e).toBeInstanceOf(type);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('a config with fewer layers than the weights hold is refused, naming both counts', async () => {
    const e = await failure(openCheckpoint(memorySource({ ...llama, 'config.json': JSON.stringify({ ...config, num_hidden_layers: 1 }) })));
    expect(e).toBeInstanceOf(InvalidModelFileError);
    expect(e.message).toMatch(/config\.json num_hidden_layers is 1, but the weights hold 2 layers: set num_hidden_layers to 2/);
  });

  it('a config file over 16 MB is refused before parsing', async () => {
    const huge = JSON.stringify({ ...config, padding: 'x'.repeat(17 << 20) });
    const e = await failure(openCheckpoint(memorySource({ ...llama, 'config.json': huge })));
    expect(e.message).toMatch(/over the 16777216-byte limit/);
  });
});

describe('broken tokenizers', () => {
  it.each([
    ['an empty file', ''],
    ['not JSON', '{"model": '],
    ['a JSON array', '[]'],
    ['no model', '{}'],
    ['no vocabulary', '{"model": {"type": "BPE"}}'],
    ['an unknown model type', '{"model": {"type": "Foo", "vocab": {}}, "decoder": null, "normalizer": null, "pre_tokenizer": null, "post_processor": null, "added_tokens": []}'],
  ])('%s gives an error naming tokenizer.json', async (_what, text) => {
    const e = await failure(loadTokenizer(memorySource({ ...llama, 'tokenizer.json': text })));
    expect(e).toBeInstanceOf(InvalidTokenizerError);
    expect(e.message).toContain('tokenizer.json');
  });

  it('a broken tokenizer_config.json is named too', async () => {
    const e = await failure(loadTokenizer(memorySource({ ...llama, 'tokenizer_config.json': 'nope' })));
    expect(e).toBeInstanceOf(InvalidTokenizerError);
    expect(e.message).toContain('tokenizer_config.json');
  });
});

describe('arguments that are not model sources', () => {
  it.each([null, undefined, 42, {}, [], [{ name: 'config.json' }]])('%j', async (arg) => {
    const e = await failure(resolveSource(arg as never));
    expect(e).toBeInstanceOf(ModelSourceError);
    await failure(CausalLM.fromPretrained(arg as never));
    await failure(FineTuner.fromPretrained(arg as never, { method: 'lora' }));
  });
});
