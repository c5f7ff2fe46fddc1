/**
 * 4-bit checkpoints bitsandbytes wrote through transformers (scripts/reference/make_bnb_fixtures.py):
 * the engine loads them as stored and computes the logits transformers computes from them; one module's
 * weight, dequantized on the GPU, is bitsandbytes' own rule applied to the file's arrays, value for
 * value; what the engine cannot load is refused by name.
 */
import { describe, expect, it } from 'vitest';
import { readHeader, readTensorF32, writeSafetensors } from '../../src/io/safetensors.js';
import { bytesSource } from '../../src/io/bytes.js';
import { memorySource } from '../../src/io/sources.js';
import { CausalLM } from '../../src/model/causal-lm.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { successorRows, toBatchInput } from '../../src/data/tasks.js';
import { FineTuner } from '../../src/train/finetuner.js';
import { mergedModelFiles, quantizedModelFiles } from '../../src/train/export.js';
import { compare, testGpu } from '../helpers.js';
import { bnbDequantize4bitRef } from '../reference/bitsandbytes.js';
import { batchOf, list, logitsOf, read, readJson, readText } from './fixtures.js';

const CASES = list('bitsandbytes');
const source = (name: string, files: Record<string, string | Uint8Array> = {}) =>
  memorySource({ 'config.json': readText('bitsandbytes', name, 'config.json'), 'model.safetensors': read('bitsandbytes', name, 'model.safetensors'), ...files });

/** The file's tensors by name: U8 as bytes, the rest as f32. */
async function tensorsOf(name: string): Promise<Map<string, { dtype: string; shape: number[]; data: Uint8Array | Float32Array }>> {
  const file = bytesSource('model.safetensors', read('bitsandbytes', name, 'model.safetensors'));
  const header = await readHeader(file);
  const out = new Map<string, { dtype: string; shape: number[]; data: Uint8Array | Float32Array }>();
  for (const [tensor, info] of header.byName) {
    const data = info.dtype === 'U8' ? new Uint8Array(await file.read(info.begin, info.end - info.begin)) : await readTensorF32(file, info);
    out.set(tensor, { dtype: info.dtype, shape: info.shape, data });
  }
  return out;
}

