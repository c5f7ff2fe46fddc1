/**
 * LoRA's PEFT options beyond the plain adapter: the initializations (Gaussian; PiSSA and OLoRA, which
 * rewrite the base into a residual and are saved converted to plain LoRA on the original base) and LoRA+
 * (B at a multiple of A's rate). DoRA's gradients are checked in test/model/gradients.test.ts, its files
 * against PEFT's in test/interop, and PEFT's four adapter tests run for it in shared.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { successorRows, toBatchInput } from '../../src/data/tasks.js';
import { memorySource } from '../../src/io/sources.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tinyModelFiles } from '../../src/model/tiny.js';
import { loraModules, type Lora, type LoraOptions } from '../../src/methods/lora/index.js';
import { parseConfig } from '../../src/model/config.js';
import { peftAdapterFiles, readPeftAdapter } from '../../src/methods/lora/peft.js';
import { adapterFromMethod } from '../../src/serve/adapters.js';
import { FineTuner } from '../../src/train/finetuner.js';
import { compare, freshSeed, testGpu } from '../helpers.js';
import { singularSubspace } from '../reference/svd.js';

const shape = { hiddenSize: 32, intermediateSize: 48, numLayers: 2, numHeads: 4, numKvHeads: 2, initStd: 0.2, maxPositions: 64 };
const filesOf = (architecture: 'llama' | 'gpt2', seed: number) => tinyModelFiles({ ...shape, architecture, seed });

async function make(files: Record<string, string | Uint8Array>, lora: LoraOptions, extra: { baseDtype?: 'bf16'; quantize?: 'nf4' } = {}): Promise<FineTuner> {
  return FineTuner.create(await testGpu(), await openCheckpoint(memorySource(files)), { method: 'lora', lora, optimizer: { lr: 1e-2 }, ...extra });
}

const batch = toBatchInput(successorRows(2, 6, 3));
const frob2 = (a: ArrayLike<number>) => Array.from(a).reduce((s, v) => s + v * v, 0);

/** s B A of a module, in float64. */
async function product(ft: FineTuner, name: string): Promise<Float64Array> {
  const lora = ft.method as Lora;
  const d = lora.modules.get(name)!;
  const [A, B] = await Promise.all(['A', 'B'].map((t) => ft.gpu.readF32(lora.params.view(`${name}.lora_${t}`))));
  const out = new Float64Array(d.out * d.in);
  for (let i = 0; i < d.out; i++) for (let j = 0; j < d.in; j++) for (let k = 0; k < d.rank; k++) out[i * d.in + j] += d.scale * B[i * d.rank + k] * A[k * d.in + j];
  return out;
}

