// Element-wise updates y = f(y, x, z) with two scalars, over n elements:
//   OP_SCALE:         y = s0 * y
//   OP_AXPY:          y = y + s0 * x
//   OP_ADDCMUL:       y = y + s0 * x * z
//   OP_SQRT_AFFINE: y = sqrt(x) * s0 + s1
//   OP_ADDCDIV:       y = y + s0 * x / z
//   OP_ADD:           y = x + z
//   OP_DROPOUT:       y = x * keep(i) * s0          keep(i) = hash(i ^ hash(u0)) >= u1, u1 = p * 2^32
//   OP_DROPOUT_ADD: y = y + x * keep(i) * s0      (the gradient of dropout, with the same mask)
//   OP_SOFTCAP:       y = s0 * tanh(y / s0)          (Gemma 2's final logit soft-capping)
// With HALF_X, x is read from xh: f16 values packed two per word (mixed precision's activations).
struct Params { n: u32, s0: f32, s1: f32, u0: u32, u1: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> z: array<f32>;
@group(0) @binding(4) var<storage, read> xh: array<u32>;

override WG: u32 = 256;
override OP: u32 = 0; // one of the OP_ codes below (the host reads them from here)
const OP_SCALE = 0u;
const OP_AXPY = 1u;
const OP_ADDCMUL = 2u;
const OP_SQRT_AFFINE = 3u;
const OP_ADDCDIV = 4u;
const OP_ADD = 5u;
const OP_DROPOUT = 6u;
const OP_DROPOUT_ADD = 7u;
const OP_SOFTCAP = 8u;
// Elements per invocation, strided by the launch size (see adamw.wgsl).
override PER: u32 = 1;
override HALF_X: bool = false;

// #include lib/flat_index.wgsl

// #include lib/hash.wgsl

// #include lib/tanh.wgsl

fn keep(i: u32) -> f32 { return select(0.0, p.s0, dropout_keeps(i, p.u0, p.u1)); }

fn xv(i: u32) -> f32 {
  if (HALF_X) { return unpack2x16float(xh[i / 2u])[i & 1u]; }
  return x[i];
}

@compute @workgroup_size(WG)
fn elementwise(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_index) lid: u32) {
  let first = flat_index(wid, nwg, lid, WG);
  let stride = nwg.x * nwg.y * WG;
  for (var e = 0u; e < PER; e++) {
    let i = first + e * stride;
    if (i >= p.n) { return; }
    switch (OP) {
      case OP_SCALE: { y[i] = p.s0 * y[i]; }
      case OP_AXPY: { y[i] = fma(p.s0, xv(i), y[i]); }
      case OP_ADDCMUL: { y[i] = y[i] + p.s0 * xv(i) * z[i]; }
      case OP_SQRT_AFFINE: { y[i] = sqrt(xv(i)) * p.s0 + p.s1; }
      case OP_ADDCDIV: { y[i] = y[i] + p.s0 * xv(i) / z[i]; }
      case OP_DROPOUT: { y[i] = xv(i) * keep(i); }
      case OP_DROPOUT_ADD: { y[i] = y[i] + xv(i) * keep(i); }
      case OP_SOFTCAP: { y[i] = soft_cap(y[i], p.s0); }
      default: { y[i] = xv(i) + z[i]; }
    }
  }
}
