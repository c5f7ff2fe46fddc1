/**
 * GaLore's kernels (shaders/galore.wgsl): Gaussian starting vectors, in-order orthonormalization of r
 * vectors (the subspace iteration's QR), and Adam on a projected gradient writing its normalized update.
 * The projections themselves are matmuls (./matmul.ts).
 */
import type { BufferLike } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { launch1d, requireDims, requireElements } from './common.js';
import { matmul } from './matmul.js';

const WG = 256;

function galoreUniforms(u: Partial<Record<string, number>>): Record<string, number> {
  return { count: 0, length: 0, vstride: 0, estride: 0, n: 0, key: 0, beta1: 0, oneMinusBeta1: 0, beta2: 0, oneMinusBeta2: 0, eps: 0, stepSize: 0, gradScale: 0, ...u };
}

/** vectors[0..n) = N(0, 1) draws under `key` (shaders/lib/gaussian.wgsl; the host's copy: gaussianDraw). */
export function galoreGaussian(rec: CommandRecorder, a: { vectors: BufferLike; n: number; key: number }): void {
  requireDims('galore_gaussian', { n: a.n });
  requireElements('galore_gaussian', 'vectors', a.vectors, a.n);
  rec.dispatch({
    shader: 'galore',
    entryPoint: 'galore_gaussian',
    constants: { WG },
    uniforms: galoreUniforms({ n: a.n, key: a.key >>> 0 }),
    storage: { vectors: a.vectors },
    workgroups: launch1d(rec.gpu, a.n, WG),
    label: `galore_gaussian ${a.n}`,
  });
}

/**
 * Orthonormalizes `count` vectors of `length` elements in order (Gram-Schmidt, twice): vector k's element
 * i at k * vstride + i * estride, so the rows ([count, length], vstride = length, estride = 1) or the
 * columns ([length, count], vstride = 1, estride = count) of a matrix.
 */
export function galoreOrthonormalize(rec: CommandRecorder, a: { vectors: BufferLike; count: number; length: number; vstride: number; estride: number }): void {
  requireDims('galore_orthonormalize', { count: a.count, length: a.length, vstride: a.vstride, estride: a.estride });
  requireElements('galore_orthonormalize', 'vectors', a.vectors, (a.count - 1) * a.vstride + (a.length - 1) * a.estride + 1);
  rec.dispatch({
    shader: 'galore',
    entryPoint: 'galore_orthonormalize',
    constants: { WG: rec.gpu.tuning.reductionWorkgroupSize },
    uniforms: galoreUniforms({ count: a.count, length: a.length, vstride: a.vstride, estride: a.estride }),
    storage: { vectors: a.vectors },
    workgroups: [1, 1],
    label: `galore_orthonormalize ${a.count}x${a.length}`,
  });
}

export interface GaloreAdamArgs {
  /** The projected gradient (sums, scaled by gradScale and clip[0]). */
  grads: BufferLike;
  m: BufferLike;
  v: BufferLike;
  clip: BufferLike;
  /** Receives stepSize * m / (sqrt(v) + eps). */
  out: BufferLike;
  n: number;
  /** 1-based. */
  step: number;
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  gradScale: number;
}

export function galoreAdam(rec: CommandRecorder, a: GaloreAdamArgs): void {
  requireDims('galore_adam', { n: a.n, step: a.step });
  for (const [name, b] of [['grads', a.grads], ['m', a.m], ['v', a.v], ['out', a.out]] as const) requireElements('galore_adam', name, b, a.n);
  requireElements('galore_adam', 'clip', a.clip, 1);
  const stepSize = (a.lr * Math.sqrt(1 - a.beta2 ** a.step)) / (1 - a.beta1 ** a.step);
  rec.dispatch({
    shader: 'galore',
    entryPoint: 'galore_adam',
    constants: { WG },
    uniforms: galoreUniforms({ n: a.n, beta1: a.beta1, oneMinusBeta1: 1 - a.beta1, beta2: a.beta2, oneMinusBeta2: 1 - a.beta2, eps: a.eps, stepSize, gradScale: a.gradScale }),
    storage: { grads: a.grads, m: a.m, v: a.v, clip: a.clip, out: a.out },
    workgroups: launch1d(rec.gpu, a.n, WG),
    label: `galore_adam ${a.n}`,
  });
}