describe('LoRA initializations', () => {
  it.each<[string, LoraOptions]>([
    ['pissa (exact SVD)', { init: 'pissa' }],
    ['pissa, 4 iterations of randomized SVD', { init: 'pissa', pissaNiter: 4 }],
    ['olora', { init: 'olora' }],
  ])('%s: the residual plus s B A is the base weight to f32 rounding, the model starts unchanged, and the adapter is the decomposition', async (_label, init) => {
    const seed = freshSeed();
    const files = filesOf('llama', seed);
    const base = await make(files, { rank: 4 });
    const ft = await make(files, { rank: 4, targetModules: ['q', 'down'], seed, ...init });
    try {
      const lora = ft.method as Lora;
      expect(lora.initial?.size).toBe(lora.modules.size);
      for (const [name, d] of lora.modules) {
        const w = await base.gpu.readF32(base.model.params.view(`${name}.weight`));
        const residual = await ft.gpu.readF32(ft.model.params.view(`${name}.weight`));
        const sBA = await product(ft, name);
        expect(compare(residual.map((v, i) => v + sBA[i]), w).rel, `seed ${seed} ${name}`).toBeLessThan(1e-6);
        const { values } = singularSubspace(w, d.out, d.in, d.rank, 'right');
        const top = values.slice(0, d.rank).reduce((s, v) => s + v * v, 0);
        if (init.init === 'pissa' && init.pissaNiter === undefined) {
          // The best rank-r approximation: it holds the top r singular values' energy, the residual the rest.
          expect(Math.abs(frob2(sBA) - top) / top, `seed ${seed} ${name}`).toBeLessThan(1e-5);
          expect(Math.abs(frob2(residual) - (frob2(w) - top)) / frob2(w), `seed ${seed} ${name}`).toBeLessThan(1e-5);
        } else if (init.init === 'pissa') {
          expect(frob2(sBA) / top, `seed ${seed} ${name}: a randomized subspace near the top one`).toBeGreaterThan(0.8);
        } else {
          // OLoRA: B = Q[:, :r] has orthonormal columns, A = R[:r] is upper triangular, and as PEFT leaves
          // A and B unscaled, the residual W - s Q_r R_r has B^T residual = (1 - s) A.
          const [A, B] = await Promise.all(['A', 'B'].map((t) => ft.gpu.readF32(lora.params.view(`${name}.lora_${t}`))));
          for (let a = 0; a < d.rank; a++) {
            for (let b = 0; b < d.rank; b++) {
              let dot = 0;
              for (let o = 0; o < d.out; o++) dot += B[o * d.rank + a] * B[o * d.rank + b];
              expect(Math.abs(dot - (a === b ? 1 : 0)), `${name} B^T B`).toBeLessThan(1e-5);
            }
            for (let j = 0; j < a; j++) expect(A[a * d.in + j], `${name} A below the diagonal`).toBe(0);
            for (let j = 0; j < d.in; j++) {
              let dot = 0;
              for (let o = 0; o < d.out; o++) dot += B[o * d.rank + a] * residual[o * d.in + j];
              expect(Math.abs(dot - (1 - d.scale) * A[a * d.in + j]), `${name} B^T residual`).toBeLessThan(1e-5);
            }
          }
        }
      }
      expect(compare(await ft.model.logits(batch), await base.model.logits(batch)).rel).toBeLessThan(1e-5);
    } finally {
      base.destroy();
      ft.destroy();
    }
  });

  it.each<['llama' | 'gpt2', LoraOptions]>([
    ['llama', { init: 'pissa', rank: 4, targetModules: ['q', 'v', 'down'] }],
    ['gpt2', { init: 'olora', rank: 2, targetModules: ['q', 'k', 'v', 'fc'], dora: true }],
    ['llama', { init: 'pissa', pissaNiter: 2, rank: 2, alpha: 3, rslora: true, rankPattern: { down_proj: 4 } }],
  ])('%s %j: trained, saved converted to plain LoRA of rank 2r, it gives the trained logits on the original base', async (family, options) => {
    const files = filesOf(family, 11);
    const ft = await make(files, options);
    const plain = await make(files, { rank: 1 });
    try {
      for (let s = 0; s < 3; s++) await ft.step(toBatchInput(successorRows(2, 6, 20 + s)));
      const trained = await ft.model.logits(batch);
      const files2 = await peftAdapterFiles(ft.method as Lora);
      const config = JSON.parse(new TextDecoder().decode(files2['adapter_config.json']));
      expect([config.r, config.init_lora_weights]).toEqual([2 * options.rank!, true]);
      const adapter = await readPeftAdapter({ config: files2['adapter_config.json'], weights: files2['adapter_model.safetensors'] }, plain.model.config);
      expect(adapter.options.init).toBeUndefined();
      const loaded = await make(files, adapter.options);
      try {
        for (const [name, data] of adapter.tensors) loaded.writeTensor(name, data);
        expect(compare(await loaded.model.logits(batch), trained).rel).toBeLessThan(1e-4);
        expect(compare(trained, await plain.model.logits(batch)).rel, 'training moved the logits').toBeGreaterThan(1e-3);
      } finally {
        loaded.destroy();
      }
    } finally {
      ft.destroy();
      plain.destroy();
    }
  });

  it('a resumed PiSSA run redoes the decomposition and continues identically', async () => {
    const files = filesOf('llama', 4);
    const options = { init: 'pissa', pissaNiter: 3, rank: 3, seed: 9 } as const;
    const a = await make(files, options);
    const b = await make(files, options);
    try {
      for (let s = 0; s < 2; s++) await a.step(toBatchInput(successorRows(2, 6, 30 + s)));
      await b.loadState(await a.saveState());
      const next = toBatchInput(successorRows(2, 6, 40));
      expect((await b.step(next)).loss).toBe((await a.step(next)).loss);
    } finally {
      a.destroy();
      b.destroy();
    }
  });

  it('served from the adapter cache as the converted adapter; a raw file PEFT decomposed fused is refused', async () => {
    const files = filesOf('gpt2', 3);
    const ft = await make(files, { init: 'pissa', rank: 2, targetModules: ['q', 'k', 'v', 'fc'] });
    try {
      await ft.step(batch);
      const lora = ft.method as Lora;
      // What the cache serves on the original base: s B' A' = s (B A - B0 A0).
      const served = await adapterFromMethod(ft.method);
      if (served.kind !== 'lora') throw new Error('expected a LoRA adapter');
      const name = 'layers.1.fc';
      const m = served.modules.get(name)!;
      const d = lora.modules.get(name)!;
      expect(m.rank).toBe(2 * d.rank);
      const start = lora.initial!.get(name)!;
      const want = (await product(ft, name)).map((v, i) => {
        const [o, j] = [Math.floor(i / d.in), i % d.in];
        let b0a0 = 0;
        for (let k = 0; k < d.rank; k++) b0a0 += start.B[o * d.rank + k] * start.A[k * d.in + j];
        return v - d.scale * b0a0;
      });
      const got = want.map((_, i) => {
        const [o, j] = [Math.floor(i / d.in), i % d.in];
        let ba = 0;
        for (let k = 0; k < m.rank; k++) ba += m.B[o * m.rank + k] * m.A[k * d.in + j];
        return m.scale * ba;
      });
      expect(compare(got, want).rel).toBeLessThan(1e-5);
      // Raw (unconverted) files on the fused c_attn: PEFT decomposed the fused weight, which loading here would not repeat.
      const saved = await peftAdapterFiles(lora);
      const config = JSON.parse(new TextDecoder().decode(saved['adapter_config.json']));
      const raw = new TextEncoder().encode(JSON.stringify({ ...config, init_lora_weights: 'pissa' }));
      await expect(readPeftAdapter({ config: raw, weights: saved['adapter_model.safetensors'] }, ft.model.config)).rejects.toMatchObject({ name: 'UnsupportedAdapterError', message: expect.stringMatching(/c_attn', which PEFT decomposed as one fused weight/) });
    } finally {
      ft.destroy();
    }
  });

  it("DoRA measures a base weight again when it is written: the unmerged model equals the merged one", async () => {
    const ft = await make(filesOf('llama', 8), { dora: true, rank: 3, targetModules: ['q', 'up'] });
    try {
      await ft.step(batch);
      const name = 'model.layers.0.self_attn.q_proj.weight';
      const w = await ft.readTensor(name);
      ft.writeTensor(name, w.map((v, i) => v * (1 + 0.5 * Math.sin(i))));
      const unmerged = await ft.model.logits(batch);
      // Merging computes n from the weight itself; the unmerged pass from the measured ‖W‖².
      await ft.gpu.run((rec) => ft.method.setMerged!(rec, true));
      expect(compare(unmerged, await ft.model.logits(batch)).rel).toBeLessThan(1e-4);
    } finally {
      ft.destroy();
    }
  });

  it('Gaussian: A drawn with std 1 / r and B = 0, as PEFT', async () => {
    const ft = await make(filesOf('llama', 2), { init: 'gaussian', rank: 8, targetModules: ['all-linear'] });
    try {
      const lora = ft.method as Lora;
      const As = await Promise.all(lora.names.filter((n) => n.endsWith('lora_A')).map((n) => ft.gpu.readF32(lora.params.view(n))));
      const all = As.flatMap((a) => Array.from(a));
      const std = Math.sqrt(frob2(all) / all.length);
      expect(Math.abs(std - 1 / 8) / (1 / 8)).toBeLessThan(0.05);
      for (const n of lora.names.filter((n) => n.endsWith('lora_B'))) expect((await ft.gpu.readF32(lora.params.view(n))).every((v) => v === 0)).toBe(true);
    } finally {
      ft.destroy();
    }
  });

  it('refuses what it cannot do, by name and before training', async () => {
    const files = filesOf('llama', 1);
    await expect(make(files, { init: 'pissa' }, { quantize: 'nf4' })).rejects.toThrow(/4-bit/);
    await expect(make(files, { init: 'olora' }, { baseDtype: 'bf16' })).rejects.toThrow(/stored as bf16.*baseDtype 'f32'/);
    await expect(make(files, { init: 'svd' as never })).rejects.toThrow(/init must be one of kaiming, gaussian, pissa, olora/);
    await expect(make(files, { init: 'olora', pissaNiter: 2 })).rejects.toThrow(/pissaNiter applies to init 'pissa'/);
    await expect(make(files, { dora: true, dropout: 0.1 })).rejects.toThrow(/DoRA with dropout/);
    await expect(make(filesOf('gpt2', 1), { dora: true, targetModules: ['q', 'fc'] })).rejects.toThrow(/DoRA on q without k, v: PEFT adapts c_attn as one module/);
    await expect(FineTuner.create(await testGpu(), await openCheckpoint(memorySource(files)), { method: 'zo', zo: { target: 'lora', lora: { init: 'pissa' } }, quantize: 'nf4' })).rejects.toThrow(/4-bit/);
    // Exact PiSSA's host SVD is refused on wide layers before anything loads (a 2048-wide config).
    const wide = parseConfig({ architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 2048, intermediate_size: 4096, num_hidden_layers: 1, num_attention_heads: 16, num_key_value_heads: 16, vocab_size: 64, max_position_embeddings: 64 });
    expect(() => loraModules(wide, { init: 'pissa' })).toThrow(/exact PiSSA of a layer 2048 wide.*give pissaNiter/);
    expect(loraModules(wide, { init: 'pissa', pissaNiter: 4 }).size).toBe(7);
    // The adapter cache serves plain LoRA: DoRA is refused there by name.
    const dora = await make(files, { dora: true, rank: 2 });
    try {
      await expect(adapterFromMethod(dora.method)).rejects.toThrow(/adapter cache serves plain LoRA and sparse adapters, not DoRA/);
    } finally {
      dora.destroy();
    }
    await expect(FineTuner.create(await testGpu(), await openCheckpoint(memorySource(files)), { method: 'sparse+lora', 'sparse+lora': { sparse: { selection: 'random', density: 0.1 }, lora: { init: 'pissa' } } })).rejects.toThrow(/rewrites the base/);
  });
});

describe('LoRA+', () => {
  it("moves B and DoRA's magnitude at ratio times A's rate, as PEFT's parameter groups", async () => {
    const files = filesOf('llama', 6);
    /** Each tensor's change over one step. */
    const stepDeltas = async (ratio: number) => {
      const ft = await make(files, { rank: 4, dora: true, loraplusLrRatio: ratio });
      try {
        const lora = ft.method as Lora;
        const read = async () => new Map(await Promise.all(lora.names.map(async (n) => [n, await ft.gpu.readF32(lora.params.view(n))] as const)));
        const before = await read();
        await ft.step(batch);
        const after = await read();
        return new Map(lora.names.map((n) => [n, after.get(n)!.map((v, i) => v - before.get(n)![i])]));
      } finally {
        ft.destroy();
      }
    };
    const [plain, plus] = [await stepDeltas(1), await stepDeltas(4)];
    // Both runs see the same first gradients; Adam's first step is lr times a function of the gradient
    // alone, so B and m move exactly 4 times as far. A's first gradient is zero (B starts at 0).
    for (const [name, d] of plain) {
      const p = plus.get(name)!;
      if (name.endsWith('lora_A')) expect(p.every((v) => v === 0) && d.every((v) => v === 0), name).toBe(true);
      else {
        expect(frob2(d), name).toBeGreaterThan(0);
        expect(compare(p, d.map((v) => 4 * v)).rel, name).toBeLessThan(1e-5);
      }
    }
  });
});
