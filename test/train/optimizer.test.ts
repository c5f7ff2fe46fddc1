/** The optimizer's documented defaults and options: clipping on at 1, and which tensors decay. */
import { describe, expect, it } from 'vitest';
import { Arena, planArena } from '../../src/model/arena.js';
import { AdamW, decays } from '../../src/optim/adamw.js';
import { testGpu } from '../helpers.js';

async function setup(names: string[], grad: number) {
  const gpu = await testGpu();
  const layout = planArena(names.map((name) => ({ name, length: 5 })), 1 << 20);
  const params = new Arena(gpu, layout, 'params');
  const grads = new Arena(gpu, layout, 'grads');
  for (const n of names) {
    gpu.write(params.view(n), new Float32Array(5).fill(2));
    gpu.write(grads.view(n), new Float32Array(5).fill(grad));
  }
  return { gpu, params, grads, set: { names, param: (n: string) => params.view(n), grads } };
}

describe('AdamW options', () => {
  it('decays every tensor but biases and norm weights by default, and exactly the chosen ones with `decay`', async () => {
    const names = ['layers.0.q.weight', 'layers.0.q.bias', 'layers.0.norm1.weight', 'embed', 'layers.0.q.lora_A'];
    expect(names.map(decays)).toEqual([true, false, false, true, true]);
    for (const decay of [undefined, (n: string) => n.endsWith('.bias')]) {
      const { gpu, params, grads, set } = await setup(names, 0); // zero gradients: only decay moves a weight
      const opt = new AdamW(gpu, set, { weightDecay: 0.1, decay });
      await gpu.run((rec) => opt.record(rec, 1));
      for (const n of names) {
        const want = (decay ?? decays)(n) ? 2 * (1 - 0.1) : 2;
        const got = await gpu.readF32(params.view(n));
        expect(Math.abs(got[0] - want), n).toBeLessThan(1e-6);
      }
      opt.destroy();
      params.destroy();
      grads.destroy();
    }
  });

  it('clips the global gradient norm at 1 by default, not at all with maxGradNorm 0', async () => {
    const { gpu, params, grads, set } = await setup(['w', 'b'], 3); // norm = sqrt(10 * 9)
    const norm = Math.sqrt(90);
    for (const [config, factor] of [[{}, 1 / (norm + 1e-6)], [{ maxGradNorm: 0 }, 1], [{ maxGradNorm: 100 }, 1]] as const) {
      const opt = new AdamW(gpu, set, config);
      await gpu.run((rec) => opt.record(rec, 0));
      const [clip, measured] = await gpu.readF32(opt.normOut);
      expect(Math.abs(measured - norm) / norm).toBeLessThan(1e-5);
      expect(Math.abs(clip - factor) / factor, JSON.stringify(config)).toBeLessThan(1e-5);
      opt.destroy();
    }
    params.destroy();
    grads.destroy();
  });
});
