/**
 * Batched f32 matmul with optional transposes, scale and accumulation, and epilogue terms fused into the
 * store: a broadcast bias and a low-rank product (a LoRA path) with optional dropout (shaders/matmul.wgsl).
 */
import { ShapeError } from '../errors.js';
import type { BufferLike, TensorView } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { dropoutThreshold } from '../util/random.js';
import { requireDims, requireElements, shaderConstant } from './common.js';

export type MatmulVariant = 'tiled' | 'direct';

export interface MatmulArgs {
  /** op(A) is [M, K]: A stored [M, K], or [K, M] when transA. */
  a: BufferLike;
  /** How A is stored: f32 (default), or bf16 / f16 packed two per u32 (16-bit activations). */
  aFormat?: WeightFormat;
  /** op(B) is [K, N]: B stored [K, N], or [N, K] when transB. */
  b: BufferLike;
  /** How B is stored: f32 (default), or bf16 / f16 packed two per u32 (a frozen 16-bit weight). */
  bFormat?: WeightFormat;
  /** C [M, N], overwritten, or accumulated into when `accumulate`. */
  c: BufferLike;
  M: number;
  N: number;
  K: number;
  batch?: number;
  transA?: boolean;
  transB?: boolean;
  /** C = alpha * op(A) op(B) (+ C). Default 1. */
  alpha?: number;
  accumulate?: boolean;
  /** Elements between consecutive batch entries; 0 broadcasts one matrix to the whole batch. */
  strideA?: number;
  strideB?: number;
  strideC?: number;
  /** Default: the device's tuning (see GpuTuning and bench:kernels). */
  variant?: MatmulVariant;
  /** [N], added to every row of C (in every batch entry). */
  bias?: BufferLike;
  /** A rank-R term added to C (batch 1 only). */
  lowRank?: LowRankTerm;
}

/** Storage formats of a matmul's operands (and of linear weights). */
export type WeightFormat = 'f32' | 'bf16' | 'f16';

/** C += scale * mask * (u @ op(v)): u [M, rank] row-major; op(v) [rank, N], stored [rank, N] or [N, rank] with transV. */
export interface LowRankTerm {
  u: BufferLike;
  v: BufferLike;
  rank: number;
  transV?: boolean;
  /** Default 1. */
  scale?: number;
  /** Dropout on the term: element (m, n) keeps when elementwise's dropout mask under `seed` keeps index m * N + n; kept values are scaled by 1 / (1 - p). */
  dropout?: { p: number; seed: number };
}

