/** Shape and size checks shared by the kernel modules, and 1-D launch folding. */
import { ShapeError } from '../errors.js';
import { asView, type BufferLike } from '../gpu/buffers.js';
import type { Gpu } from '../gpu/gpu.js';
import { SHADER_INTERFACES } from './shaders.gen.js';

export function requireDims(kernel: string, dims: Record<string, number>): void {
  for (const [name, v] of Object.entries(dims)) {
    if (!Number.isInteger(v) || v < 0) throw new ShapeError(`${kernel}: ${name} must be a non-negative integer, got ${v}`);
  }
}

/** The view must hold at least `count` 4-byte elements. */
export function requireElements(kernel: string, name: string, b: BufferLike, count: number): void {
  const have = asView(b).size;
  if (have < count * 4) {
    throw new ShapeError(`${kernel}: ${name} needs ${count} elements (${count * 4} bytes) but the buffer has ${have} bytes`);
  }
  if (count > 2 ** 32) throw new ShapeError(`${kernel}: ${name} has more than 2^32 elements; split it`);
}

/** Workgroup counts for `invocations` threads in workgroups of `wg`, folded into x and y past the per-dimension limit. */
export function launch1d(gpu: Gpu, invocations: number, wg: number): [number, number] {
  const groups = Math.ceil(invocations / wg);
  const maxDim = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (groups <= maxDim) return [groups, 1];
  const y = Math.ceil(groups / maxDim);
  return [Math.ceil(groups / y), y];
}

/**
 * A module-scope `const` of a shader (a tile size, an op code), read from the interface generated from
 * its WGSL, so the host never states the number a second time.
 */
export function shaderConstant(shader: string, name: string): number {
  const value = SHADER_INTERFACES[shader]?.constants[name];
  if (value === undefined) throw new Error(`shaders/${shader}.wgsl declares no constant '${name}'`);
  return value;
}

/** The HALF pipeline constant for a 16-bit format (shaders/lib/half_encode.wgsl's HALF_BF16, HALF_F16). */
export function halfConstant(shader: string, format: 'bf16' | 'f16'): number {
  return shaderConstant(shader, format === 'bf16' ? 'HALF_BF16' : 'HALF_F16');
}
