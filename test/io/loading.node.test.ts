import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { hubSource, resolveSource } from '../../src/io/sources.js';
import { openCheckpoint, uploadWeights } from '../../src/model/checkpoint.js';
import { fixtureRepos } from '../fixtures/repos.js';
import { startHub } from '../fixtures/node-hub-server.js';
import { testGpu } from '../helpers.js';

describe('loading in Node', () => {
  it('streams weights with range requests, never whole files', async () => {
    const server = await startHub();
    try {
      const gpu = await testGpu();
      const ckpt = await openCheckpoint(hubSource('fixtures/tiny-llama', { endpoint: server.endpoint }));
      const weights = await uploadWeights(gpu, ckpt);
      const gets = server.log.requests.filter((r) => r.method === 'GET' && r.path.endsWith('.safetensors'));
      expect(gets.length).toBe(2 + weights.size); // length prefix, header, then one range per tensor
      expect(gets.every((r) => r.range)).toBe(true);
    } finally {
      await server.close();
    }
  });

  it('still loads from a server that ignores ranges', async () => {
    const server = await startHub({ ranges: false });
    try {
      const gpu = await testGpu();
      const weights = await uploadWeights(gpu, await openCheckpoint(hubSource('fixtures/tiny-gpt2', { endpoint: server.endpoint })));
      expect(weights.size).toBeGreaterThan(10);
      const gets = server.log.requests.filter((r) => r.method === 'GET' && r.path.endsWith('.safetensors'));
      expect(gets.length).toBe(1); // the first read kept the whole body
    } finally {
      await server.close();
    }
  });

  it('loads a local folder, single file and sharded', async () => {
    const gpu = await testGpu();
    for (const id of ['fixtures/tiny-llama', 'fixtures/tiny-llama-sharded']) {
      const dir = mkdtempSync(join(tmpdir(), 'wgft-'));
      for (const [name, v] of Object.entries((await fixtureRepos())[id])) writeFileSync(join(dir, name), v);
      const ckpt = await openCheckpoint(await resolveSource(dir));
      expect(ckpt.source.description).toBe(`folder ${dir}`);
      const weights = await uploadWeights(gpu, ckpt);
      expect(weights.size).toBe(3 + 2 * 9); // embeddings, 9 per layer, final norm, lm_head
    }
  });
});
