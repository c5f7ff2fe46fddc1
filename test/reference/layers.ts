/**
 * float64 references for the layer kernels (norm, rope, activation, embedding shaders), forward and
 * backward, in the conventions of Hugging Face's PyTorch code. Backward passes return fresh gradients;
 * they are checked against finite differences in gradcheck.node.test.ts.
 */
type Arr = ArrayLike<number>;

// y (rows, cols), stats (rows, 2) = mean, rstd
export function normForwardRef(kind: 'rmsnorm' | 'layernorm', x: Arr, w: Arr, b: Arr | null, rows: number, cols: number, eps: number) {
  const y = new Float64Array(rows * cols);
  const stats = new Float64Array(rows * 2);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    if (kind === 'layernorm') {
      for (let c = 0; c < cols; c++) mean += x[r * cols + c];
      mean /= cols;
    }
    let ss = 0;
    for (let c = 0; c < cols; c++) ss += (x[r * cols + c] - mean) ** 2;
    const rstd = 1 / Math.sqrt(ss / cols + eps);
    for (let c = 0; c < cols; c++) y[r * cols + c] = (x[r * cols + c] - mean) * rstd * w[c] + (b ? b[c] : 0);
    stats[2 * r] = mean;
    stats[2 * r + 1] = rstd;
  }
  return { y, stats };
}

// dx (rows, cols), dw (cols), db (cols) for upstream dy (rows, cols)
export function normBackwardRef(kind: 'rmsnorm' | 'layernorm', x: Arr, w: Arr, dy: Arr, rows: number, cols: number, eps: number) {
  const { stats } = normForwardRef(kind, x, w, null, rows, cols, eps);
  const dx = new Float64Array(rows * cols);
  const dw = new Float64Array(cols);
  const db = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const mean = stats[2 * r];
    const rstd = stats[2 * r + 1];
    let meanG = 0;
    let meanGx = 0;
    for (let c = 0; c < cols; c++) {
      const g = dy[r * cols + c] * w[c];
      const xhat = (x[r * cols + c] - mean) * rstd;
      meanG += g / cols;
      meanGx += (g * xhat) / cols;
      dw[c] += dy[r * cols + c] * xhat;
      db[c] += dy[r * cols + c];
    }
    if (kind === 'rmsnorm') meanG = 0;
    for (let c = 0; c < cols; c++) {
      const g = dy[r * cols + c] * w[c];
      const xhat = (x[r * cols + c] - mean) * rstd;
      dx[r * cols + c] = rstd * (g - meanG - xhat * meanGx);
    }
  }
  return { dx, dw, db };
}
