/**
 * Methods describe themselves: each option field's default is the value the method applies, a method
 * registered from outside the package trains in a Trainer run and is in the demo's form, and fields
 * parse the way the command line and the demo read them.
 */
import { describe, expect, it } from 'vitest';
import { normTuning } from '../fixtures/toy-method.js';
import { loadDataset } from '../../src/data/dataset.js';
import { loadTokenizer } from '../../src/data/tokenizer.js';
import { ShapeError } from '../../src/errors.js';
import { memorySource } from '../../src/io/sources.js';
import { FieldValueError, optionAt, parseField, shownDefault, withOption, type OptionField } from '../../src/methods/fields.js';
import { Lora, loraBase, LORA_FIELDS } from '../../src/methods/lora/index.js';
import { allMethodFields, methodDefinition, methodLearningRate, methodNames, quantizableMethods, registerMethod } from '../../src/methods/registry.js';
import { maskNeedsRows, SPARSE_FIELDS } from '../../src/methods/sparse/index.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { tinyModelFiles } from '../../src/model/tiny.js';
import { FineTuner } from '../../src/train/finetuner.js';
import { Trainer } from '../../src/train/trainer.js';
import { testGpu } from '../helpers.js';

const files = tinyModelFiles({ architecture: 'llama', seed: 9, hiddenSize: 32, numLayers: 3, numHeads: 2, numKvHeads: 1, maxPositions: 64 });
const field = (fields: readonly OptionField[], name: string) => fields.find((f) => f.name === name)!;

