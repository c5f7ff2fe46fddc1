import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bytesSource } from '../../src/io/bytes.js';
import { InvalidModelFileError, readHeader, readTensorF32 } from '../../src/io/safetensors.js';
import { cachedSource, clearModelCache, type DownloadProgress } from '../../src/browser/model-cache.js';
import { PRETRAINED_BASE, shippedDatasetUrl, shippedModel, shippedModelUrl } from '../../src/model/shipped.js';
import { fileListSource, hubSource, ModelSourceError, resolveSource, urlSource, type HubOptions } from '../../src/io/sources.js';
import { loadTokenizer } from '../../src/data/tokenizer.js';
import { openCheckpoint, uploadWeights } from '../../src/model/checkpoint.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { FineTuner } from '../../src/train/finetuner.js';
import { UnsupportedArchitectureError } from '../../src/model/config.js';
import { fixtureRepos } from '../fixtures/repos.js';
import { testGpu } from '../helpers.js';

// Browsers load from the Vite server's /hub middleware; Node starts its own server with the same layout.
// Static files (public/) come from the Vite server in browsers and from a small static server in Node.
let hub: HubOptions;
let staticOrigin: string;
const closers: (() => Promise<void>)[] = [];
beforeAll(async () => {
  if (typeof window !== 'undefined') {
    hub = { endpoint: `${location.origin}/hub` };
    staticOrigin = location.origin;
  } else {
    const specifier = '../fixtures/node-hub-server.js';
    const { startHub, startStatic } = (await import(/* @vite-ignore */ specifier)) as typeof import('../fixtures/node-hub-server.js');
    const server = await startHub();
    hub = { endpoint: server.endpoint };
    const pathSpecifier = 'node:url';
    const { fileURLToPath } = (await import(/* @vite-ignore */ pathSpecifier)) as typeof import('node:url');
    const files = await startStatic(fileURLToPath(new URL('../../public', import.meta.url)));
    staticOrigin = files.origin;
    closers.push(server.close, files.close);
  }
});
afterAll(async () => {
  for (const c of closers) await c();
});

/** The f32 values of a tensor as generated, read from the in-memory file. */
async function generated(repo: string, file: string, tensor: string): Promise<Float32Array> {
  const bytes = (await fixtureRepos())[repo][file] as Uint8Array;
  const src = bytesSource(file, bytes);
  return readTensorF32(src, (await readHeader(src)).byName.get(tensor)!);
}

