/** SwiGLU and GELU forward and backward (shaders/activation.wgsl). */
import type { BufferLike } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { launch1d, requireDims, requireElements } from './common.js';

const WG = 256;

/** Every binding of these kernels holds n elements. */
function run(rec: CommandRecorder, entryPoint: string, n: number, storage: Record<string, BufferLike>, constants = {}): void {
  requireDims(entryPoint, { n });
  for (const [name, b] of Object.entries(storage)) requireElements(entryPoint, name, b, n);
  rec.dispatch({ shader: 'activation', entryPoint, constants: { WG, ...constants }, uniforms: { n }, storage, workgroups: launch1d(rec.gpu, n, WG), label: `${entryPoint} ${n}` });
}

/** h = silu(gate) * up. */
export function swigluForward(rec: CommandRecorder, a: { gate: BufferLike; up: BufferLike; h: BufferLike; n: number }): void {
  run(rec, 'swiglu_forward', a.n, { a: a.gate, b: a.up, out: a.h });
}

/** dGate, dUp (overwritten) from dH. */
export function swigluBackward(
  rec: CommandRecorder,
  a: { gate: BufferLike; up: BufferLike; dH: BufferLike; dGate: BufferLike; dUp: BufferLike; n: number },
): void {
  run(rec, 'swiglu_backward', a.n, { a: a.gate, b: a.up, dout: a.dH, da: a.dGate, db: a.dUp });
}

export type GeluKind = 'gelu_new' | 'gelu';

export function geluForward(rec: CommandRecorder, a: { x: BufferLike; y: BufferLike; n: number; kind?: GeluKind }): void {
  run(rec, 'gelu_forward', a.n, { a: a.x, out: a.y }, { GELU_TANH: (a.kind ?? 'gelu_new') === 'gelu_new' });
}

/** dX (overwritten) = dY * gelu'(x). */
export function geluBackward(rec: CommandRecorder, a: { x: BufferLike; dY: BufferLike; dX: BufferLike; n: number; kind?: GeluKind }): void {
  run(rec, 'gelu_backward', a.n, { a: a.x, dout: a.dY, da: a.dX }, { GELU_TANH: (a.kind ?? 'gelu_new') === 'gelu_new' });
}
