/**
 * The engine against transformers itself: tiny checkpoints of each supported family, with their configs
 * in transformers 5's layout (rope_parameters, dtype) and the 4.x one (rope_theta, torch_dtype/dtype),
 * must give transformers' logits (computed in float64 by scripts/reference/make_fixtures.py, which also
 * checked that switching each case's features off moves them).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { memorySource } from '../../src/io/sources.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { compare, testGpu } from '../helpers.js';
import { batchOf, LAYOUTS, list, logitsOf, modelCase, modelSource, readText } from './fixtures.js';
import { FAMILIES } from '../../src/model/families/index.js';

const CASES = list('models');

describe('logits match transformers', () => {
  it('has a case per supported family', () => {
    expect(new Set(CASES.map((c) => modelCase(c).family))).toEqual(new Set(FAMILIES.map((f) => f.modelType)));
  });

  it.each(CASES)('%s, in both config layouts', async (name) => {
    const c = modelCase(name);
    expect(Math.min(...Object.values(c.features))).toBeGreaterThan(1e-3); // each feature matters to the logits
    const want = await logitsOf('models', name, 'logits.safetensors');
    const gpu = await testGpu();
    const got: Float32Array[] = [];
    for (const [layout, file] of Object.entries(LAYOUTS)) {
      const ckpt = await openCheckpoint(modelSource(name, file));
      expect(ckpt.config.warnings, `${layout}: a config transformers wrote needs no warning`).toEqual([]);
      const model = await CausalLM.fromCheckpoint(gpu, ckpt);
      try {
        const logits = await model.logits(batchOf(c.ids));
        const err = compare(logits, want);
        expect(err.rel, `${name}, ${layout} layout (max abs ${err.maxAbs})`).toBeLessThan(1e-4);
        got.push(logits);
      } finally {
        model.destroy();
      }
    }
    // One model, whatever the layout: bit for bit.
    expect(got[1]).toEqual(got[0]);
  });

  it('the shipped tiny base re-saved by transformers 5 is the same model, loss for loss', async () => {
    const shipped = join(import.meta.dirname, '..', '..', 'public', 'models', 'tiny-llama-skills');
    const weights = new Uint8Array(readFileSync(join(shipped, 'model.safetensors')));
    const configs = [readFileSync(join(shipped, 'config.json'), 'utf8'), readText('tiny-llama-skills-transformers5', 'config.json')];
    expect(JSON.parse(configs[1])).toHaveProperty('rope_parameters');
    const batch = { ids: [...'next:abc=d\nnext:hello=p\nnext:wq=r\n'].map((ch) => ch.charCodeAt(0)) };
    const losses: number[] = [];
    for (const config of configs) {
      const model = await CausalLM.fromCheckpoint(await testGpu(), await openCheckpoint(memorySource({ 'config.json': config, 'model.safetensors': weights })));
      losses.push(await model.loss(batch));
      model.destroy();
    }
    expect(losses[1]).toBe(losses[0]);
  });
});
