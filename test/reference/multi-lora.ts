/** Float64 reference of the many-adapter LoRA term (src/kernels/multi-lora.ts). */
export interface MultiLoraRef {
  T: number;
  inDim: number;
  outDim: number;
  rank: number;
  slotStride: number;
  offA: number;
  offB: number;
  scaleStride: number;
  scaleOffset: number;
}

/** y0 + per row t with a slot s: scale[s] * (x[t] A_s^T) B_s^T. */
export function multiLoraRef(d: MultiLoraRef, x: ArrayLike<number>, pool: ArrayLike<number>, slots: ArrayLike<number>, scales: ArrayLike<number>, y0: ArrayLike<number>, none = 0xffffffff): Float64Array {
  const y = Float64Array.from(y0);
  for (let t = 0; t < d.T; t++) {
    const s = slots[t];
    if (s === none) continue;
    const base = s * d.slotStride;
    const u = new Float64Array(d.rank);
    for (let j = 0; j < d.rank; j++) for (let k = 0; k < d.inDim; k++) u[j] += x[t * d.inDim + k] * pool[base + d.offA + j * d.inDim + k];
    const scale = scales[s * d.scaleStride + d.scaleOffset];
    for (let n = 0; n < d.outDim; n++) {
      let acc = 0;
      for (let j = 0; j < d.rank; j++) acc += u[j] * pool[base + d.offB + n * d.rank + j];
      y[t * d.outDim + n] += scale * acc;
    }
  }
  return y;
}
