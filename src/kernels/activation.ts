/** Gated MLP activations (SwiGLU, GeGLU) and GELU, forward and backward (shaders/activation.wgsl). */
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

export type GeluKind = 'gelu_new' | 'gelu';

/** The gate's activation in a gated MLP: SiLU (SwiGLU) or a GELU (GeGLU; Gemma's is 'gelu_new', the tanh form). */
export type GateActivation = 'silu' | GeluKind;

const gateConstants = (gate: GateActivation = 'silu') => ({ GATE: { silu: 0, gelu_new: 1, gelu: 2 }[gate], GELU_TANH: gate === 'gelu_new' });

/** h = act(gate) * up, act silu unless `activation` says otherwise. */
export function swigluForward(rec: CommandRecorder, a: { gate: BufferLike; up: BufferLike; h: BufferLike; n: number; activation?: GateActivation }): void {
  run(rec, 'swiglu_forward', a.n, { a: a.gate, b: a.up, out: a.h }, gateConstants(a.activation));
}

/** dGate, dUp (overwritten) from dH. */
export function swigluBackward(
  rec: CommandRecorder,
  a: { gate: BufferLike; up: BufferLike; dH: BufferLike; dGate: BufferLike; dUp: BufferLike; n: number; activation?: GateActivation },
): void {
  run(rec, 'swiglu_backward', a.n, { a: a.gate, b: a.up, dout: a.dH, da: a.dGate, db: a.dUp }, gateConstants(a.activation));
}

export function geluForward(rec: CommandRecorder, a: { x: BufferLike; y: BufferLike; n: number; kind?: GeluKind }): void {
  run(rec, 'gelu_forward', a.n, { a: a.x, out: a.y }, { GELU_TANH: (a.kind ?? 'gelu_new') === 'gelu_new' });
}

/** dX (overwritten) = dY * gelu'(x). */
export function geluBackward(rec: CommandRecorder, a: { x: BufferLike; dY: BufferLike; dX: BufferLike; n: number; kind?: GeluKind }): void {
  run(rec, 'gelu_backward', a.n, { a: a.x, dout: a.dY, da: a.dX }, { GELU_TANH: (a.kind ?? 'gelu_new') === 'gelu_new' });
}
