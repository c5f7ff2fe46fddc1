/** float64 references for shaders/sparse.wgsl. */

// out (nnz) = alpha * sum_t dY (T, N)[t, n] * X (T, K)[t, k] at (n, k) = divmod(idx, K)
export function sparseGradRef(
  indices: ArrayLike<number>,
  dY: ArrayLike<number>,
  x: ArrayLike<number>,
  T: number,
  N: number,
  K: number,
  alpha = 1,
  initial?: ArrayLike<number>,
): Float64Array {
  const out = new Float64Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    const n = Math.floor(indices[i] / K);
    const k = indices[i] % K;
    let acc = 0;
    for (let t = 0; t < T; t++) acc += dY[t * N + n] * x[t * K + k];
    out[i] = alpha * acc + (initial ? initial[i] : 0);
  }
  return out;
}

export function scatterRef(indices: ArrayLike<number>, values: ArrayLike<number>, weight: ArrayLike<number>, add = false): Float64Array {
  const out = Float64Array.from(weight);
  for (let i = 0; i < indices.length; i++) out[indices[i]] = (add ? out[indices[i]] : 0) + values[i];
  return out;
}

/** A random sorted, unique mask with round(density * size) entries (at least 1). */
export function randomMask(size: number, density: number, rand: () => number): Uint32Array {
  const nnz = Math.max(1, Math.min(size, Math.round(size * density)));
  const chosen = new Set<number>();
  while (chosen.size < nnz) chosen.add(Math.floor(rand() * size));
  return Uint32Array.from([...chosen].sort((p, q) => p - q));
}

/**
 * out[p * bs^2 + r * bs + c] = alpha * sum_t dY[t, n0 + r] X[t, k0 + c] for block p = blocks[p] at
 * (n0, k0) = (floor(id / (K / bs)) * bs, (id % (K / bs)) * bs), plus `initial` when given.
 */
export function blockSparseGradRef(blocks: ArrayLike<number>, bs: number, dY: ArrayLike<number>, x: ArrayLike<number>, T: number, N: number, K: number, alpha = 1, initial?: ArrayLike<number>): Float64Array {
  const out = new Float64Array(blocks.length * bs * bs);
  for (let p = 0; p < blocks.length; p++) {
    const n0 = Math.floor(blocks[p] / (K / bs)) * bs;
    const k0 = (blocks[p] % (K / bs)) * bs;
    for (let r = 0; r < bs; r++) {
      for (let c = 0; c < bs; c++) {
        let acc = 0;
        for (let t = 0; t < T; t++) acc += dY[t * N + n0 + r] * x[t * K + k0 + c];
        const at = p * bs * bs + r * bs + c;
        out[at] = alpha * acc + (initial ? initial[at] : 0);
      }
    }
  }
  return out;
}
