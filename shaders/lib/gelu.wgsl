// GELU and its derivative: with GELU_TANH (GPT-2's 'gelu_new', Gemma's gelu_pytorch_tanh)
// 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), otherwise exact, 0.5 x (1 + erf(x / sqrt(2))).
// Shared by the activation kernels and the grouped matmul's activation epilogues, so both compute the
// same values.
override GELU_TANH: bool = true;

// #include lib/tanh.wgsl

// Abramowitz & Stegun 7.1.26: |error| < 1.5e-7.
fn erf_approx(x: f32) -> f32 {
  let t = 1.0 / (1.0 + 0.3275911 * abs(x));
  let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  return sign(x) * (1.0 - poly * exp(-x * x));
}

const GELU_K = 0.7978845608028654; // sqrt(2 / pi)

fn gelu(x: f32) -> f32 {
  if (GELU_TANH) { return 0.5 * x * (1.0 + tanh_bounded(GELU_K * (x + 0.044715 * x * x * x))); }
  return 0.5 * x * (1.0 + erf_approx(x * 0.7071067811865476));
}

fn gelu_grad(x: f32) -> f32 {
  if (GELU_TANH) {
    let t = tanh_bounded(GELU_K * (x + 0.044715 * x * x * x));
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_K * (1.0 + 0.134145 * x * x);
  }
  return 0.5 * (1.0 + erf_approx(x * 0.7071067811865476)) + x * exp(-0.5 * x * x) * 0.3989422804014327;
}
