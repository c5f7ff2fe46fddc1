/** float64 reference for shaders/matmul.wgsl. */
export interface MatmulRefArgs {
  a: ArrayLike<number>;
  b: ArrayLike<number>;
  /** Initial C (read when accumulate). */
  c?: ArrayLike<number>;
  M: number;
  N: number;
  K: number;
  batch?: number;
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  accumulate?: boolean;
  strideA?: number;
  strideB?: number;
  strideC?: number;
}

// out (batch, M, N) = alpha * op(A) (M, K) @ op(B) (K, N) (+ C)
export function matmulRef(r: MatmulRefArgs): Float64Array {
  const { M, N, K, a, b } = r;
  const batch = r.batch ?? 1;
  const sA = r.strideA ?? M * K;
  const sB = r.strideB ?? K * N;
  const sC = r.strideC ?? M * N;
  const alpha = r.alpha ?? 1;
  const out = new Float64Array((batch - 1) * sC + M * N);
  if (r.c) for (let i = 0; i < out.length; i++) out[i] = r.c[i];
  for (let z = 0; z < batch; z++) {
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let acc = 0;
        for (let k = 0; k < K; k++) {
          const av = r.transA ? a[z * sA + k * M + m] : a[z * sA + m * K + k];
          const bv = r.transB ? b[z * sB + n * K + k] : b[z * sB + k * N + n];
          acc += av * bv;
        }
        const at = z * sC + m * N + n;
        out[at] = alpha * acc + (r.accumulate ? out[at] : 0);
      }
    }
  }
  return out;
}
