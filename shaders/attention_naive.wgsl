// Naive causal attention that materializes the [B, nH, S, S] probability matrix: the baseline the
// flash kernels are measured against (bench), and the textbook algorithm they must equal. Forward only.
//   naive_scores:  P[b, h, i, j] = scale * q_i . k_j for j <= i (masked entries -inf)
//   naive_softmax: row-wise softmax of P in place (one workgroup per row)
//   naive_output:  o_i = sum_j P[b, h, i, j] v_j
struct Params { B: u32, S: u32, nH: u32, nKV: u32, D: u32, scale: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> P: array<f32>;
@group(0) @binding(5) var<storage, read_write> o: array<f32>;

override WG: u32 = 256;
const NEG_INF = -3.402823e38;

// #include lib/workgroup_reduce.wgsl
// #include lib/flat_index.wgsl

@compute @workgroup_size(WG)
fn naive_scores(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32) {
  let t = flat_index(wid, nwg, lid, WG);
  if (t >= p.B * p.nH * p.S * p.S) { return; }
  let j = t % p.S;
  let i = (t / p.S) % p.S;
  let h = (t / (p.S * p.S)) % p.nH;
  let b = t / (p.S * p.S * p.nH);
  if (j > i) { P[t] = NEG_INF; return; }
  let g = h / (p.nH / p.nKV);
  let qb = ((b * p.S + i) * p.nH + h) * p.D;
  let kb = ((b * p.S + j) * p.nKV + g) * p.D;
  var s = 0.0;
  for (var d = 0u; d < p.D; d++) { s = fma(q[qb + d], k[kb + d], s); }
  P[t] = s * p.scale;
}

@compute @workgroup_size(WG)
fn naive_softmax(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  let live = row < p.B * p.nH * p.S;
  let base = row * p.S;
  var m = NEG_INF;
  if (live) { for (var j = lid; j < p.S; j += WG) { m = max(m, P[base + j]); } }
  let rowMax = wg_max(lid, m);
  var s = 0.0;
  if (live) { for (var j = lid; j < p.S; j += WG) { s += exp(P[base + j] - rowMax); } }
  let total = wg_sum(lid, s);
  if (!live) { return; }
  for (var j = lid; j < p.S; j += WG) { P[base + j] = exp(P[base + j] - rowMax) / total; }
}

@compute @workgroup_size(WG)
fn naive_output(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32) {
  let t = flat_index(wid, nwg, lid, WG);
  if (t >= p.B * p.S * p.nH * p.D) { return; }
  let d = t % p.D;
  let h = (t / p.D) % p.nH;
  let i = (t / (p.D * p.nH)) % p.S;
  let b = t / (p.D * p.nH * p.S);
  let g = h / (p.nH / p.nKV);
  let pb = ((b * p.nH + h) * p.S + i) * p.S;
  var acc = 0.0;
  for (var j = 0u; j <= i; j++) { acc = fma(P[pb + j], v[((b * p.S + j) * p.nKV + g) * p.D + d], acc); }
  o[t] = acc;
}
