/** Element-wise updates (shaders/elementwise.wgsl); the building blocks of unfused optimizers and residuals. */
import { asView, type BufferLike } from '../gpu/buffers.js';
import { ShapeError } from '../errors.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { dropoutThreshold } from '../util/random.js';
import { launch1d, requireDims, requireElements, shaderConstant } from './common.js';

export type ElementwiseOp = 'scale' | 'axpy' | 'addcmul' | 'sqrtAffine' | 'addcdiv' | 'add' | 'dropout' | 'dropoutAdd' | 'softcap';
/** Which inputs each op reads; its code is the shader's OP_<NAME> constant (sqrtAffine: OP_SQRT_AFFINE). */
const OPS: Record<ElementwiseOp, { x: boolean; z: boolean }> = {
  scale: { x: false, z: false },
  axpy: { x: true, z: false },
  addcmul: { x: true, z: true },
  sqrtAffine: { x: true, z: false },
  addcdiv: { x: true, z: true },
  add: { x: true, z: true },
  dropout: { x: true, z: false },
  dropoutAdd: { x: true, z: false },
  softcap: { x: false, z: false },
};
const opCode = (op: ElementwiseOp) => shaderConstant('elementwise', `OP_${op.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`);
const WG = 256;

export interface ElementwiseArgs {
  op: ElementwiseOp;
  y: BufferLike;
  x?: BufferLike;
  z?: BufferLike;
  n: number;
  s0?: number;
  s1?: number;
  /** Dropout: drop probability and mask seed (the same seed gives the same mask). */
  dropout?: { p: number; seed: number };
}

export function elementwise(rec: CommandRecorder, { op, y, x, z, n, s0 = 1, s1 = 0, dropout }: ElementwiseArgs): void {
  const spec = OPS[op];
  if ((op === 'dropout' || op === 'dropoutAdd') && !(dropout && dropout.p >= 0 && dropout.p < 1)) {
    throw new RangeError(`elementwise ${op}: needs dropout.p in [0, 1)`);
  }
  requireDims(`elementwise ${op}`, { n });
  requireElements(`elementwise ${op}`, 'y', y, n);
  // x may be a view of packed f16 values (mixed precision's activations), read through its own binding.
  const halfX = spec.x && x ? asView(x).format : undefined;
  if (halfX && halfX !== 'f16') throw new ShapeError(`elementwise ${op}: x holds ${halfX} values; 16-bit x is f16`);
  if (spec.x) requireElements(`elementwise ${op}`, 'x', x ?? rec.gpu.placeholder(), halfX ? Math.ceil(n / 2) : n);
  if (spec.z) requireElements(`elementwise ${op}`, 'z', z ?? rec.gpu.placeholder(), n);
  const per = rec.gpu.tuning.elementsPerInvocation;
  // Every binding is statically used by the entry point, so unused operands get a placeholder buffer.
  rec.dispatch({
    shader: 'elementwise',
    entryPoint: 'elementwise',
    constants: { OP: opCode(op), WG, PER: per, HALF_X: !!halfX },
    uniforms: {
      n,
      s0: dropout ? 1 / (1 - dropout.p) : s0,
      s1,
      u0: dropout ? dropout.seed >>> 0 : 0,
      u1: dropout ? dropoutThreshold(dropout.p) : 0,
    },
    storage: { y, x: spec.x && !halfX ? x! : rec.gpu.placeholder(), xh: halfX ? x! : rec.gpu.placeholder(), z: spec.z ? z! : rec.gpu.placeholder() },
    workgroups: launch1d(rec.gpu, Math.ceil(n / per), WG),
    label: `elementwise ${op} ${n}`,
  });
}