describe('method registry', () => {
  it('a registered method trains in a Trainer run: only its parameters change, at its own learning rate', async () => {
    expect(methodNames()).toContain('norms');
    const gpu = await testGpu();
    const ckpt = await openCheckpoint(memorySource(files));
    const tokenizer = await loadTokenizer(memorySource(files));
    const rows = Array.from({ length: 24 }, (_, i) => JSON.stringify({ text: `row ${i}: ${'abcdefgh'.slice(i % 5)} ${i * 7}` }));
    const data = await loadDataset({ name: 'rows.jsonl', bytes: new TextEncoder().encode(rows.join('\n')) }, tokenizer, { seqLength: 32 });
    const trainer = await Trainer.create(gpu, ckpt, data, { method: 'norms' as never, norms: { fromLayer: 1 }, steps: 3, batchSize: 4 } as never);
    const base = await CausalLM.fromCheckpoint(gpu, ckpt);
    try {
      const trained = trainer.ft.model.trainableNames;
      expect(trained.sort()).toEqual(['layers.1.norm1.weight', 'layers.1.norm2.weight', 'layers.2.norm1.weight', 'layers.2.norm2.weight', 'norm_f.weight']);
      const result = await trainer.train();
      expect(result.losses.every(Number.isFinite)).toBe(true);
      for (const name of ['layers.0.norm1.weight', 'layers.1.q.weight', 'embed']) {
        expect(await trainer.ft.model.readParam(name), name).toEqual(await base.readParam(name));
      }
      const before = await base.readParam('layers.2.norm1.weight');
      const after = await trainer.ft.model.readParam('layers.2.norm1.weight');
      const change = Math.max(...after.map((v, i) => Math.abs(v - before[i])));
      // Adam moves each weight by about the learning rate per step: the method's own rate (1e-3), not another's.
      expect(change).toBeGreaterThan(0.5 * methodLearningRate(normTuning));
      expect(change).toBeLessThan(3 * 1.01 * methodLearningRate(normTuning));
    } finally {
      base.destroy();
      trainer.destroy();
    }
  });

  it.skipIf(typeof document === 'undefined')("is in the demo's method list, its fields shown for it and read into its options", async () => {
    const { buildMethodForm, readMethodForm } = await import('../../demo/method-form.js');
    const methodSelect = document.createElement('select');
    const container = document.createElement('div');
    const quantize = document.createElement('label');
    document.body.append(methodSelect, container, quantize);
    try {
      buildMethodForm(methodSelect, container, quantize);
      expect([...methodSelect.options].map((o) => o.value)).toEqual(methodNames());
      expect(methodSelect.value).toBe('lora');
      const from = document.getElementById('from-layer') as HTMLInputElement;
      expect(from.closest('label')!.getAttribute('data-method')).toBe('norms');
      expect(from.value).toBe('0');
      from.value = '2';
      expect(readMethodForm('norms')).toEqual({ fromLayer: 2 });
      // LoRA's fields start at LoRA's defaults and read back into its options; sparse+lora nests them.
      expect((document.getElementById('rank') as HTMLInputElement).value).toBe('16');
      expect(document.getElementById('rank')!.closest('label')!.getAttribute('data-method')).toBe('lora sparse+lora zo');
      expect(readMethodForm('lora')).toEqual({ rank: 16, dropout: 0, dora: false, init: 'kaiming', loraplusLrRatio: 1, targetModules: ['all-linear'] });
      // A boolean field is a choice of false and true; PiSSA's iterations show only under init pissa.
      (document.getElementById('dora') as HTMLSelectElement).value = 'true';
      (document.getElementById('init') as HTMLSelectElement).value = 'pissa';
      (document.getElementById('pissa-niter') as HTMLInputElement).value = '4';
      expect(readMethodForm('lora')).toMatchObject({ dora: true, init: 'pissa', pissaNiter: 4 });
      (document.getElementById('init') as HTMLSelectElement).value = 'kaiming';
      expect(readMethodForm('lora')).not.toHaveProperty('pissaNiter');
      (document.getElementById('dora') as HTMLSelectElement).value = 'false';
      expect(readMethodForm('sparse+lora')).toMatchObject({ sparse: { selection: 'sylva', density: 0.01, granularity: 'element' }, lora: { rank: 16 } });
      expect(document.getElementById('mask')).toBeNull(); // a file field is the command line's
      // Zeroth-order reads the fields of what it trains, and only those.
      expect(readMethodForm('zo')).toEqual({ target: 'lora', directions: 1, lora: { rank: 16, dropout: 0, dora: false, init: 'kaiming', targetModules: ['all-linear'] } });
      (document.getElementById('zo-target') as HTMLSelectElement).value = 'sparse';
      expect(readMethodForm('zo')).toEqual({ target: 'sparse', directions: 1, sparse: { selection: 'sylva', calibrationTokens: 4096, density: 0.01, granularity: 'element' } });
      // The calibration size applies only to a selection that scores on data.
      (document.getElementById('selection') as HTMLSelectElement).value = 'random';
      expect(readMethodForm('sparse')).toEqual({ selection: 'random', density: 0.01, granularity: 'element', regrow: false });
      (document.getElementById('selection') as HTMLSelectElement).value = 'sylva';
      (document.getElementById('zo-target') as HTMLSelectElement).value = 'full';
      expect(readMethodForm('zo')).toEqual({ target: 'full', directions: 1 });
      expect(quantize.getAttribute('data-method')).toBe('lora zo norms');
      from.value = '-1';
      expect(() => readMethodForm('norms')).toThrow(/from-layer must be an integer >= 0, got '-1'/);
    } finally {
      methodSelect.remove();
      container.remove();
      quantize.remove();
    }
  });

  it('refuses a second method of a name, and names that are not names', () => {
    expect(() => registerMethod(normTuning)).toThrow(/a method named 'norms' is registered already/);
    expect(() => registerMethod({ ...normTuning, name: 'Bad Name' })).toThrow(ShapeError);
    expect(() => methodDefinition('nope')).toThrow(/unknown fine-tuning method 'nope' \(full, lora, sparse, sparse\+lora, zo, lisa, galore, norms\)/);
  });

  it('every field of every method names a path and states a default it can parse', () => {
    for (const { field: f, methods } of allMethodFields()) {
      expect(f.path.length, f.name).toBeGreaterThan(0);
      expect(methods.length).toBeGreaterThan(0);
      if (f.kind !== 'file' && f.default !== undefined) expect(parseField(f, shownDefault(f)!), f.name).toEqual(Array.isArray(f.default) ? [...f.default] : f.default);
    }
    // Norm tuning leaves every linear weight frozen, so it can train over a 4-bit base as LoRA does.
    expect(quantizableMethods()).toEqual(['lora', 'zo', 'norms']);
  });
});

