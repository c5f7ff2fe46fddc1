// Zeroth-order training (MeZO, Malladi et al. 2023): random directions z regenerated from a counter-based
// hash, never stored, so the perturbations and the update cost one pass over the parameters each.
//   zo_perturb:  params[i] += scale * z_j(i)                        (j = p.direction)
//   zo_update:   params[i] -= lr * (sum_j c_j z_j(i) + wd * params[i]),  c_j = (sums[2j] - sums[2j+1]) * coef
//   zo_loss_sum: sums[slot] = sum_t losses[t];  acc[slot] += the same (one workgroup)
// A dispatch covers one run of a parameter buffer; `segments` maps each element of the run to its tensor
// (vec4u: first element in the run, tensor index or SKIP for a gap, weight decay 0/1, unused), so z of an
// element depends on (seed, step, direction, tensor, element within the tensor) and not on the layout.
struct ZoParams {
  n: u32,
  segments: u32,
  seed: u32,
  step: u32,
  direction: u32,
  directions: u32,
  slot: u32,
  scale: f32,
  lr: f32,
  weight_decay: f32,
  coef: f32,
}

@group(0) @binding(0) var<uniform> p: ZoParams;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read> segments: array<vec4u>;
@group(0) @binding(3) var<storage, read> acc_in: array<f32>;
@group(0) @binding(4) var<storage, read> losses: array<f32>;
@group(0) @binding(5) var<storage, read_write> sums: array<f32>;
@group(0) @binding(6) var<storage, read_write> acc: array<f32>;

override WG: u32 = 256;
const SKIP: u32 = 0xffffffffu;

// #include lib/hash.wgsl
// #include lib/gaussian.wgsl
// #include lib/flat_index.wgsl
// #include lib/workgroup_reduce.wgsl

// The key of direction j of an optimizer step: every draw of that direction derives from it.
fn direction_key(seed: u32, step: u32, j: u32) -> u32 {
  return hash32(hash32(hash32(seed) ^ step) ^ hash32(j + 0x9e3779b9u));
}

// z ~ N(0, 1) for element e of tensor t under a direction key (lib/gaussian.wgsl).
fn gaussian(key: u32, t: u32, e: u32) -> f32 {
  return gaussian_draw(hash32(key ^ hash32(t ^ 0x632be5abu)), e);
}

// The last segment starting at or before element i of the run.
fn segment_of(i: u32) -> vec4u {
  var lo = 0u;
  var hi = p.segments;
  while (hi - lo > 1u) {
    let mid = (lo + hi) / 2u;
    if (segments[mid].x <= i) { lo = mid; } else { hi = mid; }
  }
  return segments[lo];
}

@compute @workgroup_size(WG)
fn zo_perturb(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
              @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= p.n) { return; }
  let s = segment_of(i);
  if (s.y == SKIP) { return; }
  params[i] += p.scale * gaussian(direction_key(p.seed, p.step, p.direction), s.y, i - s.x);
}

@compute @workgroup_size(WG)
fn zo_update(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
             @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= p.n) { return; }
  let s = segment_of(i);
  if (s.y == SKIP) { return; }
  var g = 0.0;
  for (var j = 0u; j < p.directions; j++) {
    let c = (acc_in[2u * j] - acc_in[2u * j + 1u]) * p.coef;
    g = fma(c, gaussian(direction_key(p.seed, p.step, j), s.y, i - s.x), g);
  }
  let w = params[i];
  if (s.z == 1u) { g = fma(p.weight_decay, w, g); }
  params[i] = w - p.lr * g;
}

@compute @workgroup_size(WG)
fn zo_loss_sum(@builtin(local_invocation_index) lid: u32) {
  var s = 0.0;
  for (var t = lid; t < p.n; t += WG) { s += losses[t]; }
  let total = wg_sum(lid, s);
  if (lid == 0u) {
    sums[p.slot] = total;
    acc[p.slot] += total;
  }
}
