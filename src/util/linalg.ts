/**
 * Small dense linear algebra in float64 on the host, for initializations that decompose a weight once
 * (PiSSA's singular vectors, OLoRA's QR): Householder QR with LAPACK's sign convention (geqrf), the
 * symmetric eigendecomposition by cyclic Jacobi, the top singular triplets exactly (through the Gram
 * matrix of the smaller side) or by randomized subspace iteration as torch.svd_lowrank computes them.
 * Matrices are row-major Float64Arrays.
 */

/**
 * Thin QR of a [m, n] (k = min(m, n)): Q [m, k] with orthonormal columns and R [k, n] upper triangular,
 * each reflector chosen as LAPACK's dlarfg does (R's diagonal of the sign opposite to the column's head).
 */
export function householderQr(a: ArrayLike<number>, m: number, n: number): { Q: Float64Array; R: Float64Array } {
  const k = Math.min(m, n);
  const A = Float64Array.from(a);
  const vs: Float64Array[] = [];
  const taus: number[] = [];
  for (let j = 0; j < k; j++) {
    let norm2 = 0;
    for (let i = j + 1; i < m; i++) norm2 += A[i * n + j] ** 2;
    const alpha = A[j * n + j];
    const v = new Float64Array(m - j);
    if (norm2 === 0) {
      // Nothing below the diagonal: H = I (tau 0), as dlarfg.
      vs.push(v);
      taus.push(0);
      continue;
    }
    const beta = -Math.sign(alpha || 1) * Math.hypot(alpha, Math.sqrt(norm2));
    const tau = (beta - alpha) / beta;
    v[0] = 1;
    for (let i = j + 1; i < m; i++) v[i - j] = A[i * n + j] / (alpha - beta);
    // A[j:, j:] -= tau v (v^T A[j:, j:])
    for (let c = j; c < n; c++) {
      let dot = 0;
      for (let i = j; i < m; i++) dot += v[i - j] * A[i * n + c];
      dot *= tau;
      for (let i = j; i < m; i++) A[i * n + c] -= dot * v[i - j];
    }
    vs.push(v);
    taus.push(tau);
  }
  const R = new Float64Array(k * n);
  for (let i = 0; i < k; i++) for (let c = i; c < n; c++) R[i * n + c] = A[i * n + c];
  // Q = H_0 H_1 ... H_{k-1} applied to the first k columns of the identity, last reflector first.
  const Q = new Float64Array(m * k);
  for (let i = 0; i < k; i++) Q[i * k + i] = 1;
  for (let j = k - 1; j >= 0; j--) {
    const v = vs[j];
    const tau = taus[j];
    if (tau === 0) continue;
    for (let c = 0; c < k; c++) {
      let dot = 0;
      for (let i = j; i < m; i++) dot += v[i - j] * Q[i * k + c];
      dot *= tau;
      for (let i = j; i < m; i++) Q[i * k + c] -= dot * v[i - j];
    }
  }
  return { Q, R };
}

/** Eigenvalues (descending) and eigenvectors (the columns of `vectors`, n x n) of a symmetric matrix. */
export function symmetricEigen(a: ArrayLike<number>, n: number): { values: Float64Array; vectors: Float64Array } {
  const A = Float64Array.from(a);
  const V = new Float64Array(n * n);
  for (let i = 0; i < n; i++) V[i * n + i] = 1;
  let scale = 0;
  for (let i = 0; i < n * n; i++) scale += A[i] * A[i];
  for (let sweep = 0; sweep < 60; sweep++) {
    let off = 0;
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) off += A[i * n + j] ** 2;
    if (off <= 1e-30 * scale) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = A[p * n + q];
        if (apq === 0) continue;
        const theta = (A[q * n + q] - A[p * n + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let r = 0; r < n; r++) {
          const arp = A[r * n + p];
          const arq = A[r * n + q];
          A[r * n + p] = c * arp - s * arq;
          A[r * n + q] = s * arp + c * arq;
        }
        for (let r = 0; r < n; r++) {
          const apr = A[p * n + r];
          const aqr = A[q * n + r];
          A[p * n + r] = c * apr - s * aqr;
          A[q * n + r] = s * apr + c * aqr;
        }
        for (let r = 0; r < n; r++) {
          const vrp = V[r * n + p];
          const vrq = V[r * n + q];
          V[r * n + p] = c * vrp - s * vrq;
          V[r * n + q] = s * vrp + c * vrq;
        }
      }
    }
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => A[y * n + y] - A[x * n + x]);
  const values = Float64Array.from(order, (i) => A[i * n + i]);
  const vectors = new Float64Array(n * n);
  order.forEach((src, dst) => {
    for (let r = 0; r < n; r++) vectors[r * n + dst] = V[r * n + src];
  });
  return { values, vectors };
}

