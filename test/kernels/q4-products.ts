/** The check both 4-bit formats' tests run on their fused products (src/kernels/q4-matmul.ts). */
import { expect } from 'vitest';
import { matmulQ4, matmulQ4InputGrad, type Gpu, type MatmulVariant, type Q4Weight } from '../../src/index.js';
import { compare, poisoned, randn } from '../helpers.js';
import { matmulRef } from '../reference/matmul.js';

/**
 * Forward y = x dequant(W)^T, the input gradient dx = dy dequant(W) into a poisoned buffer and added to
 * one holding values, each against the float64 product with `w`, the reference decoding of the weight.
 */
export async function checkQ4Products(gpu: Gpu, weight: Q4Weight, w: Float64Array, M: number, variant: MatmulVariant, rand: () => number, seed: number): Promise<void> {
  const { N, K } = weight.layout;
  const xh = randn(M * K, rand);
  const dyh = randn(M * N, rand);
  const y = poisoned(gpu, M * N, 'y');
  const dx = poisoned(gpu, M * K, 'dx');
  const initial = randn(M * K, rand);
  const dxSum = gpu.upload(initial, 'dx accumulated');
  await gpu.run((rec) => {
    const dy = gpu.upload(dyh, 'dy');
    matmulQ4(rec, { x: gpu.upload(xh, 'x'), weight, y, M, variant });
    matmulQ4InputGrad(rec, { dy, weight, dx, M, variant });
    matmulQ4InputGrad(rec, { dy, weight, dx: dxSum, M, variant, accumulate: true });
  });
  const fwd = compare(await gpu.readF32(y), matmulRef({ a: xh, b: w, M, N, K, transB: true }));
  expect(fwd.rel, `seed ${seed} forward maxAbs ${fwd.maxAbs}`).toBeLessThan(1e-4);
  const grad = compare(await gpu.readF32(dx), matmulRef({ a: dyh, b: w, M, N: K, K: N }));
  expect(grad.rel, `seed ${seed} input gradient maxAbs ${grad.maxAbs}`).toBeLessThan(1e-4);
  const sum = compare(await gpu.readF32(dxSum), matmulRef({ a: dyh, b: w, c: initial, M, N: K, K: N, accumulate: true }));
  expect(sum.rel, `seed ${seed} accumulated input gradient maxAbs ${sum.maxAbs}`).toBeLessThan(1e-4);
}
