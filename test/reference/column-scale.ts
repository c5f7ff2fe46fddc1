/** Float64 reference of shaders/column_scale.wgsl: y = s ⊙ z + b per column, and its backward. */
export function columnScaleRef(z: ArrayLike<number>, s: ArrayLike<number>, b: ArrayLike<number> | null, rows: number, cols: number): Float64Array {
  const y = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) y[r * cols + c] = z[r * cols + c] * s[c] + (b ? b[c] : 0);
  return y;
}

/** dz = dy ⊙ s, ds = Σ_rows dy ⊙ z. */
export function columnScaleBackwardRef(dy: ArrayLike<number>, s: ArrayLike<number>, z: ArrayLike<number>, rows: number, cols: number): { dz: Float64Array; ds: Float64Array } {
  const dz = new Float64Array(rows * cols);
  const ds = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const i = r * cols + c;
      dz[i] = dy[i] * s[c];
      ds[c] += dy[i] * z[i];
    }
  }
  return { dz, ds };
}
