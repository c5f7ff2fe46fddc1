import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { hubSource, resolveSource, UnsafeFileNameError } from '../../src/io/sources.js';
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

  it('refuses an index that points outside the model folder, even at a valid checkpoint there', async () => {
    const parent = mkdtempSync(join(tmpdir(), 'wgft-traversal-'));
    const folder = join(parent, 'model');
    const { mkdirSync } = await import('node:fs');
    mkdirSync(folder);
    const repo = (await fixtureRepos())['fixtures/tiny-llama-sharded'];
    for (const [name, data] of Object.entries(repo)) writeFileSync(join(folder, name), data);
    const index = JSON.parse(repo['model.safetensors.index.json'] as string) as { weight_map: Record<string, string> };
    const shardName = Object.values(index.weight_map)[0];
    writeFileSync(join(parent, 'outside.safetensors'), repo[shardName]); // what the index would load
    for (const target of ['../outside.safetensors', join(parent, 'outside.safetensors')]) {
      for (const k of Object.keys(index.weight_map)) if (index.weight_map[k] === shardName) index.weight_map[k] = target;
      writeFileSync(join(folder, 'model.safetensors.index.json'), JSON.stringify(index));
      await expect(openCheckpoint(await resolveSource(folder))).rejects.toThrow(UnsafeFileNameError);
      for (const k of Object.keys(index.weight_map)) if (index.weight_map[k] === target) index.weight_map[k] = shardName;
    }
    writeFileSync(join(folder, 'model.safetensors.index.json'), JSON.stringify(index));
    await expect(openCheckpoint(await resolveSource(folder))).resolves.toBeTruthy(); // the honest index loads
  });
});
