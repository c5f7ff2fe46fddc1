/** Batched f32 matmul with optional transposes, scale and accumulation (shaders/matmul.wgsl). */
import type { BufferLike } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { f32, u32 } from '../gpu/recorder.js';
import { requireDims, requireElements } from './common.js';

export type MatmulVariant = 'tiled' | 'direct';

export interface MatmulArgs {
  /** op(A) is [M, K]: A stored [M, K], or [K, M] when transA. */
  a: BufferLike;
  /** op(B) is [K, N]: B stored [K, N], or [N, K] when transB. */
  b: BufferLike;
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
}

export function matmul(rec: CommandRecorder, args: MatmulArgs): void {
  const { M, N, K } = args;
  const batch = args.batch ?? 1;
  const strideA = args.strideA ?? M * K;
  const strideB = args.strideB ?? K * N;
  const strideC = args.strideC ?? M * N;
  requireDims('matmul', { M, N, K, batch, strideA, strideB, strideC });
  requireElements('matmul', 'A', args.a, (batch - 1) * strideA + M * K);
  requireElements('matmul', 'B', args.b, (batch - 1) * strideB + K * N);
  requireElements('matmul', 'C', args.c, (batch - 1) * strideC + M * N);
  const variant = args.variant ?? rec.gpu.tuning.matmulVariant;
  const tile = variant === 'tiled' ? 64 : 32;
  rec.dispatch({
    shader: 'matmul',
    entryPoint: variant === 'tiled' ? 'matmul_tiled' : 'matmul_direct',
    constants: { TRANS_A: !!args.transA, TRANS_B: !!args.transB, ACCUMULATE: !!args.accumulate },
    uniforms: [u32(M), u32(N), u32(K), u32(batch), u32(strideA), u32(strideB), u32(strideC), f32(args.alpha ?? 1)],
    storage: [args.a, args.b, args.c],
    workgroups: [Math.ceil(N / tile), Math.ceil(M / tile), batch],
    label: `matmul ${batch}x${M}x${N}x${K}`,
  });
}

/** Floating-point operations of one matmul call (multiply-adds count 2). */
export function matmulFlops(M: number, N: number, K: number, batch = 1): number {
  return 2 * M * N * K * batch;
}