export function matmul(rec: CommandRecorder, args: MatmulArgs): void {
  const { M, N, K } = args;
  const batch = args.batch ?? 1;
  const strideA = args.strideA ?? M * K;
  const strideB = args.strideB ?? K * N;
  const strideC = args.strideC ?? M * N;
  requireDims('matmul', { M, N, K, batch, strideA, strideB, strideC });
  const aFormat = operandFormat('A', args.a, args.aFormat);
  const bFormat = operandFormat('B', args.b, args.bFormat);
  // 16-bit operands hold two elements per 4-byte word.
  const words = (format: WeightFormat, n: number) => (format === 'f32' ? n : Math.ceil(n / 2));
  requireElements('matmul', 'A', args.a, words(aFormat, (batch - 1) * strideA + M * K));
  requireElements('matmul', 'B', args.b, words(bFormat, (batch - 1) * strideB + K * N));
  requireElements('matmul', 'C', args.c, (batch - 1) * strideC + M * N);
  if (args.bias) requireElements('matmul', 'bias', args.bias, N);
  const lr = args.lowRank;
  let dropoutScale = 1;
  if (lr) {
    requireDims('matmul', { rank: lr.rank });
    if (batch !== 1) throw new ShapeError('matmul: a low-rank term needs batch 1');
    requireElements('matmul', 'lowRank.u', lr.u, M * lr.rank);
    requireElements('matmul', 'lowRank.v', lr.v, lr.rank * N);
    if (lr.dropout) {
      if (!(lr.dropout.p >= 0 && lr.dropout.p < 1)) throw new RangeError(`matmul: lowRank.dropout.p must be in [0, 1), got ${lr.dropout.p}`);
      dropoutScale = 1 / (1 - lr.dropout.p);
    }
  }
  const variant = args.variant ?? rec.gpu.tuning.matmulVariant;
  // C tile per workgroup, as the shader declares it: BM x BN (tiled), DWG_Y x DWG_X invocations of TM x TN (direct).
  const [dx, dy] = directShape(N);
  const [tileM, tileN] = variant === 'tiled' ? [shaderConstant('matmul', 'BM'), shaderConstant('matmul', 'BN')] : [dy * shaderConstant('matmul', 'TM'), dx * shaderConstant('matmul', 'TN')];
  const unused = rec.gpu.placeholder();
  rec.dispatch({
    shader: 'matmul',
    entryPoint: variant === 'tiled' ? 'matmul_tiled' : 'matmul_direct',
    constants: {
      TRANS_A: !!args.transA, TRANS_B: !!args.transB, ACCUMULATE: !!args.accumulate,
      ...(variant === 'direct' ? { DWG_X: dx, DWG_Y: dy } : {}),
      BIAS: !!args.bias, LOW_RANK: !!lr, TRANS_V: !!lr?.transV, DROPOUT: !!lr?.dropout, A_FORMAT: shaderConstant('matmul', `FORMAT_${aFormat.toUpperCase()}`), B_FORMAT: shaderConstant('matmul', `FORMAT_${bFormat.toUpperCase()}`),
    },
    uniforms: {
      M, N, K, batch, strideA, strideB, strideC, alpha: args.alpha ?? 1,
      R: lr?.rank ?? 0, beta: (lr?.scale ?? 1) * dropoutScale, seed: lr?.dropout ? lr.dropout.seed >>> 0 : 0,
      threshold: lr?.dropout ? dropoutThreshold(lr.dropout.p) : 0,
    },
    storage: {
      A: aFormat === 'f32' ? args.a : unused, Ah: aFormat === 'f32' ? unused : args.a,
      B: bFormat === 'f32' ? args.b : unused, Bh: bFormat === 'f32' ? unused : args.b, C: args.c,
      bias: args.bias ?? unused, U: lr?.u ?? unused, V: lr?.v ?? unused,
    },
    workgroups: [Math.ceil(N / tileN), Math.ceil(M / tileM), batch],
    label: `matmul ${batch}x${M}x${N}x${K}`,
  });
}

/**
 * The direct kernel's workgroup (x, y) of 64 invocations, each owning 4 columns: 2 x 32 for products at
 * most 8 columns wide (a LoRA path's x A^T), where 8 x 8 would leave most of each SIMD group idle
 * (SwiftShader ran them 2 to 3 times faster so); 8 x 8 otherwise. Two shapes, so two pipelines at most.
 */
function directShape(N: number): [number, number] {
  return N <= 8 ? [2, 32] : [8, 8];
}

/** An operand's storage format: as given, or as its view says (f16 activations); the two must agree. */
export function operandFormat(name: string, b: BufferLike, given: WeightFormat | undefined): WeightFormat {
  const held = (b as TensorView).format;
  if (given && held && given !== held) throw new ShapeError(`matmul: ${name} is given as ${given}, and its view holds ${held} values`);
  return given ?? held ?? 'f32';
}

/** C[M, N] += the low-rank term alone, as its own pass (what the fused epilogue saves). */
export function addLowRank(rec: CommandRecorder, c: BufferLike, M: number, N: number, term: LowRankTerm, variant?: MatmulVariant): void {
  addTerms(rec, c, M, N, { lowRank: term }, variant);
}

/** C[M, N] += a bias [N] and a low-rank term, the matmul's epilogue as its own pass (nothing when neither). */
export function addTerms(rec: CommandRecorder, c: BufferLike, M: number, N: number, terms: { bias?: BufferLike; lowRank?: LowRankTerm }, variant?: MatmulVariant): void {
  if (!terms.bias && !terms.lowRank) return;
  const none = rec.gpu.placeholder();
  matmul(rec, { a: none, b: none, c, M, N, K: 0, accumulate: true, ...terms, variant });
}

/** Floating-point operations of one matmul call (multiply-adds count 2). */
export function matmulFlops(M: number, N: number, K: number, batch = 1): number {
  return 2 * M * N * K * batch;
}
