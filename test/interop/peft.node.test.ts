/**
 * Adapters PEFT saved (scripts/reference/make_fixtures.py), read by the engine: plain LoRA in its
 * variants gives PEFT's logits; PiSSA and OLoRA adapters as PEFT saves them by default (applied to a base
 * PEFT rewrites on load) and DoRA are refused by name, while their converted form (plain LoRA of rank 2r
 * on the original base) gives PEFT's logits.
 */
import { describe, expect, it } from 'vitest';
import { UnsupportedAdapterError } from '../../src/errors.js';
import { readPeftAdapter } from '../../src/methods/lora/peft.js';
import { readShiraAdapter, type SparseFineTuning } from '../../src/methods/sparse/index.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { FineTuner } from '../../src/train/finetuner.js';
import { compare, testGpu } from '../helpers.js';
import { batchOf, list, logitsOf, modelCase, modelSource, read, readJson } from './fixtures.js';

/** The engine's logits with PEFT's adapter files in `folder` attached to their base. */
async function adapterLogits(folder: string[], base: string): Promise<Float32Array> {
  const ckpt = await openCheckpoint(modelSource(base));
  const adapter = await readPeftAdapter({ config: read(...folder, 'adapter_config.json'), weights: read(...folder, 'adapter_model.safetensors') }, ckpt.config);
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

  it.each(['pissa-llama', 'olora-llama'])('%s: refused as saved, PEFT\'s logits when converted to plain LoRA', async (name) => {
    const { base } = expected(name);
    const init = name.split('-')[0];
    const refusal = adapterLogits(['peft', name, 'raw'], base);
    await expect(refusal).rejects.toThrow(UnsupportedAdapterError);
    await expect(refusal).rejects.toMatchObject({ field: 'init_lora_weights', value: init, message: expect.stringMatching(/path_initial_model_for_weight_conversion/) });
    const logits = await adapterLogits(['peft', name, 'converted'], base);
    for (const form of ['converted', 'raw']) {
      const err = compare(logits, await logitsOf('peft', name, form, 'logits.safetensors'));
      expect(err.rel, `${form}: max abs ${err.maxAbs}`).toBeLessThan(1e-4);
    }
  });

  it('dora-llama: refused by name', async () => {
    await expect(adapterLogits(['peft', 'dora-llama'], 'llama')).rejects.toMatchObject({ name: 'UnsupportedAdapterError', field: 'use_dora', value: 'true' });
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
    expect(list('peft')).toEqual(['dora-llama', 'lora-gemma2-all-linear', 'lora-gemma3-all-linear', 'lora-gpt2-fused-qkv', 'lora-llama-eva-init', 'lora-llama-orthogonal-init', 'lora-llama-rslora-patterns', 'lora-phi3-fused', 'olora-llama', 'pissa-llama', 'shira-llama']);
  });
});
