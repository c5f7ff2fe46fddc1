/** float64 reference for the fused, chunked cross-entropy: full logits, log-softmax, and its gradient. */
type Arr = ArrayLike<number>;

// losses (T); dHidden (T, H) and dWeight (V, H) for d(sum of scale * loss_t); logits soft-capped,
// softcap * tanh(x / softcap), when softcap is given.
export function crossEntropyRef(hidden: Arr, weight: Arr, targets: Arr, T: number, H: number, V: number, scale: number, softcap?: number | null) {
  const losses = new Float64Array(T);
  const dHidden = new Float64Array(T * H);
  const dWeight = new Float64Array(V * H);
  for (let t = 0; t < T; t++) {
    if (targets[t] < 0) continue;
    const logits = new Float64Array(V);
    for (let v = 0; v < V; v++) {
      let s = 0;
      for (let h = 0; h < H; h++) s += hidden[t * H + h] * weight[v * H + h];
      logits[v] = softcap ? softcap * Math.tanh(s / softcap) : s;
    }
    const max = Math.max(...logits);
    let sum = 0;
    for (const l of logits) sum += Math.exp(l - max);
    const lse = max + Math.log(sum);
    losses[t] = lse - logits[targets[t]];
    for (let v = 0; v < V; v++) {
      const capGrad = softcap ? 1 - (logits[v] / softcap) ** 2 : 1;
      const g = scale * (Math.exp(logits[v] - lse) - (v === targets[t] ? 1 : 0)) * capGrad;
      for (let h = 0; h < H; h++) {
        dHidden[t * H + h] += g * weight[v * H + h];
        dWeight[v * H + h] += g * hidden[t * H + h];
      }
    }
  }
  return { losses, dHidden, dWeight };
}
