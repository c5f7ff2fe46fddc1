/** float64 reference for shaders/reduce.wgsl. */
export type ReduceOpRef = 'sum' | 'max' | 'sumsq';

// out (rows) = reduce over cols of x (rows, cols)
export function reduceRowsRef(x: ArrayLike<number>, rows: number, cols: number, op: ReduceOpRef): Float64Array {
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let acc = op === 'max' ? -Infinity : 0;
    for (let c = 0; c < cols; c++) {
      const v = x[r * cols + c];
      acc = op === 'max' ? Math.max(acc, v) : op === 'sumsq' ? acc + v * v : acc + v;
    }
    out[r] = acc;
  }
  return out;
}
