// GaLore (Zhao et al. 2024): Adam in a rank-r projection of each weight's gradient.
//   galore_gaussian:       vectors[i] = z_i ~ N(0, 1) under `key` (the start of a subspace iteration)
//   galore_orthonormalize: the `count` vectors of `length` elements (vector k, element i at
//                          k * vstride + i * estride) made orthonormal in order by modified Gram-Schmidt,
//                          run twice ("twice is enough") in one workgroup; a vector with no length left
//                          becomes zero
//   galore_adam:           g = grads * gradScale * clip;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
//                          out = stepSize * m / (sqrt(v) + eps)   (galore_torch's AdamW: eps outside the
//                          bias correction, which stepSize = lr sqrt(1 - b2^t) / (1 - b1^t) carries)
//   galore_commit:         out[i] = vectors[i], a new projection taking the old one's place
//   galore_decay:          out[i] *= stepSize, the decoupled weight decay
// A clip[0] below 0 (gradnorm.wgsl's skip of a step whose gradient norm is not finite) leaves the moments,
// the projection and the weight as they are: galore_adam writes a zero update, the others nothing.
struct GaloreParams {
  count: u32,
  length: u32,
  vstride: u32,
  estride: u32,
  n: u32,
  key: u32,
  beta1: f32,
  oneMinusBeta1: f32,
  beta2: f32,
  oneMinusBeta2: f32,
  eps: f32,
  stepSize: f32,
  gradScale: f32,
}

@group(0) @binding(0) var<uniform> p: GaloreParams;
@group(0) @binding(1) var<storage, read_write> vectors: array<f32>;
@group(0) @binding(2) var<storage, read> grads: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read> clip: array<f32>;
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

override WG: u32 = 256;

// #include lib/hash.wgsl
// #include lib/gaussian.wgsl
// #include lib/flat_index.wgsl
// #include lib/workgroup_reduce.wgsl

fn at(k: u32, i: u32) -> u32 {
  return k * p.vstride + i * p.estride;
}

@compute @workgroup_size(WG)
fn galore_gaussian(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                   @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= p.n) { return; }
  vectors[i] = gaussian_draw(p.key, i);
}

// Each invocation owns elements lid, lid + WG, ... of every vector, so only the reductions cross
// invocations (through workgroup memory, behind barriers).
@compute @workgroup_size(WG)
fn galore_orthonormalize(@builtin(local_invocation_index) lid: u32) {
  for (var k = 0u; k < p.count; k++) {
    for (var sweep = 0u; sweep < 2u; sweep++) {
      for (var j = 0u; j < k; j++) {
        var d = 0.0;
        for (var i = lid; i < p.length; i += WG) { d = fma(vectors[at(j, i)], vectors[at(k, i)], d); }
        let dot = wg_sum(lid, d);
        for (var i = lid; i < p.length; i += WG) { vectors[at(k, i)] -= dot * vectors[at(j, i)]; }
      }
    }
    var s = 0.0;
    for (var i = lid; i < p.length; i += WG) { let x = vectors[at(k, i)]; s = fma(x, x, s); }
    let norm = sqrt(wg_sum(lid, s));
    let inv = select(0.0, 1.0 / norm, norm > 1e-30);
    for (var i = lid; i < p.length; i += WG) { vectors[at(k, i)] *= inv; }
  }
}

@compute @workgroup_size(WG)
fn galore_adam(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= p.n) { return; }
  if (clip[0] < 0.0) {
    out[i] = 0.0;
    return;
  }
  let g = grads[i] * p.gradScale * clip[0];
  let m1 = p.beta1 * m[i] + p.oneMinusBeta1 * g;
  let v1 = p.beta2 * v[i] + p.oneMinusBeta2 * g * g;
  m[i] = m1;
  v[i] = v1;
  out[i] = p.stepSize * m1 / (sqrt(v1) + p.eps);
}

@compute @workgroup_size(WG)
fn galore_commit(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= p.n || clip[0] < 0.0) { return; }
  out[i] = vectors[i];
}

@compute @workgroup_size(WG)
fn galore_decay(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= p.n || clip[0] < 0.0) { return; }
  out[i] *= p.stepSize;
}