describe('loading checkpoints from a hub', () => {
  it.each([
    ['fixtures/tiny-llama', 'LlamaForCausalLM', 'model.layers.1.mlp.down_proj.weight', 'model.safetensors'],
    ['fixtures/tiny-gpt2', 'GPT2LMHeadModel', 'transformer.h.0.attn.c_attn.weight', 'model.safetensors'],
    ['fixtures/tiny-qwen2-bf16', 'Qwen2ForCausalLM', 'model.layers.0.self_attn.k_proj.bias', 'model.safetensors'],
  ])('%s (%s)', async (id, architecture, probe, file) => {
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(hubSource(id, hub));
    expect(ckpt.config.architecture).toBe(architecture);
    const progress: number[] = [];
    const weights = await uploadWeights(gpu, ckpt, (p) => progress.push(p.bytesLoaded / p.bytesTotal));
    expect(progress.at(-1)).toBe(1);
    expect(weights.size).toBe(ckpt.tensors.size);
    expect(Array.from(await gpu.readF32(weights.get(probe)!))).toEqual(Array.from(await generated(id, file, probe)));
    for (const b of weights.values()) gpu.destroyBuffer(b);
  });

  it('reads a sharded checkpoint to the same weights as the single file', async () => {
    const gpu = await testGpu();
    const single = await uploadWeights(gpu, await openCheckpoint(hubSource('fixtures/tiny-llama', hub)));
    const ckpt = await openCheckpoint(hubSource('fixtures/tiny-llama-sharded', hub));
    expect(ckpt.files).toHaveLength(3);
    const sharded = await uploadWeights(gpu, ckpt);
    for (const [name, buf] of single) expect(Array.from(await gpu.readF32(sharded.get(name)!)), name).toEqual(Array.from(await gpu.readF32(buf)));
  });

  it('resolves a model page URL on the hub, and loads the tokenizer from the same source', async () => {
    const source = await resolveSource(`${hub.endpoint}/fixtures/tiny-gpt2`, hub);
    expect(source.description).toMatch(/^hub fixtures\/tiny-gpt2@main /);
    expect((await openCheckpoint(source)).config.family).toBe('gpt2');
    expect((await resolveSource(`${hub.endpoint}/fixtures/tiny-gpt2/tree/v1.0/`, hub)).description).toMatch(/^hub fixtures\/tiny-gpt2@v1\.0 /);
    await expect(resolveSource(`${hub.endpoint}/fixtures`, hub)).rejects.toThrow(/is on the hub .* but is not a model's address/);
    const tok = await loadTokenizer(source);
    const ids = tok.encode('ab<|endoftext|>');
    expect(ids).toEqual([97, 98, 256]);
    expect(tok.decode(ids)).toBe('ab<|endoftext|>');
  });

  it.each([
    ['fixtures/broken-truncated', InvalidModelFileError, /truncated/],
    ['fixtures/broken-mismatch', InvalidModelFileError, /config and weights disagree/],
    ['fixtures/broken-bert', UnsupportedArchitectureError, /BertForMaskedLM/],
    ['fixtures/no-weights', ModelSourceError, /no model\.safetensors/],
    ['fixtures/does-not-exist', ModelSourceError, /no config\.json/],
  ])('%s fails clearly before allocating anything', async (id, type, message) => {
    const gpu = await testGpu();
    const before = gpu.memoryStats().buffers;
    const err = await openCheckpoint(hubSource(id, hub)).catch((e) => e);
    expect(err).toBeInstanceOf(type);
    expect(err.message).toMatch(message);
    expect(gpu.memoryStats().buffers).toBe(before);
  });

  it('fromPretrained: a fine-tuner and a model from a hub id, the tokenizer from the same id', async () => {
    const gpu = await testGpu();
    const ft = await FineTuner.fromPretrained('fixtures/tiny-llama', { method: 'lora', lora: { rank: 4 }, gpu, hub });
    const tok = await loadTokenizer('fixtures/tiny-llama', hub);
    try {
      const ids = tok.encode('abcabcabc');
      expect(ft.model.config.architecture).toBe('LlamaForCausalLM');
      expect(Number.isFinite((await ft.step({ ids: [ids] })).loss)).toBe(true);
      const probe = 'model.layers.1.mlp.down_proj.weight';
      expect(Array.from(await ft.model.readHf(probe))).toEqual(Array.from(await generated('fixtures/tiny-llama', 'model.safetensors', probe)));
    } finally {
      ft.destroy();
    }
    // Without a device, one is requested.
    const model = await CausalLM.fromPretrained(`${hub.endpoint}/fixtures/tiny-gpt2`, { hub });
    expect(model.config.family).toBe('gpt2');
    expect(model.gpu).not.toBe(gpu);
    model.destroy();
    model.gpu.destroy();
    await expect(FineTuner.fromPretrained('fixtures/broken-bert', { method: 'full', gpu, hub })).rejects.toThrow(UnsupportedArchitectureError);
  });

  it('rejects ids that are not hub ids', () => {
    expect(() => hubSource('../../etc/passwd', hub)).toThrow(ModelSourceError);
  });
});

describe('loading from a static URL', () => {
  it('reads the shipped tiny model as plain files over HTTP', async () => {
    const source = urlSource(`${staticOrigin}/models/tiny-llama`);
    const ckpt = await openCheckpoint(source);
    expect(ckpt.config).toMatchObject({ architecture: 'LlamaForCausalLM', numLayers: 2, hiddenSize: 64 });
    expect((await loadTokenizer(source)).encode('a>b')).toEqual([97, 62, 98]);
    await expect(openCheckpoint(urlSource(`${staticOrigin}/models/none`))).rejects.toThrow(/no config\.json/);
  });

  it('takes any URL off the hub for a folder of plain files', async () => {
    const source = await resolveSource(`${staticOrigin}/models/tiny-llama/`, hub);
    expect(source.description).toBe(`url ${staticOrigin}/models/tiny-llama`);
    expect((await openCheckpoint(source)).config.architecture).toBe('LlamaForCausalLM');
    // Two path segments are a folder too, not a hub id, unless the URL is on the hub.
    expect((await resolveSource('https://cdn.example.com/org/name')).description).toBe('url https://cdn.example.com/org/name');
    expect((await resolveSource('https://huggingface.co/org/name')).description).toMatch(/^hub org\/name@main \(https:\/\/huggingface\.co\)/);
  });
});

describe.skipIf(typeof caches === 'undefined')('the browser model cache', () => {
  it('downloads each file once with progress, then loads it from Cache Storage', async () => {
    const cacheName = `test-${Math.random().toString(36).slice(2)}`;
    const progress: DownloadProgress[] = [];
    const first = await openCheckpoint(cachedSource(hubSource('fixtures/tiny-llama', hub), { cacheName, chunkBytes: 4096, onProgress: (p) => progress.push(p) }));
    const weights = progress.filter((p) => p.file === 'model.safetensors');
    expect(weights.length).toBeGreaterThan(2);
    expect(weights.every((p) => !p.cached)).toBe(true);
    expect(weights.at(-1)!.loaded).toBe(weights.at(-1)!.total);
    progress.length = 0;
    // A source whose server is gone: only the cache can answer.
    const gone = hubSource('fixtures/tiny-llama', { ...hub, endpoint: 'http://127.0.0.1:9', retries: 0 });
    const cachedOnly = { ...gone, description: hubSource('fixtures/tiny-llama', hub).description };
    const again = await openCheckpoint(cachedSource(cachedOnly, { cacheName, onProgress: (p) => progress.push(p) }));
    expect(progress.find((p) => p.file === 'model.safetensors')).toMatchObject({ cached: true });
    const probe = 'model.layers.1.mlp.down_proj.weight';
    expect(await readTensorF32(again.tensors.get(probe)!.file, again.tensors.get(probe)!.info)).toEqual(await readTensorF32(first.tensors.get(probe)!.file, first.tensors.get(probe)!.info));
    expect(await cachedSource(hubSource('fixtures/tiny-llama', hub), { cacheName }).open('no-such-file.json')).toBeNull();
    await clearModelCache(cacheName);
  });
});

describe('the shipped models and datasets', () => {
  it('load from the package, wherever it runs', async () => {
    const ckpt = await openCheckpoint(shippedModel());
    expect(ckpt.config).toMatchObject({ architecture: 'LlamaForCausalLM', numLayers: PRETRAINED_BASE.init.numLayers, hiddenSize: PRETRAINED_BASE.init.hiddenSize });
    expect((await openCheckpoint(shippedModel('tiny-gpt2'))).config.family).toBe('gpt2');
    // A bundled app serves them itself and names the folder they are in.
    expect((await openCheckpoint(shippedModel('tiny-llama', { base: `${staticOrigin}/models` }))).config.numLayers).toBe(2);
    expect(shippedModelUrl('tiny-llama', { base: 'https://cdn.example.com/assets/models/' }).href).toBe('https://cdn.example.com/assets/models/tiny-llama/');
    expect(() => shippedModelUrl('no-such-model')).toThrow(/no shipped model 'no-such-model': the shipped models are tiny-llama-skills, tiny-llama, tiny-gpt2/);
    const url = shippedDatasetUrl('next-letter.jsonl');
    const text = url.protocol === 'file:' ? null : await (await fetch(url)).text();
    if (text !== null) expect(text.split('\n')[0]).toMatch(/^\{"prompt":"next:/);
  });
});

describe('loading from File objects', () => {
  it('reads a picked folder of files', async () => {
    const repo = (await fixtureRepos())['fixtures/tiny-qwen2-bf16'];
    const files = Object.entries(repo).map(([name, v]) => new File([typeof v === 'string' ? v : new Uint8Array(v)], name));
    const source = fileListSource(files);
    const ckpt = await openCheckpoint(source);
    expect(ckpt.config).toMatchObject({ tieWordEmbeddings: true, qkvBias: true, numKvHeads: 2 });
    expect(ckpt.tensors.get('model.embed_tokens.weight')!.info.dtype).toBe('BF16');
    expect((await loadTokenizer(source)).encode('z')).toEqual([122]);
  });
});
