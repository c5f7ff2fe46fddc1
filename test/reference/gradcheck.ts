/** Central finite differences in float64 for checking reference backward passes. */

/**
 * d/dx of L(x) = sum(f(x) * dy), numerically, for every element of `x` (mutated and restored).
 * f returns the forward output as a flat array.
 */
export function numericGradient(x: Float64Array, f: () => ArrayLike<number>, dy: ArrayLike<number>, h = 1e-6): Float64Array {
  const loss = () => {
    const y = f();
    let s = 0;
    for (let i = 0; i < y.length; i++) s += y[i] * dy[i];
    return s;
  };
  const g = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const keep = x[i];
    x[i] = keep + h;
    const up = loss();
    x[i] = keep - h;
    const down = loss();
    x[i] = keep;
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

/** max |a - b| / max |b|. */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / Math.max(scale, 1e-30);
}