describe('bitsandbytes 4-bit checkpoints', () => {
  it('has the cases: NF4 and FP4, double-quantized, flat and per-row blocks, fused modules, skipped modules', () => {
    expect(CASES).toEqual(['gpt2-nf4-double-quant', 'llama-nf4-double-quant', 'llama-nf4-skip-modules', 'llama-wide-fp4-double-quant', 'phi3-fp4']);
  });

  it.each(CASES)('%s: transformers\' logits', async (name) => {
    const expected = readJson<{ ids: number[][]; quantization_moves_logits: number }>('bitsandbytes', name, 'expected.json');
    expect(expected.quantization_moves_logits).toBeGreaterThan(1e-2); // 4-bit matters: the f32 model would fail
    const ckpt = await openCheckpoint(source(name));
    expect(ckpt.config.warnings).toEqual([]);
    const model = await CausalLM.fromCheckpoint(await testGpu(), ckpt);
    try {
      const err = compare(await model.logits(batchOf(expected.ids)), await logitsOf('bitsandbytes', name, 'logits.safetensors'));
      expect(err.rel, `${name} (max abs ${err.maxAbs})`).toBeLessThan(1e-4);
      expect(model.quantized!.names.length).toBeGreaterThan(0);
      if (name.includes('skip')) expect(model.quantized!.has('layers.0.down.weight')).toBe(false);
    } finally {
      model.destroy();
    }
  });

  it.each([
    ['llama-nf4-double-quant', 'model.layers.1.mlp.down_proj.weight', 'layers.1.down.weight'],
    ['llama-wide-fp4-double-quant', 'model.layers.0.self_attn.o_proj.weight', 'layers.0.o.weight'],
  ])('%s: %s as stored (hand-read header, bitsandbytes\' rule) is the engine\'s weight, value for value', async (name, module, part) => {
    const t = await tensorsOf(name);
    const state = JSON.parse(new TextDecoder().decode(t.get(`${module}.quant_state.bitsandbytes__${name.includes('fp4') ? 'fp4' : 'nf4'}`)!.data as Uint8Array));
    const [N, K] = state.shape as number[];
    expect(state).toMatchObject({ blocksize: 64, nested_blocksize: 256, dtype: 'float32' });
    expect(t.get(module)).toMatchObject({ dtype: 'U8', shape: [(N * K) / 2, 1] });
    expect(t.get(`${module}.absmax`)).toMatchObject({ dtype: 'U8', shape: [Math.ceil((N * K) / 64)] });
    expect(t.get(`${module}.nested_absmax`)!.shape).toEqual([Math.ceil(N * K / 64 / 256)]);
    expect(t.get(`${module}.nested_quant_map`)!.shape).toEqual([256]);
    const want = bnbDequantize4bitRef({
      weight: t.get(module)!.data as Uint8Array, absmax: t.get(`${module}.absmax`)!.data as Uint8Array, quantMap: t.get(`${module}.quant_map`)!.data as Float32Array,
      nestedAbsmax: t.get(`${module}.nested_absmax`)!.data as Float32Array, nestedMap: t.get(`${module}.nested_quant_map`)!.data as Float32Array, offset: Math.fround(state.nested_offset),
    }, N * K);
    const model = await CausalLM.fromCheckpoint(await testGpu(), await openCheckpoint(source(name)));
    try {
      expect(model.quantized!.has(part)).toBe(true);
      const got = await model.readParam(part);
      const differs = want.findIndex((v, i) => v !== got[i]);
      expect(differs, `value ${differs}: ${got[differs]} vs ${want[differs]}`).toBe(-1);
      // Its codes are loaded, never re-quantized: writing the weight is refused by name, changing nothing.
      expect(() => model.writeHf(module, new Float32Array(N * K))).toThrow(/bitsandbytes checkpoint's 4-bit codes/);
      expect(await model.readParam(part)).toEqual(got);
    } finally {
      model.destroy();
    }
  });

  it('QLoRA trains on one (GPT-2, fused c_attn, double-quantized); the merged model loads with the trained logits; re-saving 4-bit is refused by name', async () => {
    const gpu = await testGpu();
    const name = 'gpt2-nf4-double-quant';
    const rows = successorRows(2, 8, 61);
    const batch = toBatchInput({ ...rows, ids: rows.ids.map((r) => r.map((t) => t % 96)) }); // the fixture's vocabulary is 96
    const ft = await FineTuner.create(gpu, await openCheckpoint(source(name)), { method: 'lora', lora: { rank: 4, targetModules: ['all-linear'] }, optimizer: { lr: 1e-2 } });
    try {
      expect(ft.model.linearWeight('layers.0.k.weight').format).toBe('nf4');
      const first = (await ft.evaluate(batch)).loss;
      for (let s = 0; s < 8; s++) await ft.step(batch);
      expect((await ft.evaluate(batch)).loss).toBeLessThan(0.8 * first);
      const merged = await CausalLM.fromCheckpoint(gpu, await openCheckpoint(memorySource(await mergedModelFiles(ft))));
      try {
        const ids = batchOf([[5, 17, 33, 2, 90, 41]]);
        expect(compare(await merged.logits(ids), await ft.model.logits(ids)).rel).toBeLessThan(1e-4);
      } finally {
        merged.destroy();
      }
      await expect(quantizedModelFiles(ft.model)).rejects.toThrow(/bitsandbytes checkpoint/);
    } finally {
      ft.destroy();
    }
  });

  it('refuses what it cannot load, by name', async () => {
    const name = 'llama-nf4-double-quant';
    const config = JSON.parse(readText('bitsandbytes', name, 'config.json'));
    const withQuant = (q: Record<string, unknown>) => openCheckpoint(source(name, { 'config.json': JSON.stringify({ ...config, quantization_config: { ...config.quantization_config, ...q } }) }));
    await expect(withQuant({ load_in_8bit: true, load_in_4bit: false })).rejects.toThrow(/8-bit \(load_in_8bit/);
    await expect(withQuant({ bnb_4bit_quant_storage: 'bfloat16' })).rejects.toThrow(/bnb_4bit_quant_storage/);
    await expect(withQuant({ bnb_4bit_quant_type: 'int4' })).rejects.toThrow(/bnb_4bit_quant_type 'int4'/);
    // The file disagrees with its config: double quantization claimed off, FP4 claimed.
    await expect(withQuant({ bnb_4bit_use_double_quant: false })).rejects.toThrow(/absmax.*U8|U8.*absmax|dtype/);
    const gpu = await testGpu();
    await expect(withQuant({ bnb_4bit_quant_type: 'fp4' }).then((c) => CausalLM.fromCheckpoint(gpu, c))).rejects.toThrow(/bitsandbytes__fp4|missing/);
    // The codes load as stored: another quantization, or an init that rewrites the base, is refused.
    await expect(CausalLM.fromCheckpoint(gpu, await openCheckpoint(source('phi3-fp4')), { quantize: 'nf4' })).rejects.toThrow(/already fp4 \(bitsandbytes\)/);
    await expect(FineTuner.create(gpu, await openCheckpoint(source(name)), { method: 'lora', lora: { rank: 2, init: 'pissa' } })).rejects.toThrow(/trains inside the base weights, which a 4-bit base cannot hold/);
    // A quantization state with another blocksize: refused when its module is read, nothing left allocated.
    const t = await tensorsOf(name);
    const key = 'model.layers.0.self_attn.q_proj.weight.quant_state.bitsandbytes__nf4';
    const state = JSON.parse(new TextDecoder().decode(t.get(key)!.data as Uint8Array));
    const tensors = Object.fromEntries([...t].map(([k, v]) => [k, v.dtype === 'U8' ? { dtype: 'U8' as const, shape: v.shape, data: v.data as Uint8Array } : { dtype: 'F32' as const, shape: v.shape, data: v.data as Float32Array }]));
    const bytes = new TextEncoder().encode(JSON.stringify({ ...state, blocksize: 128 }));
    tensors[key] = { dtype: 'U8', shape: [bytes.length], data: bytes };
    const before = gpu.memoryStats().currentBytes;
    await expect(CausalLM.fromCheckpoint(gpu, await openCheckpoint(source(name, { 'model.safetensors': writeSafetensors(tensors) })))).rejects.toThrow(/blocksize 128/);
    expect(gpu.memoryStats().currentBytes).toBe(before);
  });
});
