// One AdamW update, shared by the dense and the sparse optimizer. Matches torch.optim.AdamW:
//   g = grad * gradScale * clip
//   m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2
//   param = param decay - stepSize * m / (sqrt(v) / bc2Sqrt + eps)
// with decay = 1 - lr wd, stepSize = lr / (1 - beta1^t) and bc2Sqrt = sqrt(1 - beta2^t) computed on the
// host in float64, and 1 - beta too: 1 - f32(0.999) is 1.3e-5 off 0.001, an error sqrt(v) would carry.
struct AdamParams {
  n: u32,
  beta1: f32,
  oneMinusBeta1: f32,
  beta2: f32,
  oneMinusBeta2: f32,
  eps: f32,
  decay: f32,
  stepSize: f32,
  bc2Sqrt: f32,
  gradScale: f32,
}

// Returns (param, m, v) after the update.
fn adamw_update(o: AdamParams, param: f32, grad: f32, m: f32, v: f32, clip: f32) -> vec3f {
  let g = grad * o.gradScale * clip;
  let m1 = o.beta1 * m + o.oneMinusBeta1 * g;
  let v1 = o.beta2 * v + o.oneMinusBeta2 * g * g;
  let denom = sqrt(v1) / o.bc2Sqrt + o.eps;
  let p1 = param * o.decay - o.stepSize * m1 / denom;
  return vec3f(p1, m1, v1);
}
