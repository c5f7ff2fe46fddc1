/** Float64 references for subspace methods: symmetric eigendecomposition (cyclic Jacobi) and singular subspaces. */

/** Eigenvalues (descending) and eigenvectors (columns of `vectors`, n x n row-major) of a symmetric matrix. */
export function symmetricEigen(a: Float64Array, n: number): { values: number[]; vectors: Float64Array } {
  const A = Float64Array.from(a);
  const V = new Float64Array(n * n);
  for (let i = 0; i < n; i++) V[i * n + i] = 1;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) off += A[i * n + j] ** 2;
    if (off < 1e-30) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = A[p * n + q];
        if (Math.abs(apq) < 1e-300) continue;
        const theta = (A[q * n + q] - A[p * n + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          const akp = A[k * n + p];
          const akq = A[k * n + q];
          A[k * n + p] = c * akp - s * akq;
          A[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = A[p * n + k];
          const aqk = A[q * n + k];
          A[p * n + k] = c * apk - s * aqk;
          A[q * n + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = V[k * n + p];
          const vkq = V[k * n + q];
          V[k * n + p] = c * vkp - s * vkq;
          V[k * n + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => A[y * n + y] - A[x * n + x]);
  const vectors = new Float64Array(n * n);
  order.forEach((src, dst) => {
    for (let k = 0; k < n; k++) vectors[k * n + dst] = V[k * n + src];
  });
  return { values: order.map((i) => A[i * n + i]), vectors };
}

/**
 * The top-r right (or left) singular vectors of G [m, n] as r arrays, from the eigenvectors of G^T G (or
 * G G^T), and all singular values descending.
 */
export function singularSubspace(g: ArrayLike<number>, m: number, n: number, r: number, side: 'right' | 'left'): { vectors: Float64Array[]; values: number[] } {
  const d = side === 'right' ? n : m;
  const gram = new Float64Array(d * d);
  for (let i = 0; i < d; i++) {
    for (let j = i; j < d; j++) {
      let s = 0;
      if (side === 'right') for (let k = 0; k < m; k++) s += g[k * n + i] * g[k * n + j];
      else for (let k = 0; k < n; k++) s += g[i * n + k] * g[j * n + k];
      gram[i * d + j] = gram[j * d + i] = s;
    }
  }
  const { values, vectors } = symmetricEigen(gram, d);
  return {
    vectors: Array.from({ length: r }, (_, c) => Float64Array.from({ length: d }, (_, k) => vectors[k * d + c])),
    values: values.map((v) => Math.sqrt(Math.max(v, 0))),
  };
}

/** Cosine of the largest principal angle between the spans of two orthonormal sets of vectors. */
export function subspaceCosine(a: ArrayLike<number>[], b: ArrayLike<number>[]): number {
  // The smallest singular value of A^T B: square root of the smallest eigenvalue of (A^T B)^T (A^T B).
  const r = a.length;
  const c = new Float64Array(r * r);
  for (let i = 0; i < r; i++) for (let j = 0; j < r; j++) {
    let s = 0;
    for (let k = 0; k < a[i].length; k++) s += a[i][k] * b[j][k];
    c[i * r + j] = s;
  }
  const ctc = new Float64Array(r * r);
  for (let i = 0; i < r; i++) for (let j = 0; j < r; j++) {
    let s = 0;
    for (let k = 0; k < r; k++) s += c[k * r + i] * c[k * r + j];
    ctc[i * r + j] = s;
  }
  const { values } = symmetricEigen(ctc, r);
  return Math.sqrt(Math.max(0, values[r - 1]));
}