describe('defaults are the ones the methods apply', () => {
  it("LoRA's fields: an adapter made with no options has the fields' rank, targets, alpha 2 x rank and no dropout", async () => {
    const gpu = await testGpu();
    const model = await CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource(files)));
    const lora = new Lora(gpu, model.config, {}, loraBase(model));
    try {
      const rank = field(LORA_FIELDS, 'rank');
      expect(rank.kind === 'integer' && rank.default).toBe(16);
      expect(lora.rank).toBe(16);
      expect([...lora.modules.keys()].filter((m) => m.startsWith('layers.0.')).sort()).toEqual(['layers.0.down', 'layers.0.gate', 'layers.0.k', 'layers.0.o', 'layers.0.q', 'layers.0.up', 'layers.0.v']);
      expect(lora.modules.get('layers.0.q')!.scale).toBe(2);
    } finally {
      lora.destroy();
      model.destroy();
    }
  });

  it("sparse: the default selection is the fields' (Sylva), which needs rows: a FineTuner says so before loading anything", async () => {
    expect(field(SPARSE_FIELDS, 'selection')).toMatchObject({ default: 'sylva' });
    expect(maskNeedsRows({})).toMatch(/the sparse selection 'sylva' \(the default\) chooses the mask from training rows/);
    expect(maskNeedsRows({ selection: 'random' })).toBeNull();
    const gpu = await testGpu();
    const before = gpu.memoryStats();
    await expect(FineTuner.create(gpu, await openCheckpoint(memorySource(files)), { method: 'sparse' })).rejects.toThrow(/train with a Trainer or a session/);
    await expect(FineTuner.create(gpu, await openCheckpoint(memorySource(files)), { method: 'sparse+lora', 'sparse+lora': { sparse: { selection: 'fisher' } } })).rejects.toThrow(/'fisher' chooses the mask/);
    expect(gpu.memoryStats().buffers).toBe(before.buffers);
  });
});

describe('option fields', () => {
  const rank: OptionField = { name: 'rank', path: ['rank'], kind: 'integer', min: 1, max: 64, help: '' };
  const density: OptionField = { name: 'density', path: ['density'], kind: 'number', above: 0, max: 1, help: '' };
  const blocks: OptionField = { name: 'granularity', path: ['granularity'], kind: 'choice', choices: ['element', 16, 32], help: '' };
  const list: OptionField = { name: 'target-modules', path: ['targetModules'], kind: 'list', help: '' };

  it.each([
    [rank, '8', 8], [rank, ' 64', 64], [density, '1', 1], [density, '1e-3', 0.001], [blocks, 'element', 'element'], [blocks, '32', 32], [list, 'q_proj, v_proj,', ['q_proj', 'v_proj']],
  ] as [Exclude<OptionField, { kind: 'file' }>, string, unknown][])('%o reads %s', (f, text, want) => {
    expect(parseField(f, text)).toEqual(want);
  });

  it.each([
    [rank, '0', /rank must be an integer >= 1 and <= 64, got '0'/], [rank, '2.5', /an integer/], [rank, '', /got ''/], [rank, 'Infinity', /got 'Infinity'/],
    [density, '0', /density must be a number > 0 and <= 1, got '0'/], [density, 'NaN', /got 'NaN'/], [blocks, '12', /granularity must be one of element, 16, 32, got '12'/], [list, ' , ', /target-modules names nothing/],
  ] as [Exclude<OptionField, { kind: 'file' }>, string, RegExp][])('%o refuses %s', (f, text, message) => {
    expect(() => parseField(f, text)).toThrow(FieldValueError);
    expect(() => parseField(f, text)).toThrow(message);
  });

  it('values go to their paths without changing the options they were given', () => {
    const given = { lora: { rank: 4 } };
    const out = withOption(given, ['lora', 'alpha'], 8);
    expect(out).toEqual({ lora: { rank: 4, alpha: 8 } });
    expect(given).toEqual({ lora: { rank: 4 } });
    expect(optionAt(out, ['lora', 'alpha'])).toBe(8);
    expect(optionAt(out, ['sparse', 'density'])).toBeUndefined();
  });
});
