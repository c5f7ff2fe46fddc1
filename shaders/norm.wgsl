// RMSNorm (Llama family) and LayerNorm (GPT-2) over rows of x [rows, cols], as Hugging Face computes them:
//   rmsnorm:   y = x * rstd * w,               rstd = 1 / sqrt(mean(x^2) + eps)
//   layernorm: y = (x - mean) * rstd * w + b,  rstd = 1 / sqrt(var(x) + eps)   (biased variance)
// The scale is w + offset: offset 1 is Gemma's RMSNorm, x * rstd * (1 + w), its weight stored as w.
// The forward pass saves stats[2 * row] = mean (0 for rmsnorm) and stats[2 * row + 1] = rstd. With
// HALF_OUT it stores y as f16 in yh, two per word (an even cols): mixed precision's input to a product.
// Backward: dx is overwritten, or with ACCUMULATE added to (a residual stream's gradient, which the
// norm's input gradient joins); dw and db accumulate (+=), so gradients of several micro-batches sum.
// Row kernels use one workgroup per row (folded into x and y); weight-gradient kernels one invocation
// per column, walking the rows (neighbouring invocations read neighbouring columns).
struct Params { rows: u32, cols: u32, eps: f32, offset: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;
@group(0) @binding(6) var<storage, read> dy: array<f32>;
@group(0) @binding(7) var<storage, read_write> dx: array<f32>;
@group(0) @binding(8) var<storage, read_write> dw: array<f32>;
@group(0) @binding(9) var<storage, read_write> db: array<f32>;
@group(0) @binding(10) var<storage, read_write> yh: array<u32>;

override WG: u32 = 256;
override LAYERNORM: bool = false;
override HALF_OUT: bool = false;
override ACCUMULATE: bool = false;

// #include lib/workgroup_reduce.wgsl
// #include lib/half_encode.wgsl

fn row_of(wid: vec3u, nwg: vec3u) -> u32 { return wid.y * nwg.x + wid.x; }

fn normed(base: u32, c: u32, mean: f32, rstd: f32) -> f32 {
  var v = (x[base + c] - mean) * rstd * (w[c] + p.offset);
  if (LAYERNORM) { v += b[c]; }
  return v;
}

@compute @workgroup_size(WG)
fn norm_forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32) {
  let row = row_of(wid, nwg);
  let live = row < p.rows; // rows past the end still join the barriers
  let base = row * p.cols;
  var mean = 0.0;
  if (LAYERNORM) {
    var s = 0.0;
    if (live) { for (var c = lid; c < p.cols; c += WG) { s += x[base + c]; } }
    mean = wg_sum(lid, s) / f32(p.cols);
  }
  var ss = 0.0;
  if (live) {
    for (var c = lid; c < p.cols; c += WG) {
      let d = x[base + c] - mean;
      ss = fma(d, d, ss);
    }
  }
  let rstd = inverseSqrt(wg_sum(lid, ss) / f32(p.cols) + p.eps);
  if (!live) { return; }
  if (HALF_OUT) {
    for (var j = lid; 2u * j < p.cols; j += WG) {
      let c = 2u * j;
      yh[base / 2u + j] = half_encode(normed(base, c, mean, rstd), HALF_F16) | (half_encode(normed(base, c + 1u, mean, rstd), HALF_F16) << 16u);
    }
  } else {
    for (var c = lid; c < p.cols; c += WG) { y[base + c] = normed(base, c, mean, rstd); }
  }
  if (lid == 0u) {
    stats[2u * row] = mean;
    stats[2u * row + 1u] = rstd;
  }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * w and xhat = (x - mean) * rstd;
// rmsnorm drops the mean(g) term (and its mean is 0).
@compute @workgroup_size(WG)
fn norm_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_index) lid: u32) {
  let row = row_of(wid, nwg);
  let live = row < p.rows;
  let base = row * p.cols;
  var mean = 0.0;
  var rstd = 0.0;
  if (live) {
    mean = stats[2u * row];
    rstd = stats[2u * row + 1u];
  }
  var sg = 0.0;
  var sgx = 0.0;
  if (live) {
    for (var c = lid; c < p.cols; c += WG) {
      let g = dy[base + c] * (w[c] + p.offset);
      sg += g;
      sgx = fma(g, (x[base + c] - mean) * rstd, sgx);
    }
  }
  var meanG = 0.0;
  if (LAYERNORM) { meanG = wg_sum(lid, sg) / f32(p.cols); }
  let meanGx = wg_sum(lid, sgx) / f32(p.cols);
  if (!live) { return; }
  for (var c = lid; c < p.cols; c += WG) {
    let g = dy[base + c] * (w[c] + p.offset);
    let xhat = (x[base + c] - mean) * rstd;
    let d = rstd * (g - meanG - xhat * meanGx);
    if (ACCUMULATE) { dx[base + c] += d; } else { dx[base + c] = d; }
  }
}

// dw[c] += sum over rows of dy * xhat; with LAYERNORM also db[c] += sum over rows of dy.
const WEIGHT_COLS = 64u; // columns per workgroup, one per invocation
@compute @workgroup_size(WEIGHT_COLS)
fn norm_backward_weight(@builtin(global_invocation_id) gid: vec3u) {
  let c = gid.x;
  if (c >= p.cols) { return; }
  var gw = 0.0;
  var gb = 0.0;
  for (var r = 0u; r < p.rows; r++) {
    let d = dy[r * p.cols + c];
    gw = fma(d, (x[r * p.cols + c] - stats[2u * r]) * stats[2u * r + 1u], gw);
    gb += d;
  }
  dw[c] += gw;
  if (LAYERNORM) { db[c] += gb; }
}
