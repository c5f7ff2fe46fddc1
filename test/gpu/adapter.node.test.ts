/**
 * The adapter the environment selects is the one tested: `npm run test:lavapipe` (scripts/lavapipe.sh)
 * runs the suites on lavapipe at the subgroup size LP_NATIVE_VECTOR_WIDTH gives (256 bits: 8 lanes,
 * 512: 16); `npm test` on SwiftShader.
 */
import { describe, expect, it } from 'vitest';
import { testGpu } from '../helpers.js';

describe('the adapter under test', () => {
  it('is the one the environment selects', async () => {
    const gpu = await testGpu();
    const width = process.env.LP_NATIVE_VECTOR_WIDTH;
    if (!width) return void expect(gpu.describe()).not.toMatch(/llvmpipe/);
    expect(gpu.describe()).toMatch(/llvmpipe/);
    const info = (gpu.device as GPUDevice & { adapterInfo: GPUAdapterInfo & { subgroupMinSize: number; subgroupMaxSize: number } }).adapterInfo;
    expect([info.subgroupMinSize, info.subgroupMaxSize]).toEqual([Number(width) / 32, Number(width) / 32]);
  });
});
