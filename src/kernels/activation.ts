/** SwiGLU and GELU forward and backward (shaders/activation.wgsl). */
import type { BufferLike } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { u32 } from '../gpu/recorder.js';
import { launch1d, requireDims, requireElements } from './common.js';

const WG = 256;

function run(rec: CommandRecorder, entryPoint: string, n: number, storage: (BufferLike | undefined)[], constants = {}): void {
  requireDims(entryPoint, { n });
  storage.forEach((b, i) => b && requireElements(entryPoint, `binding ${i + 1}`, b, n));
  rec.dispatch({ shader: 'activation', entryPoint, constants: { WG, ...constants }, uniforms: [u32(n)], storage, workgroups: launch1d(rec.gpu, n, WG), label: `${entryPoint} ${n}` });
}

/** h = silu(gate) * up. */
export function swigluForward(rec: CommandRecorder, a: { gate: BufferLike; up: BufferLike; h: BufferLike; n: number }): void {
  run(rec, 'swiglu_forward', a.n, [a.gate, a.up, a.h]);
}

/** dGate, dUp (overwritten) from dH. */
export function swigluBackward(
  rec: CommandRecorder,
  a: { gate: BufferLike; up: BufferLike; dH: BufferLike; dGate: BufferLike; dUp: BufferLike; n: number },
): void {
  run(rec, 'swiglu_backward', a.n, [a.gate, a.up, undefined, a.dH, a.dGate, a.dUp]);
}

export type GeluKind = 'gelu_new' | 'gelu';

export function geluForward(rec: CommandRecorder, a: { x: BufferLike; y: BufferLike; n: number; kind?: GeluKind }): void {
  run(rec, 'gelu_forward', a.n, [a.x, undefined, a.y], { GELU_TANH: (a.kind ?? 'gelu_new') === 'gelu_new' });
}

/** dX (overwritten) = dY * gelu'(x). */
export function geluBackward(rec: CommandRecorder, a: { x: BufferLike; dY: BufferLike; dX: BufferLike; n: number; kind?: GeluKind }): void {
  run(rec, 'gelu_backward', a.n, [a.x, undefined, undefined, a.dY, a.dX], { GELU_TANH: (a.kind ?? 'gelu_new') === 'gelu_new' });
}
