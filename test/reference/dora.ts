/** Float64 references of shaders/dora.wgsl, computed from the full matrices rather than the kernels' expansion. */

/** W + s B A, W [N, K], B [N, R], A [R, K]. */
export function directionRef(W: ArrayLike<number>, A: ArrayLike<number>, B: ArrayLike<number>, s: number, N: number, K: number, R: number): Float64Array {
  const out = Float64Array.from(W);
  for (let j = 0; j < N; j++) for (let i = 0; i < K; i++) for (let r = 0; r < R; r++) out[j * K + i] += s * B[j * R + r] * A[r * K + i];
  return out;
}

/** The norm of each row of x [N, K]. */
export function rowNormsRef(x: ArrayLike<number>, N: number, K: number): Float64Array {
  return Float64Array.from({ length: N }, (_, j) => {
    let s = 0;
    for (let i = 0; i < K; i++) s += x[j * K + i] ** 2;
    return Math.sqrt(s);
  });
}