/** The r largest singular values of a [m, n] with their vectors: a ≈ U diag(S) Vt, U [m, r], Vt [r, n]. */
export interface SingularTriplets {
  U: Float64Array;
  S: Float64Array;
  Vt: Float64Array;
}

/** c [m, n] = a [m, k] b [k, n], with either operand read transposed. */
function mm(a: ArrayLike<number>, b: ArrayLike<number>, m: number, k: number, n: number, ta = false, tb = false): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < k; p++) {
      const x = ta ? a[p * m + i] : a[i * k + p];
      if (x === 0) continue;
      for (let j = 0; j < n; j++) c[i * n + j] += x * (tb ? b[j * k + p] : b[p * n + j]);
    }
  }
  return c;
}

/**
 * Singular triplets from the eigendecomposition of the Gram matrix of the smaller side: with n <= m,
 * a^T a = V S² V^T and U = a V / S (otherwise the same on a a^T). Directions of zero singular value
 * come out as zero vectors.
 */
function tripletsFromGram(a: ArrayLike<number>, m: number, n: number, r: number): SingularTriplets {
  const right = n <= m;
  const d = right ? n : m;
  const gram = right ? mm(a, a, n, m, n, true, false) : mm(a, a, m, n, m, false, true);
  const { values, vectors } = symmetricEigen(gram, d);
  const S = Float64Array.from({ length: r }, (_, i) => Math.sqrt(Math.max(values[i], 0)));
  const tiny = 1e-12 * (S[0] || 1);
  const U = new Float64Array(m * r);
  const Vt = new Float64Array(r * n);
  for (let i = 0; i < r; i++) {
    const s = S[i];
    if (s <= tiny) {
      S[i] = 0;
      continue;
    }
    if (right) {
      for (let c = 0; c < n; c++) Vt[i * n + c] = vectors[c * d + i];
      for (let row = 0; row < m; row++) {
        let dot = 0;
        for (let c = 0; c < n; c++) dot += a[row * n + c] * Vt[i * n + c];
        U[row * r + i] = dot / s;
      }
    } else {
      for (let row = 0; row < m; row++) U[row * r + i] = vectors[row * d + i];
      for (let c = 0; c < n; c++) {
        let dot = 0;
        for (let row = 0; row < m; row++) dot += U[row * r + i] * a[row * n + c];
        Vt[i * n + c] = dot / s;
      }
    }
  }
  return { U, S, Vt };
}

/**
 * The top r singular triplets of a [m, n]. Exact (to float64) without `niter`, costing O(min(m, n)³);
 * with `niter`, torch.svd_lowrank's randomized subspace iteration with q = r (Halko et al.): Q spans
 * a R for a Gaussian R [n, r] drawn from `gaussian`, refined niter times through a^T and a, then the
 * small matrix Q^T a is decomposed exactly. O(m n r niter).
 */
export function topSingular(a: ArrayLike<number>, m: number, n: number, r: number, options: { niter?: number; gaussian?: () => number } = {}): SingularTriplets {
  if (!(r >= 1 && r <= Math.min(m, n))) throw new RangeError(`topSingular: rank ${r} must be from 1 to ${Math.min(m, n)}`);
  if (options.niter === undefined) return tripletsFromGram(a, m, n, r);
  const gaussian = options.gaussian;
  if (!gaussian) throw new Error('topSingular: randomized iteration needs a Gaussian source');
  const R = Float64Array.from({ length: n * r }, () => gaussian());
  let Q = householderQr(mm(a, R, m, n, r), m, r).Q;
  for (let i = 0; i < options.niter; i++) {
    const Z = householderQr(mm(a, Q, n, m, r, true, false), n, r).Q;
    Q = householderQr(mm(a, Z, m, n, r), m, r).Q;
  }
  const small = mm(Q, a, r, m, n, true, false); // Q^T a [r, n]
  const t = tripletsFromGram(small, r, n, r);
  return { U: mm(Q, t.U, m, r, r), S: t.S, Vt: t.Vt };
}
