/** Gated MLP activations (SwiGLU, GeGLU) and GELU, forward and backward (shaders/activation.wgsl). */
import { asView, type BufferLike } from '../gpu/buffers.js';
import { ShapeError } from '../errors.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { launch1d, requireDims, requireElements } from './common.js';

const WG = 256;

/** Every binding of these kernels holds n elements. */
function run(rec: CommandRecorder, entryPoint: string, n: number, storage: Record<string, BufferLike>, constants = {}): void {
  requireDims(entryPoint, { n });
  for (const [name, b] of Object.entries(storage)) requireElements(entryPoint, name, b, n);
  rec.dispatch({ shader: 'activation', entryPoint, constants: { WG, ...constants }, uniforms: { n }, storage, workgroups: launch1d(rec.gpu, n, WG), label: `${entryPoint} ${n}` });
}

/**
 * A forward pass into `out`: f32, or a view of packed f16 values (mixed precision), which takes the
 * outputs rounded to f16, one invocation per word.
 */
function forward(rec: CommandRecorder, entryPoint: string, n: number, inputs: Record<string, BufferLike>, out: BufferLike, constants = {}): void {
  const half = asView(out).format;
  if (half && (half !== 'f16' || n % 2 !== 0)) throw new ShapeError(`${entryPoint}: a 16-bit output is f16 of an even length, got ${half} of ${n}`);
  requireDims(entryPoint, { n });
  for (const [name, b] of Object.entries(inputs)) requireElements(entryPoint, name, b, n);
  requireElements(entryPoint, 'out', out, half ? n / 2 : n);
  const unused = rec.gpu.placeholder('write');
  rec.dispatch({
    shader: 'activation', entryPoint, constants: { WG, ...constants, HALF_OUT: !!half }, uniforms: { n },
    storage: { ...inputs, out: half ? unused : out, outh: half ? out : unused },
    workgroups: launch1d(rec.gpu, half ? n / 2 : n, WG), label: `${entryPoint} ${n}${half ? ' (f16 out)' : ''}`,
  });
}

export type GeluKind = 'gelu_new' | 'gelu';

/** The gate's activation in a gated MLP: SiLU (SwiGLU) or a GELU (GeGLU; Gemma's is 'gelu_new', the tanh form). */
export type GateActivation = 'silu' | GeluKind;

const gateConstants = (gate: GateActivation = 'silu') => ({ GATE: { silu: 0, gelu_new: 1, gelu: 2 }[gate], GELU_TANH: gate === 'gelu_new' });

/** h = act(gate) * up, act silu unless `activation` says otherwise; h f32 or packed f16 (see forward). */
export function swigluForward(rec: CommandRecorder, a: { gate: BufferLike; up: BufferLike; h: BufferLike; n: number; activation?: GateActivation }): void {
  forward(rec, 'swiglu_forward', a.n, { a: a.gate, b: a.up }, a.h, gateConstants(a.activation));
}

/** dGate, dUp (overwritten) from dH. */
export function swigluBackward(
  rec: CommandRecorder,
  a: { gate: BufferLike; up: BufferLike; dH: BufferLike; dGate: BufferLike; dUp: BufferLike; n: number; activation?: GateActivation },
): void {
  run(rec, 'swiglu_backward', a.n, { a: a.gate, b: a.up, dout: a.dH, da: a.dGate, db: a.dUp }, gateConstants(a.activation));
}

export function geluForward(rec: CommandRecorder, a: { x: BufferLike; y: BufferLike; n: number; kind?: GeluKind }): void {
  forward(rec, 'gelu_forward', a.n, { a: a.x }, a.y, { GELU_TANH: (a.kind ?? 'gelu_new') === 'gelu_new' });
}

/** dX (overwritten) = dY * gelu'(x). */
export function geluBackward(rec: CommandRecorder, a: { x: BufferLike; dY: BufferLike; dX: BufferLike; n: number; kind?: GeluKind }): void {
  run(rec, 'gelu_backward', a.n, { a: a.x, dout: a.dY, da: a.dX }, { GELU_TANH: (a.kind ?? 'gelu_new') === 'gelu_new' });
}
