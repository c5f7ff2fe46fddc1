/**
 * Network sources against a server that hangs, stalls, drops connections, fails for a while, or leaves
 * out sizes: every wait is bounded, transient failures are retried, the caller can abort, and what
 * fails is a typed NetworkError naming the URL and the cause, never blamed on the file.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { classifyFailure, NetworkError } from '../../src/io/http.js';
import { hubSource, ModelSourceError, resolveSource, urlSource, type HubOptions } from '../../src/io/sources.js';
import { loadTokenizer } from '../../src/data/tokenizer.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { testGpu } from '../helpers.js';

const inBrowser = typeof window !== 'undefined';
// Browsers reach the misbehaving handler through the Vite server; Node starts it on a loopback port.
let base: string;
let close = async () => {};
beforeAll(async () => {
  if (inBrowser) {
    base = `${location.origin}/hostile`;
  } else {
    const specifier = '../fixtures/hostile-server.js';
    const { startHostileServer } = (await import(/* @vite-ignore */ specifier)) as typeof import('../fixtures/hostile-server.js');
    const server = await startHostileServer();
    base = server.origin;
    close = server.close;
  }
  // The fixture repositories are generated on the first request: not within a test's 300 ms deadline.
  await fetch(`${base}/warm-up/hub/${repo}/resolve/main/config.json`);
});
afterAll(() => close());

/** The hub endpoint of a behaviour, with counters of its own for this run. */
const run = Math.floor(Math.random() * 1e9);
const server = { endpoint: (mode: string) => `${base}/${mode}~${run}/hub` };

const fast: HubOptions = { timeoutMs: 300, idleTimeoutMs: 300, retries: 0 };
const repo = 'fixtures/tiny-llama';

async function networkFailure(p: Promise<unknown>): Promise<NetworkError> {
  const e = await p.then(() => null, (err: unknown) => err);
  expect(e).toBeInstanceOf(NetworkError);
  return e as NetworkError;
}

