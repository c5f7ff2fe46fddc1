// tanh that stays finite everywhere, and the soft cap c * tanh(x / c) built on it (Gemma 2's attention
// and final-logit soft-capping). tanh(15) is 1 in f32; the clamp keeps backends that build tanh from
// exp(2z) off inf / inf = NaN.
fn tanh_bounded(z: f32) -> f32 { return tanh(clamp(z, -15.0, 15.0)); }

fn soft_cap(x: f32, c: f32) -> f32 { return c * tanh_bounded(x / c); }