/** to[0..n) = from[0..n): a refreshed projection into place, unless clip[0] < 0 (a skipped step). */
export function galoreCommit(rec: CommandRecorder, a: { from: BufferLike; to: BufferLike; n: number; clip: BufferLike }): void {
  requireDims('galore_commit', { n: a.n });
  requireElements('galore_commit', 'from', a.from, a.n);
  requireElements('galore_commit', 'to', a.to, a.n);
  requireElements('galore_commit', 'clip', a.clip, 1);
  rec.dispatch({
    shader: 'galore', entryPoint: 'galore_commit', constants: { WG }, uniforms: galoreUniforms({ n: a.n }),
    storage: { vectors: a.from, out: a.to, clip: a.clip }, workgroups: launch1d(rec.gpu, a.n, WG), label: `galore_commit ${a.n}`,
  });
}

/** weight[0..n) *= factor (decoupled weight decay), unless clip[0] < 0 (a skipped step). */
export function galoreDecay(rec: CommandRecorder, a: { weight: BufferLike; n: number; factor: number; clip: BufferLike }): void {
  requireDims('galore_decay', { n: a.n });
  requireElements('galore_decay', 'weight', a.weight, a.n);
  requireElements('galore_decay', 'clip', a.clip, 1);
  rec.dispatch({
    shader: 'galore', entryPoint: 'galore_decay', constants: { WG }, uniforms: galoreUniforms({ n: a.n, stepSize: a.factor }),
    storage: { out: a.weight, clip: a.clip }, workgroups: launch1d(rec.gpu, a.n, WG), label: `galore_decay ${a.n}`,
  });
}

export interface GaloreSubspaceArgs {
  /** The gradient G [rows, cols] (row-major). */
  g: BufferLike;
  rows: number;
  cols: number;
  rank: number;
  /**
   * Receives the basis: with `right` (rows >= cols, GaLore's 'std' choice) the top right singular vectors
   * as the rows of P [rank, cols]; otherwise the top left ones as the columns of P [rows, rank].
   */
  p: BufferLike;
  right: boolean;
  /** Scratch for G P^T [rows, rank] (right) or P^T G [rank, cols] (left). */
  scratch: BufferLike;
  iterations: number;
  /** Key of the Gaussian start. */
  key: number;
}

/**
 * The top-`rank` singular subspace of G by orthogonal (subspace) iteration from a Gaussian start: P <- orth(G^T G P)
 * for right vectors, orth(G G^T P) for left ones, each a pair of matmuls and an in-order Gram-Schmidt,
 * whose vectors converge to the singular vectors in order (the first fastest) and whose span converges
 * at the rate of the gap after the rank.
 */
export function galoreSubspace(rec: CommandRecorder, a: GaloreSubspaceArgs): void {
  const { g, rows: m, cols: n, rank: r, p, scratch } = a;
  requireDims('galore_subspace', { m, n, r, iterations: a.iterations });
  requireElements('galore_subspace', 'g', g, m * n);
  requireElements('galore_subspace', 'p', p, r * (a.right ? n : m));
  requireElements('galore_subspace', 'scratch', scratch, r * (a.right ? m : n));
  const orth = () => galoreOrthonormalize(rec, a.right ? { vectors: p, count: r, length: n, vstride: n, estride: 1 } : { vectors: p, count: r, length: m, vstride: 1, estride: r });
  galoreGaussian(rec, { vectors: p, n: r * (a.right ? n : m), key: a.key });
  orth();
  for (let it = 0; it < a.iterations; it++) {
    if (a.right) {
      matmul(rec, { a: g, b: p, c: scratch, M: m, N: r, K: n, transB: true }); // Y = G P^T  [m, r]
      matmul(rec, { a: scratch, b: g, c: p, M: r, N: n, K: m, transA: true }); // P = Y^T G  [r, n]
    } else {
      matmul(rec, { a: p, b: g, c: scratch, M: r, N: n, K: m, transA: true }); // Y = P^T G  [r, n]
      matmul(rec, { a: g, b: scratch, c: p, M: m, N: r, K: n, transB: true }); // P = G Y^T  [m, r]
    }
    orth();
  }
}
