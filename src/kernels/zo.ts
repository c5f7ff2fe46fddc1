/**
 * Zeroth-order training's kernels (shaders/zo.wgsl): perturb parameters along a random direction z that is
 * regenerated from (seed, step, direction, tensor, element) and never stored, sum a pass's token losses,
 * and apply the update θ -= lr (Σ_j c_j z_j + wd θ). `zoGaussian` is the host's copy of the generator.
 */
import type { BufferLike } from '../gpu/buffers.js';
import type { Gpu } from '../gpu/gpu.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { hash32 } from '../util/random.js';
import { launch1d, requireDims, requireElements } from './common.js';

const WG = 256;
/** A segment's tensor index for elements that are not trained (gaps, frozen tensors): left alone. */
export const ZO_SKIP = 0xffffffff;

/** Where the elements of a run belong: from `start` on, tensor `tensor` (or ZO_SKIP), decayed or not. */
export interface ZoSegment {
  start: number;
  tensor: number;
  decay: boolean;
}

/** A contiguous range of a parameter buffer, its segments uploaded once (vec4u each). */
export interface ZoRun {
  params: BufferLike;
  n: number;
  segments: GPUBuffer;
  segmentCount: number;
}

/** Uploads a run's segments (sorted by start, the first at 0). */
export function zoRun(gpu: Gpu, params: BufferLike, n: number, segments: ZoSegment[]): ZoRun {
  requireDims('zo', { n });
  requireElements('zo', 'params', params, n);
  if (!segments.length || segments[0].start !== 0) throw new Error('zo: a run\'s first segment starts at 0');
  const words = new Uint32Array(segments.length * 4);
  segments.forEach((s, k) => words.set([s.start, s.tensor >>> 0, s.decay ? 1 : 0, 0], 4 * k));
  const buffer = gpu.createBuffer(words.byteLength, undefined, 'zo segments');
  gpu.write(buffer, words);
  return { params, n, segments: buffer, segmentCount: segments.length };
}

/** Workgroups of a pass over n elements: a pair per iteration, `elementsPerInvocation` iterations per invocation (the device's tuning). */
function pairLaunch(rec: CommandRecorder, n: number): [number, number] {
  return launch1d(rec.gpu, Math.ceil(Math.ceil(n / 2) / rec.gpu.tuning.elementsPerInvocation), WG);
}

interface Direction {
  seed: number;
  step: number;
}

/** Every field of ZoParams (an entry point ignores those it does not read). */
function zoUniforms(u: Partial<Record<'n' | 'segments' | 'seed' | 'step' | 'direction' | 'directions' | 'slot' | 'scale' | 'lr' | 'weight_decay' | 'coef' | 'restore' | 'skip', number>>): Record<string, number> {
  return { n: 0, segments: 0, seed: 0, step: 0, direction: 0, directions: 0, slot: 0, scale: 0, lr: 0, weight_decay: 0, coef: 0, restore: 0, skip: 0, ...u };
}

/** params += scale * z_direction over the run. */
export function zoPerturb(rec: CommandRecorder, run: ZoRun, d: Direction & { direction: number; scale: number }): void {
  rec.dispatch({
    shader: 'zo',
    entryPoint: 'zo_perturb',
    constants: { WG, PER: rec.gpu.tuning.elementsPerInvocation },
    uniforms: zoUniforms({ n: run.n, segments: run.segmentCount, seed: d.seed >>> 0, step: d.step >>> 0, direction: d.direction, scale: d.scale }),
    storage: { params: run.params, segments: run.segments },
    workgroups: pairLaunch(rec, run.n),
    label: `zo_perturb ${run.n}`,
  });
}

/**
 * params -= lr * (Σ_j c_j z_j + weightDecay * params) over the run, c_j = (acc[2j] - acc[2j+1]) * coef:
 * acc holds each direction's summed losses at +ε (even slots) and -ε (odd slots). With `restore`, params
 * first take restore * z of the last direction (its restoring step, fused: one pass fewer). With
 * `skipNonFinite`, a c_j that is not finite (an overflowed loss) leaves the update out: only the restore.
 */
export function zoUpdate(rec: CommandRecorder, run: ZoRun, d: Direction & { directions: number; acc: BufferLike; coef: number; lr: number; weightDecay: number; restore?: number; skipNonFinite?: boolean }): void {
  requireElements('zo_update', 'acc', d.acc, 2 * d.directions);
  rec.dispatch({
    shader: 'zo',
    entryPoint: 'zo_update',
    constants: { WG, PER: rec.gpu.tuning.elementsPerInvocation },
    uniforms: zoUniforms({ n: run.n, segments: run.segmentCount, seed: d.seed >>> 0, step: d.step >>> 0, directions: d.directions, coef: d.coef, lr: d.lr, weight_decay: d.weightDecay, restore: d.restore ?? 0, skip: d.skipNonFinite ? 1 : 0 }),
    storage: { params: run.params, segments: run.segments, acc_in: d.acc },
    workgroups: pairLaunch(rec, run.n),
    label: `zo_update ${run.n}`,
  });
}

/** sums[slot] = Σ losses[0..n); acc[slot] += the same. */
export function zoLossSum(rec: CommandRecorder, a: { losses: BufferLike; n: number; slot: number; sums: BufferLike; acc: BufferLike }): void {
  requireDims('zo_loss_sum', { n: a.n, slot: a.slot });
  requireElements('zo_loss_sum', 'losses', a.losses, a.n);
  requireElements('zo_loss_sum', 'sums', a.sums, a.slot + 1);
  requireElements('zo_loss_sum', 'acc', a.acc, a.slot + 1);
  const wg = rec.gpu.tuning.reductionWorkgroupSize;
  rec.dispatch({
    shader: 'zo',
    entryPoint: 'zo_loss_sum',
    constants: { WG: wg },
    uniforms: zoUniforms({ n: a.n, slot: a.slot }),
    storage: { losses: a.losses, sums: a.sums, acc: a.acc },
    workgroups: [1, 1],
    label: `zo_loss_sum ${a.n}`,
  });
}

/** The key of direction j of an optimizer step (shaders/zo.wgsl direction_key). */
export function zoDirectionKey(seed: number, step: number, j: number): number {
  return hash32(hash32((hash32(seed >>> 0) ^ step) >>> 0) ^ hash32((j + 0x9e3779b9) >>> 0));
}

/** The direction's draw for element e of tensor t (shaders/zo.wgsl tensor_key and draws, lib/gaussian.wgsl), in float64. */
export function zoGaussian(key: number, t: number, e: number): number {
  return gaussianDraw(hash32((key ^ hash32((t ^ 0x632be5ab) >>> 0)) >>> 0), e);
}

/** Box-Muller on the hash's uniforms for the pair e / 2 (shaders/lib/gaussian.wgsl gaussian_pair). */
export function gaussianDraw(key: number, e: number): number {
  const pair = e >>> 1;
  const h1 = hash32((hash32((2 * pair) >>> 0) ^ key) >>> 0);
  const h2 = hash32((hash32((2 * pair + 1) >>> 0) ^ key) >>> 0);
  const u1 = ((h1 >>> 8) + 0.5) / 16777216;
  const radius = Math.sqrt(-2 * Math.log(u1));
  const angle = ((h2 >>> 30) + ((h2 >>> 8) & 0x3fffff) / 4194304 - 0.5) * (Math.PI / 2);
  return radius * (e & 1 ? Math.sin(angle) : Math.cos(angle));
}
