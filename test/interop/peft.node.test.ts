/**
 * Adapters PEFT saved (scripts/reference/make_fixtures.py), read by the engine: plain LoRA in its
 * variants, DoRA, and PiSSA and OLoRA both as PEFT saves them by default (applied to a base it rewrites on
 * load, which loading here repeats) and converted (plain LoRA of rank 2r on the original base) give
 * PEFT's logits.
 */
import { describe, expect, it } from 'vitest';
import { bytesSource } from '../../src/io/bytes.js';
import { readHeader } from '../../src/io/safetensors.js';
import type { Lora } from '../../src/methods/lora/layer.js';
import { peftAdapterFiles, readPeftAdapter } from '../../src/methods/lora/peft.js';
import { readShiraAdapter, readSupertuningAdapter, type SparseFineTuning } from '../../src/methods/sparse/index.js';
import type { SparseLora } from '../../src/methods/sparse-lora/index.js';
import { methodDefinition } from '../../src/methods/registry.js';
import type { FineTuneOptions } from '../../src/train/finetuner.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { FineTuner } from '../../src/train/finetuner.js';
import { compare, testGpu } from '../helpers.js';
import { batchOf, list, logitsOf, modelCase, modelSource, read, readJson } from './fixtures.js';

type AdapterFiles = { config: Uint8Array; weights: Uint8Array };
/** The adapter files of a fixture folder. */
const fixture = (...folder: string[]): AdapterFiles => ({ config: read(...folder, 'adapter_config.json'), weights: read(...folder, 'adapter_model.safetensors') });

/** The engine's logits with PEFT's adapter files (a fixture folder, or files) attached to their base. */
async function adapterLogits(folder: string[] | AdapterFiles, base: string): Promise<Float32Array> {
  const ckpt = await openCheckpoint(modelSource(base));
  const adapter = await readPeftAdapter(Array.isArray(folder) ? fixture(...folder) : folder, ckpt.config);
  expect(adapter.warnings).toEqual([]);
  const ft = await FineTuner.create(await testGpu(), ckpt, { method: 'lora', lora: adapter.options });
  try {
    for (const [name, data] of adapter.tensors) ft.writeTensor(name, data);
    return await ft.model.logits(batchOf(modelCase(base).ids));
  } finally {
    ft.destroy();
  }
}

const expected = (name: string) => readJson<{ base: string; forms: string[] }>('peft', name, 'expected.json');

