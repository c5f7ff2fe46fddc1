/**
 * What every packed 4-bit weight type (int4.ts, nf4.ts) shares, in shaders/lib/q4_matmul.wgsl: the two
 * products a frozen linear needs, y = x @ dequant(W)^T (forward) and dx = dy @ dequant(W) (input
 * gradient), neither of which materializes the f32 weight, and dequantization to f32.
 */
import type { BufferLike } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { launch1d, requireDims, requireElements, shaderConstant } from './common.js';
import { int4Arrays, type Int4Weight } from './int4.js';
import type { MatmulVariant } from './matmul.js';
import { nf4Arrays, nf4Constants, nf4GroupSize, type Nf4Weight } from './nf4.js';

export type Q4Weight = Int4Weight | Nf4Weight;

/** The shader, group size and packed arrays of a weight, each checked against its layout. */
function bind(kernel: string, w: Q4Weight): { shader: string; arrays: Record<string, BufferLike>; N: number; K: number; wordsPerRow: number; uniforms: Record<string, number>; constants: Record<string, boolean | number> } {
  const arrays = w.format === 'int4' ? int4Arrays(kernel, w) : nf4Arrays(kernel, w);
  const l = w.layout;
  const uniforms: Record<string, number> = w.format === 'int4' ? { N: l.N, K: l.K, G: w.layout.groupSize, ZB: w.layout.zeroBias } : { N: l.N, K: l.K, G: nf4GroupSize(w.layout) };
  return { shader: w.format, arrays, N: l.N, K: l.K, wordsPerRow: l.wordsPerRow, uniforms, constants: w.format === 'nf4' ? nf4Constants(w.layout) : {} };
}

/** Write dequant(W) as f32 [N, K] into `out`. */
export function dequantizeQ4(rec: CommandRecorder, { weight, out }: { weight: Q4Weight; out: BufferLike }): void {
  const b = bind('dequantize', weight);
  requireElements('dequantize', 'out', out, b.N * b.K);
  const WG = 64;
  rec.dispatch({
    shader: b.shader,
    entryPoint: 'dequantize',
    constants: { WG, ...b.constants },
    uniforms: { M: 0, ...b.uniforms },
    storage: { ...b.arrays, Y: out },
    workgroups: launch1d(rec.gpu, b.N * b.wordsPerRow, WG),
    label: `${b.shader} dequantize ${b.N}x${b.K}`,
  });
}

interface ProductOptions {
  weight: Q4Weight;
  M: number;
  /** Add into the output instead of overwriting it. */
  accumulate?: boolean;
  variant?: MatmulVariant;
}

/** y [M, N] (=, or += with accumulate) x [M, K] @ dequant(W)^T. */
export function matmulQ4(rec: CommandRecorder, { x, y, ...o }: ProductOptions & { x: BufferLike; y: BufferLike }): void {
  product(rec, 'forward', x, y, o);
}

/** dx [M, K] (=, or += with accumulate) dy [M, N] @ dequant(W): the input gradient of y = x @ dequant(W)^T. */
export function matmulQ4InputGrad(rec: CommandRecorder, { dy, dx, ...o }: ProductOptions & { dy: BufferLike; dx: BufferLike }): void {
  product(rec, 'input-grad', dy, dx, o);
}

function product(rec: CommandRecorder, kind: 'forward' | 'input-grad', x: BufferLike, y: BufferLike, { weight, M, accumulate, variant }: ProductOptions): void {
  const kernel = kind === 'forward' ? `matmul ${weight.format}` : `matmul ${weight.format} input grad`;
  requireDims(kernel, { M });
  const b = bind(kernel, weight);
  const [inDim, outDim] = kind === 'forward' ? [b.K, b.N] : [b.N, b.K];
  requireElements(kernel, kind === 'forward' ? 'x' : 'dy', x, M * inDim);
  requireElements(kernel, kind === 'forward' ? 'y' : 'dx', y, M * outDim);
  // Tiles of BM rows waste most of their work when M is small (decoding), so small M goes direct.
  const v = variant ?? (rec.gpu.tuning.matmulVariant === 'direct' || M < 16 ? 'direct' : 'tiled');
  const rows = M < 4 ? 1 : 4;
  const c = (name: string) => shaderConstant(b.shader, name);
  // Direct invocations own four output columns (forward) or one packed word, eight (input gradient).
  const perInvocation = kind === 'forward' ? 4 : 8;
  rec.dispatch({
    shader: b.shader,
    entryPoint: `matmul_q4${kind === 'forward' ? '' : '_t'}${v === 'tiled' ? '' : '_direct'}`,
    constants: { ...b.constants, ...(v === 'tiled' ? { ACCUMULATE: !!accumulate } : { ACCUMULATE: !!accumulate, ROWS: rows }) },
    uniforms: { M, ...b.uniforms },
    storage: { ...b.arrays, Y: y, X: x },
    workgroups: v === 'tiled' ? [Math.ceil(outDim / c('BN')), Math.ceil(M / c('BM'))] : [Math.ceil(outDim / (perInvocation * c('DX'))), Math.ceil(M / (rows * c('DY')))],
    label: `${kernel} ${v} ${M}x${b.N}x${b.K}`,
  });
}
