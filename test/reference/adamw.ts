/** float64 references for shaders/adamw.wgsl, sparse_adamw.wgsl and gradnorm.wgsl (torch.optim.AdamW semantics). */
export interface AdamWRefOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  step: number;
  gradScale?: number;
  clip?: number;
}

// In place on params, m, v (all length n).
export function adamwRef(
  params: Float64Array,
  grads: ArrayLike<number>,
  m: Float64Array,
  v: Float64Array,
  o: AdamWRefOptions,
): void {
  const beta1 = o.beta1 ?? 0.9;
  const beta2 = o.beta2 ?? 0.999;
  const eps = o.eps ?? 1e-8;
  const wd = o.weightDecay ?? 0.01;
  const scale = (o.gradScale ?? 1) * (o.clip ?? 1);
  const bc1 = 1 - beta1 ** o.step;
  const bc2 = 1 - beta2 ** o.step;
  for (let i = 0; i < params.length; i++) {
    const g = grads[i] * scale;
    m[i] = beta1 * m[i] + (1 - beta1) * g;
    v[i] = beta2 * v[i] + (1 - beta2) * g * g;
    params[i] *= 1 - o.lr * wd;
    params[i] -= (o.lr / bc1) * (m[i] / (Math.sqrt(v[i] / bc2) + eps));
  }
}

/** torch.nn.utils.clip_grad_norm_: returns [factor, norm] for the concatenation of all tensors. */
export function clipFactorRef(tensors: ArrayLike<number>[], maxNorm: number): [number, number] {
  let ss = 0;
  for (const t of tensors) for (let i = 0; i < t.length; i++) ss += t[i] * t[i];
  const norm = Math.sqrt(ss);
  const factor = maxNorm > 0 && Number.isFinite(maxNorm) ? Math.min(1, maxNorm / (norm + 1e-6)) : 1;
  return [factor, norm];
}
