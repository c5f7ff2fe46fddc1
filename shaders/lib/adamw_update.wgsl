// One AdamW update, shared by the dense and the sparse optimizer. Matches torch.optim.AdamW:
//   g = grad * gradScale * clip
//   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
//   param = param (1 - lr wd) - stepSize * m / (sqrt(v) / bc2Sqrt + eps)
// with stepSize = lr / (1 - beta1^t) and bc2Sqrt = sqrt(1 - beta2^t) computed on the host in float64.
struct AdamParams {
  n: u32,
  lr: f32,
  beta1: f32,
  beta2: f32,
  eps: f32,
  weightDecay: f32,
  stepSize: f32,
  bc2Sqrt: f32,
  gradScale: f32,
}

// Returns (param, m, v) after the update.
fn adamw_update(o: AdamParams, param: f32, grad: f32, m: f32, v: f32, clip: f32) -> vec3f {
  let g = grad * o.gradScale * clip;
  let m1 = o.beta1 * m + (1.0 - o.beta1) * g;
  let v1 = o.beta2 * v + (1.0 - o.beta2) * g * g;
  let denom = sqrt(v1) / o.bc2Sqrt + o.eps;
  let p1 = param * (1.0 - o.lr * o.weightDecay) - o.stepSize * m1 / denom;
  return vec3f(p1, m1, v1);
}