describe('PEFT adapters', () => {
  it.each(['lora-llama-rslora-patterns', 'lora-gpt2-fused-qkv', 'lora-gemma2-all-linear', 'lora-gemma3-all-linear', 'lora-phi3-fused', 'lora-llama-orthogonal-init', 'lora-llama-eva-init'])('%s: PEFT\'s logits', async (name) => {
    const err = compare(await adapterLogits(['peft', name], expected(name).base), await logitsOf('peft', name, 'logits.safetensors'));
    expect(err.rel, `max abs ${err.maxAbs}`).toBeLessThan(1e-4);
  });

  it.each(['pissa-llama', 'olora-llama'])("%s: as saved (loading repeats the decomposition on the base) and converted to plain LoRA, PEFT's logits", async (name) => {
    const base = expected(name).base;
    expect(expected(name).forms).toEqual(['converted', 'raw']);
    for (const form of ['converted', 'raw']) {
      const err = compare(await adapterLogits(['peft', name, form], base), await logitsOf('peft', name, form, 'logits.safetensors'));
      expect(err.rel, `${form}: max abs ${err.maxAbs}`).toBeLessThan(1e-4);
    }
  });

  it.each(['dora-llama', 'dora-gpt2-fused-qkv'])("%s: a DoRA adapter, PEFT's logits, and again after saving it", async (name) => {
    const base = expected(name).base;
    const want = await logitsOf('peft', name, 'logits.safetensors');
    expect(compare(await adapterLogits(['peft', name], base), want).rel).toBeLessThan(1e-4);
    const ckpt = await openCheckpoint(modelSource(base));
    const adapter = await readPeftAdapter(fixture('peft', name), ckpt.config);
    expect(adapter.options.dora).toBe(true);
    const ft = await FineTuner.create(await testGpu(), ckpt, { method: 'lora', lora: adapter.options });
    let files: Record<string, Uint8Array>;
    try {
      for (const [t, data] of adapter.tensors) ft.writeTensor(t, data);
      files = await peftAdapterFiles(ft.method as Lora);
    } finally {
      ft.destroy();
    }
    expect(JSON.parse(new TextDecoder().decode(files['adapter_config.json'])).use_dora).toBe(true);
    const [mine, theirs] = await Promise.all([files['adapter_model.safetensors'], read('peft', name, 'adapter_model.safetensors')].map((b) => readHeader(bytesSource('a', b))));
    const shapes = (h: typeof mine) => Object.fromEntries(h.tensors.map((t) => [t.name, t.shape]));
    // GPT-2's c_attn goes out at the sum of its parts' ranks (the same product): same names, and the
    // magnitudes' shapes are the same everywhere.
    expect(Object.keys(shapes(mine)).sort()).toEqual(Object.keys(shapes(theirs)).sort());
    for (const [t, shape] of Object.entries(shapes(theirs))) if (t.endsWith('lora_magnitude_vector') || base !== 'gpt2') expect(shapes(mine)[t], t).toEqual(shape);
    const again = { config: files['adapter_config.json'], weights: files['adapter_model.safetensors'] };
    expect(compare(await adapterLogits(again, base), want).rel).toBeLessThan(1e-4);
  });

  it.each(['supertuning-llama', 'supertuning-llama-supra', 'supertuning-phi3-fused'])("%s: a Super-Tuning adapter (PEFT's main branch), PEFT's logits, and again after saving it", async (name) => {
    const base = expected(name).base;
    const want = await logitsOf('peft', name, 'logits.safetensors');
    /** The logits of Super-Tuning files attached as sparse (or sparse+LoRA in Supra mode), and the method's export. */
    const attach = async (files: AdapterFiles) => {
      const ckpt = await openCheckpoint(modelSource(base));
      const adapter = await readSupertuningAdapter(files, ckpt.config);
      expect(adapter.warnings).toEqual([]);
      const mask = adapter.delta.mask;
      const options: FineTuneOptions = adapter.lora ? { method: 'sparse+lora', 'sparse+lora': { sparse: { mask }, lora: adapter.lora.options } } : { method: 'sparse', sparse: { mask } };
      const ft = await FineTuner.create(await testGpu(), ckpt, options);
      try {
        (adapter.lora ? (ft.method as SparseLora).sparse : (ft.method as SparseFineTuning)).applyDeltas(adapter.delta.deltas);
        for (const [t, data] of adapter.lora?.tensors ?? []) ft.writeTensor(t, data);
        const exported = (await methodDefinition(options.method).exportFiles!(ft.method, ckpt.config, {}))!;
        return { logits: await ft.model.logits(batchOf(modelCase(base).ids)), exported, lora: adapter.lora !== null };
      } finally {
        ft.destroy();
      }
    };
    const first = await attach(fixture('peft', name));
    expect(first.lora).toBe(name !== 'supertuning-llama');
    expect(compare(first.logits, want).rel).toBeLessThan(1e-4);
    // Saved again: one Super-Tuning adapter (with the engine's delta file beside it) giving the same logits.
    expect(Object.keys(first.exported).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors', 'sparse_delta.safetensors']);
    const again = await attach({ config: first.exported['adapter_config.json'], weights: first.exported['adapter_model.safetensors'] });
    expect(compare(again.logits, want).rel).toBeLessThan(1e-4);
  });

  it("shira-llama: a SHiRA adapter, trained in place on its mask: PEFT's logits", async () => {
    const ckpt = await openCheckpoint(modelSource('llama'));
    const delta = await readShiraAdapter({ config: read('peft', 'shira-llama', 'adapter_config.json'), weights: read('peft', 'shira-llama', 'adapter_model.safetensors') }, ckpt.config);
    expect(delta.warnings).toEqual([]);
    const ft = await FineTuner.create(await testGpu(), ckpt, { method: 'sparse', sparse: { mask: delta.mask } });
    try {
      (ft.method as SparseFineTuning).applyDeltas(delta.deltas);
      const err = compare(await ft.model.logits(batchOf(modelCase('llama').ids)), await logitsOf('peft', 'shira-llama', 'logits.safetensors'));
      expect(err.rel, `max abs ${err.maxAbs}`).toBeLessThan(1e-4);
    } finally {
      ft.destroy();
    }
  });

  it('covers every fixture', () => {
    expect(list('peft')).toEqual(['dora-gpt2-fused-qkv', 'dora-llama', 'lora-gemma2-all-linear', 'lora-gemma3-all-linear', 'lora-gpt2-fused-qkv', 'lora-llama-eva-init', 'lora-llama-orthogonal-init', 'lora-llama-rslora-patterns', 'lora-phi3-fused', 'olora-llama', 'pissa-llama', 'shira-llama', 'supertuning-llama', 'supertuning-llama-supra', 'supertuning-phi3-fused']);
  });
});
