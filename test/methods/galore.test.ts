/**
 * GaLore, checked from outside: a step moves each projected weight by exactly -α N P (N: Adam's
 * normalized update of the projected gradient R = G P^T or P^T G, in float64 from the step's gradient and
 * projection), then decays it; P captures the gradient's top singular subspace as a float64 SVD finds it;
 * the optimizer keeps a fraction of AdamW's state. (Shared method tests: test/methods/shared.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import { successorRows, toBatchInput } from '../../src/data/tasks.js';
import { memorySource } from '../../src/io/sources.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { tinyModelFiles } from '../../src/model/tiny.js';
import type { GaloreAdamW } from '../../src/methods/galore/index.js';
import { FineTuner } from '../../src/train/finetuner.js';
import { compare, testGpu } from '../helpers.js';
import { singularSubspace } from '../reference/svd.js';

const files = tinyModelFiles({ architecture: 'llama', seed: 8, hiddenSize: 32, intermediateSize: 48, numLayers: 2, numHeads: 4, numKvHeads: 2, initStd: 0.2, maxPositions: 64 });
const batch = toBatchInput(successorRows(3, 5, 12));

describe('GaLore', () => {
  it('moves a projected weight by -α N P from the step\'s gradient and projection (float64), then decays it', async () => {
    const [lr, wd, scale, rank] = [1e-2, 0.1, 0.25, 3];
    const ft = await FineTuner.create(await testGpu(), await openCheckpoint(memorySource(files)), {
      method: 'galore', galore: { rank, scale, updateGap: 5, iterations: 20 }, optimizer: { lr, weightDecay: wd, maxGradNorm: 0, schedule: 'constant', warmupSteps: 0, eps: 1e-6 },
    });
    const opt = ft.optimizer as GaloreAdamW;
    const cases = [['layers.0.gate.weight', true, 48, 32], ['layers.1.down.weight', false, 32, 48]] as const;
    const before = await Promise.all(cases.map(([name]) => ft.gpu.readF32(ft.model.params.view(name))));
    await ft.step(batch);
    for (const [c, [name, right, m, n]] of cases.entries()) {
      const w0 = before[c];
      const w1 = await ft.gpu.readF32(ft.model.params.view(name));
      const g = await ft.gradient(name); // the mean gradient the step used
      const p = await ft.gpu.readF32(opt.stateViews().get(`${name}.galore_p`)!);
      // R = G P^T [m, r] (right) or P^T G [r, n] (left); Adam's first step: m = 0.1 R, v = 0.001 R^2.
      const size = right ? m * rank : rank * n;
      const R = new Float64Array(size);
      if (right) for (let i = 0; i < m; i++) for (let k = 0; k < rank; k++) for (let j = 0; j < n; j++) R[i * rank + k] += g[i * n + j] * p[k * n + j];
      else for (let k = 0; k < rank; k++) for (let j = 0; j < n; j++) for (let i = 0; i < m; i++) R[k * n + j] += p[i * rank + k] * g[i * n + j];
      const stepSize = (lr * Math.sqrt(1 - 0.999)) / (1 - 0.9);
      const N = R.map((x) => (stepSize * 0.1 * x) / (Math.sqrt(0.001 * x * x) + 1e-6));
      const want = Array.from(w0, (w, idx) => {
        const i = Math.floor(idx / n);
        const j = idx % n;
        let back = 0;
        if (right) for (let k = 0; k < rank; k++) back += N[i * rank + k] * p[k * n + j];
        else for (let k = 0; k < rank; k++) back += p[i * rank + k] * N[k * n + j];
        return (w - scale * back) * (1 - lr * wd);
      });
      const change = compare(w1.map((v, i) => v - w0[i]), want.map((v, i) => v - w0[i]));
      expect(change.rel, name).toBeLessThan(1e-4);
      // P spans the gradient's top-r singular subspace: it captures the energy of the top r singular values.
      const { values } = singularSubspace(g, m, n, rank, right ? 'right' : 'left');
      const captured = R.reduce((s, x) => s + x * x, 0) / values.slice(0, rank).reduce((s, x) => s + x * x, 0);
      expect(captured, name).toBeGreaterThan(0.99);
      expect(captured, name).toBeLessThan(1 + 1e-4);
    }
    ft.destroy();
  });

  it('keeps r (n + 2m) values of optimizer state per projected weight [m, n] (m >= n) where AdamW keeps 2 m n', async () => {
    const gpu = await testGpu();
    const make = async (method: 'full' | 'galore') => FineTuner.create(gpu, await openCheckpoint(memorySource(files)), { method, galore: method === 'galore' ? { rank: 4 } : undefined });
    const [full, galore] = [await make('full'), await make('galore')];
    // The linear weights' state (the embeddings and norms keep AdamW's moments in both).
    const linear = (ft: FineTuner) => [...ft.optimizer.stateViews()].filter(([n]) => /^layers\.\d+\.(q|k|v|o|gate|up|down)\.weight\./.test(n)).reduce((s, [, v]) => s + v.size, 0);
    const shapes = [[32, 32], [16, 32], [16, 32], [32, 32], [48, 32], [48, 32], [32, 48]];
    const want = 2 * shapes.reduce((s, [m, n]) => s + 4 * (Math.min(m, n) + 2 * Math.max(m, n)), 0);
    expect(linear(galore)).toBe(want * 4);
    // At r = hidden / 8, as the benchmark's galore_optimizer_bytes_vs_adamw.
    expect(linear(galore) / linear(full)).toBeLessThan(0.3);
    full.destroy();
    galore.destroy();
  });
});
