/**
 * f32 to packed 16-bit (shaders/cast.wgsl): the f16 working copies of f32 master weights under mixed
 * precision, rounded to nearest even bit for bit as the host's encoders round.
 */
import type { BufferLike } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { halfConstant, launch1d, requireDims, requireElements } from './common.js';
import type { WeightFormat } from './matmul.js';

const WG = 256;

export interface PackHalvesArgs {
  /** n f32 values. */
  x: BufferLike;
  /** ceil(n / 2) words, overwritten: element e in word e / 2, the low half first. */
  y: BufferLike;
  n: number;
  format: Exclude<WeightFormat, 'f32'>;
}

export function packHalves(rec: CommandRecorder, { x, y, n, format }: PackHalvesArgs): void {
  requireDims('packHalves', { n });
  requireElements('packHalves', 'x', x, n);
  requireElements('packHalves', 'y', y, Math.ceil(n / 2));
  rec.dispatch({
    shader: 'cast',
    entryPoint: 'pack_halves',
    constants: { WG, HALF: halfConstant('cast', format) },
    uniforms: { n },
    storage: { x, y },
    workgroups: launch1d(rec.gpu, Math.ceil(n / 2), WG),
    label: `pack ${format} ${n}`,
  });
}