describe('network sources', () => {
  it('load normally through the same server', async () => {
    const ckpt = await openCheckpoint(hubSource(repo, { ...fast, endpoint: server.endpoint('ok') }));
    expect(ckpt.config.architecture).toBe('LlamaForCausalLM');
  });

  it('time out on a server that never answers', async () => {
    const started = Date.now();
    const e = await networkFailure(openCheckpoint(hubSource(repo, { ...fast, endpoint: server.endpoint('hang') })));
    expect(e.kind).toBe('timeout');
    expect(e.message).toContain(`${server.endpoint('hang')}/${repo}/resolve/main/config.json`);
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('time out on a body that stalls mid-transfer', async () => {
    // GET 1 is config.json; GET 3 the safetensors header.
    for (const n of [1, 3]) {
      const e = await networkFailure(openCheckpoint(hubSource(repo, { ...fast, endpoint: server.endpoint(`stall-${n}`) })));
      expect(e.kind).toBe('timeout');
      expect(e.message).toMatch(/the body stalled for 300 ms after \d+ bytes/);
    }
  });

  it('report a dropped connection as a reset, during the header read and during a tensor read', async () => {
    const gpu = await testGpu();
    const header = await networkFailure(openCheckpoint(hubSource(repo, { ...fast, endpoint: server.endpoint('drop-3') })));
    expect(header.kind).toBe('reset');
    expect(header.message).toContain('model.safetensors');
    expect(header.message).not.toMatch(/JSON|UTF-8/); // not blamed on the file
    const ckpt = await openCheckpoint(hubSource(repo, { ...fast, endpoint: server.endpoint('drop-6') }));
    const before = gpu.memoryStats();
    const tensor = await networkFailure(CausalLM.fromCheckpoint(gpu, ckpt));
    expect(tensor.kind).toBe('reset');
    expect(gpu.memoryStats().currentBytes).toBe(before.currentBytes); // the half-loaded model was released
  });

  it('retry transient failures (resets and 503) with backoff, and give up after the retries', async () => {
    const ckpt = await openCheckpoint(hubSource(repo, { ...fast, retries: 4, retryDelayMs: 10, endpoint: server.endpoint('flaky-4') }));
    expect(ckpt.tensors.size).toBeGreaterThan(0);
    const e = await networkFailure(openCheckpoint(hubSource(repo, { ...fast, retries: 1, retryDelayMs: 10, endpoint: server.endpoint('flaky-9') })));
    expect(['reset', 'http']).toContain(e.kind);
  });

  it('stop at once when the caller aborts', async () => {
    const controller = new AbortController();
    const started = Date.now();
    setTimeout(() => controller.abort(), 100);
    const e = await networkFailure(openCheckpoint(hubSource(repo, { timeoutMs: 60_000, signal: controller.signal, endpoint: server.endpoint('hang') })));
    expect(e.kind).toBe('aborted');
    expect(Date.now() - started).toBeLessThan(3000);
  });

  it.skipIf(inBrowser)('report a refused connection', async () => {
    const { createServer } = (await import(/* @vite-ignore */ 'node:net')) as typeof import('node:net');
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const port = (closed.address() as { port: number }).port;
    await new Promise((r) => closed.close(r));
    const e = await networkFailure(openCheckpoint(hubSource(repo, { ...fast, endpoint: `http://127.0.0.1:${port}/hub` })));
    expect(e.kind).toBe('refused');
    expect(e.message).toMatch(/refused/);
  });

  it('classify DNS failures and resets from the cause chain fetch gives', () => {
    const wrapped = (code: string) => Object.assign(new TypeError('fetch failed'), { cause: Object.assign(new Error(code), { code }) });
    expect(classifyFailure(wrapped('ENOTFOUND'))).toBe('dns');
    expect(classifyFailure(wrapped('ECONNRESET'))).toBe('reset');
    expect(classifyFailure(new TypeError('terminated'))).toBe('reset');
  });

  it('find the size when HEAD reports none, with ranges or without', async () => {
    for (const mode of ['no-size', 'chunked']) {
      const ckpt = await openCheckpoint(hubSource(repo, { ...fast, endpoint: server.endpoint(mode) }));
      expect(ckpt.tensors.size, mode).toBeGreaterThan(0);
    }
  });

  it('take an HTML page answered for a model file as missing, and say so with the URL', async () => {
    // Optional files (the shard index, tokenizer extras) are missing too: a real model still loads.
    const ckpt = await openCheckpoint(hubSource(repo, { ...fast, endpoint: server.endpoint('spa') }));
    expect(ckpt.config.architecture).toBe('LlamaForCausalLM');
    const e = await openCheckpoint(hubSource('fixtures/nothing-here', { ...fast, endpoint: server.endpoint('spa') })).then(() => new Error('loaded'), (err: Error) => err);
    expect(e).toBeInstanceOf(ModelSourceError);
    expect(e.message).toContain(`has no config.json: the server answered ${server.endpoint('spa')}/fixtures/nothing-here/resolve/main/config.json with an HTML page`);
    // The same through a plain URL of a folder, and for the tokenizer.
    const folder = urlSource(`${server.endpoint('spa')}/fixtures/tiny-llama/resolve/main`, fast);
    expect((await openCheckpoint(folder)).config.architecture).toBe('LlamaForCausalLM');
    const wrong = urlSource(`${server.endpoint('spa')}/fixtures/tiny-llama/resolve`, fast);
    await expect(loadTokenizer(wrong)).rejects.toThrow(/has no tokenizer\.json \(only fast tokenizers are supported\): the server answered .*\/resolve\/tokenizer\.json with an HTML page/);
  });

  it.skipIf(inBrowser)('say that a bare name that is no folder was tried as a hub id', async () => {
    const source = await resolveSource('no-such-folder/model', { ...fast, endpoint: server.endpoint('ok') });
    await expect(openCheckpoint(source)).rejects.toThrow(/no folder 'no-such-folder\/model' exists here, so it was tried as a hub id/);
    await expect(resolveSource('no/such/folder')).rejects.toThrow(/no folder 'no\/such\/folder' exists here, so it was tried as a hub id: 'no\/such\/folder' is not a hub model id/);
  });
});
