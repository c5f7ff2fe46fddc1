// Zeroth-order training (MeZO, Malladi et al. 2023): random directions z regenerated from a counter-based
// hash, never stored, so the perturbations and the update cost one pass over the parameters each.
//   zo_perturb:  params[i] += scale * z_j(i)                        (j = p.direction)
//   zo_update:   params[i] += restore * z_last(i) (the last direction's restoring step, fused when given);
//                params[i] -= lr * (sum_j c_j z_j(i) + wd * params[i]),  c_j = (acc[2j] - acc[2j+1]) * coef
//   zo_loss_sum: sums[slot] = sum_t losses[t];  acc[slot] += the same (one workgroup)
// With `skip`, an update whose c_j is not finite (a loss that overflowed) only restores the parameters.
// A dispatch covers one run of a parameter buffer; `segments` maps each element of the run to its tensor
// (vec4u: first element in the run, tensor index or SKIP for a gap, weight decay 0/1, unused), so z of an
// element depends on (seed, step, direction, tensor, element within the tensor) and not on the layout.
// An invocation takes two neighbouring elements, one Box-Muller pair where they share a tensor at an
// even offset (arena tensors start 64-element aligned), looking its segment up once.
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
  restore: f32,
  skip: u32,
}

@group(0) @binding(0) var<uniform> p: ZoParams;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read> segments: array<vec4u>;
@group(0) @binding(3) var<storage, read> acc_in: array<f32>;
@group(0) @binding(4) var<storage, read> losses: array<f32>;
@group(0) @binding(5) var<storage, read_write> sums: array<f32>;
@group(0) @binding(6) var<storage, read_write> acc: array<f32>;

override WG: u32 = 256;
// Pairs per invocation, strided by the launch size (more than 1 amortizes CPU implementations' per-invocation cost).
override PER: u32 = 1;
const SKIP: u32 = 0xffffffffu;

// #include lib/hash.wgsl
// #include lib/gaussian.wgsl
// #include lib/flat_index.wgsl
// #include lib/workgroup_reduce.wgsl

// The key of direction j of an optimizer step: every draw of that direction derives from it.
fn direction_key(seed: u32, step: u32, j: u32) -> u32 {
  return hash32(hash32(hash32(seed) ^ step) ^ hash32(j + 0x9e3779b9u));
}

// The key of tensor t's draws under a direction key.
fn tensor_key(key: u32, t: u32) -> u32 {
  return hash32(key ^ hash32(t ^ 0x632be5abu));
}

// The index of the last segment starting at or before element i of the run.
fn segment_index(i: u32) -> u32 {
  var lo = 0u;
  var hi = p.segments;
  while (hi - lo > 1u) {
    let mid = (lo + hi) / 2u;
    if (segments[mid].x <= i) { lo = mid; } else { hi = mid; }
  }
  return lo;
}

// The segments of run elements i and i + 1 (the same one unless i + 1 starts another; s1 unused past the run).
struct Located {
  s0: vec4u,
  s1: vec4u,
}

fn locate(i: u32) -> Located {
  let k = segment_index(i);
  let s0 = segments[k];
  var s1 = s0;
  if (k + 1u < p.segments && i + 1u >= segments[k + 1u].x) { s1 = segments[k + 1u]; }
  return Located(s0, s1);
}

// z of run elements i and i + 1 under direction key `key` (0 where not trained or past the run).
fn draws(key: u32, at: Located, i: u32) -> vec2f {
  let second = i + 1u < p.n;
  let e0 = i - at.s0.x;
  if (second && at.s1.x == at.s0.x && (e0 & 1u) == 0u) {
    if (at.s0.y == SKIP) { return vec2f(0.0); }
    return gaussian_pair(tensor_key(key, at.s0.y), e0 >> 1u);
  }
  var z = vec2f(0.0);
  if (at.s0.y != SKIP) { z.x = gaussian_draw(tensor_key(key, at.s0.y), e0); }
  if (second && at.s1.y != SKIP) { z.y = gaussian_draw(tensor_key(key, at.s1.y), i + 1u - at.s1.x); }
  return z;
}

@compute @workgroup_size(WG)
fn zo_perturb(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
              @builtin(local_invocation_index) lid: u32) {
  let key = direction_key(p.seed, p.step, p.direction);
  for (var r = 0u; r < PER; r++) {
    let i = 2u * (flat_index(wid, nwg, lid, WG) + r * nwg.x * nwg.y * WG);
    if (i >= p.n) { return; }
    let z = draws(key, locate(i), i);
    params[i] += p.scale * z.x;
    if (i + 1u < p.n) { params[i + 1u] += p.scale * z.y; }
  }
}

@compute @workgroup_size(WG)
fn zo_update(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
             @builtin(local_invocation_index) lid: u32) {
  for (var r = 0u; r < PER; r++) {
    let i = 2u * (flat_index(wid, nwg, lid, WG) + r * nwg.x * nwg.y * WG);
    if (i >= p.n) { return; }
    let at = locate(i);
    var g = vec2f(0.0);
    var last = vec2f(0.0);
    var finite = true;
    for (var j = 0u; j < p.directions; j++) {
      let c = (acc_in[2u * j] - acc_in[2u * j + 1u]) * p.coef;
      finite = finite && (bitcast<u32>(c) & 0x7f800000u) != 0x7f800000u;
      last = draws(direction_key(p.seed, p.step, j), at, i);
      g = fma(vec2f(c), last, g);
    }
    let skipped = p.skip != 0u && !finite;
    if (skipped) { g = vec2f(0.0); }
    let decay = vec2<bool>(!skipped && at.s0.z == 1u && at.s0.y != SKIP, !skipped && at.s1.z == 1u && at.s1.y != SKIP);
    for (var e = 0u; e < 2u; e++) {
      let k = i + e;
      if (k >= p.n) { break; }
      // Untrained elements draw 0 and, not decayed, stay as they are.
      var w = params[k];
      w += p.restore * last[e];
      var d = g[e];
      if (decay[e]) { d = fma(p.weight_decay, w, d); }
      params[k] = w - p.lr * d;
    }
  }
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
