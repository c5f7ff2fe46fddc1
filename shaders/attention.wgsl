// Causal multi-head attention with grouped-query heads and packed documents, flash style: softmax is
// computed online (running max and sum), the forward pass saves only the log-sum-exp per (token, head),
// and the backward pass recomputes probabilities, so memory is linear in the sequence length.
//
// Layout (B sequences of S tokens, rows b * S + i):
//   q, o, dO, dQ: [B * S, nH, D]      k, v, dK, dV: [B * S, nKV, D]
//   stats: [B * S, nH, 2]: the log-sum-exp (forward) and delta = dO . O (backward prep) per (row, head)
//   segments (u32 [B * S], with SEGMENTS): token i attends to j only when j <= i and both carry the same
//   segment id, so packed documents never attend to each other.
// Query head h reads key/value head h / (nH / nKV). Scores are scaled by `scale` (1 / sqrt(D)).
// Each invocation owns one (row, head) and keeps its D-vector in registers; D <= MAX_D. Every entry
// point binds at most 8 storage buffers, WebGPU's default limit.
// Decoding (forward only): queries are Sq rows per sequence at absolute positions qOffset.., keys and
// values Skv rows per sequence (a KV cache); query i sees keys j <= qOffset + i. Training: Sq = Skv = S.
struct Params { B: u32, S: u32, nH: u32, nKV: u32, D: u32, scale: f32, Skv: u32, qOffset: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> segments: array<u32>;
@group(0) @binding(5) var<storage, read_write> o: array<f32>;
@group(0) @binding(6) var<storage, read_write> stats: array<f32>;
@group(0) @binding(7) var<storage, read> dO: array<f32>;
@group(0) @binding(8) var<storage, read_write> dQ: array<f32>;
@group(0) @binding(9) var<storage, read_write> dK: array<f32>;
@group(0) @binding(10) var<storage, read_write> dV: array<f32>;

override WG: u32 = 64;
override SEGMENTS: bool = false;
const MAX_D = 256u;
const NEG_INF = -3.402823e38;

// #include lib/flat_index.wgsl

fn q_at(row: u32, h: u32) -> u32 { return (row * p.nH + h) * p.D; }
fn kv_at(row: u32, g: u32) -> u32 { return (row * p.nKV + g) * p.D; }

fn visible(i: u32, j: u32) -> bool {
  // j <= i is guaranteed by the loops; only the segment test remains.
  if (SEGMENTS) { return segments[i] == segments[j]; }
  return true;
}

// One step of the online softmax: folds score s into the running max m and sum l, and returns
// (weight of this key, correction factor for everything accumulated so far).
fn online_softmax(m: ptr<function, f32>, l: ptr<function, f32>, s: f32) -> vec2f {
  let mNew = max(*m, s);
  let correction = exp(*m - mNew);
  let pr = exp(s - mNew);
  *l = *l * correction + pr;
  *m = mNew;
  return vec2f(pr, correction);
}

@compute @workgroup_size(WG)
fn attention_forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                     @builtin(local_invocation_index) lid: u32) {
  let t = flat_index(wid, nwg, lid, WG);
  if (t >= p.B * p.S * p.nH) { return; }
  let h = t % p.nH;
  let row = t / p.nH;
  let first = (row / p.S) * p.Skv; // first key row of this sequence
  let last = first + min(p.qOffset + row % p.S, p.Skv - 1u); // last visible key row
  let g = h / (p.nH / p.nKV);
  var qr: array<f32, MAX_D>;
  var acc: array<f32, MAX_D>;
  let qb = q_at(row, h);
  for (var d = 0u; d < p.D; d++) { qr[d] = q[qb + d] * p.scale; acc[d] = 0.0; }
  var m = NEG_INF;
  var l = 0.0;
  for (var j = first; j <= last; j++) {
    if (!visible(row, j)) { continue; }
    let kb = kv_at(j, g);
    var s = 0.0;
    for (var d = 0u; d < p.D; d++) { s = fma(qr[d], k[kb + d], s); }
    let w = online_softmax(&m, &l, s);
    for (var d = 0u; d < p.D; d++) { acc[d] = fma(w.x, v[kb + d], acc[d] * w.y); }
  }
  let inv = 1.0 / l;
  for (var d = 0u; d < p.D; d++) { o[qb + d] = acc[d] * inv; }
  stats[2u * t] = m + log(l);
}

// stats[row, h, 1] = delta = sum over d of dO * O: the softmax-backward term shared by every key of that row.
@compute @workgroup_size(WG)
fn attention_backward_prep(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                           @builtin(local_invocation_index) lid: u32) {
  let t = flat_index(wid, nwg, lid, WG);
  if (t >= p.B * p.S * p.nH) { return; }
  let base = t * p.D;
  var s = 0.0;
  for (var d = 0u; d < p.D; d++) { s = fma(dO[base + d], o[base + d], s); }
  stats[2u * t + 1u] = s;
}

// dQ[i] = scale * sum over visible j of P_ij (dO_i . v_j - delta_i) k_j, one invocation per (row, head).
@compute @workgroup_size(WG)
fn attention_backward_dq(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                         @builtin(local_invocation_index) lid: u32) {
  let t = flat_index(wid, nwg, lid, WG);
  if (t >= p.B * p.S * p.nH) { return; }
  let h = t % p.nH;
  let row = t / p.nH;
  let first = (row / p.S) * p.S;
  let g = h / (p.nH / p.nKV);
  let qb = q_at(row, h);
  var qr: array<f32, MAX_D>;
  var dor: array<f32, MAX_D>;
  var acc: array<f32, MAX_D>;
  for (var d = 0u; d < p.D; d++) { qr[d] = q[qb + d] * p.scale; dor[d] = dO[qb + d]; acc[d] = 0.0; }
  let rowLse = stats[2u * t];
  let rowDelta = stats[2u * t + 1u];
  for (var j = first; j <= row; j++) {
    if (!visible(row, j)) { continue; }
    let kb = kv_at(j, g);
    var s = 0.0;
    var dp = 0.0;
    for (var d = 0u; d < p.D; d++) {
      s = fma(qr[d], k[kb + d], s);
      dp = fma(dor[d], v[kb + d], dp);
    }
    let ds = exp(s - rowLse) * (dp - rowDelta);
    for (var d = 0u; d < p.D; d++) { acc[d] = fma(ds, k[kb + d], acc[d]); }
  }
  for (var d = 0u; d < p.D; d++) { dQ[qb + d] = acc[d] * p.scale; }
}

// dV[j] = sum of P_ij dO_i and dK[j] = scale * sum of P_ij (dO_i . v_j - delta_i) q_i, over the visible
// rows i >= j of every query head sharing key/value head g; one invocation per (row, kv head).
@compute @workgroup_size(WG)
fn attention_backward_dkv(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                          @builtin(local_invocation_index) lid: u32) {
  let t = flat_index(wid, nwg, lid, WG);
  if (t >= p.B * p.S * p.nKV) { return; }
  let g = t % p.nKV;
  let row = t / p.nKV;
  let last = (row / p.S) * p.S + p.S; // one past the last row of this sequence
  let group = p.nH / p.nKV;
  let kb = kv_at(row, g);
  var kr: array<f32, MAX_D>;
  var vr: array<f32, MAX_D>;
  var dk: array<f32, MAX_D>;
  var dv: array<f32, MAX_D>;
  for (var d = 0u; d < p.D; d++) { kr[d] = k[kb + d]; vr[d] = v[kb + d]; dk[d] = 0.0; dv[d] = 0.0; }
  for (var i = row; i < last; i++) {
    if (!visible(i, row)) { continue; }
    for (var hh = 0u; hh < group; hh++) {
      let h = g * group + hh;
      let qb = q_at(i, h);
      var s = 0.0;
      var dp = 0.0;
      for (var d = 0u; d < p.D; d++) {
        s = fma(q[qb + d], kr[d], s);
        dp = fma(dO[qb + d], vr[d], dp);
      }
      let st = 2u * (i * p.nH + h);
      let pr = exp(s * p.scale - stats[st]);
      let ds = pr * (dp - stats[st + 1u]) * p.scale;
      for (var d = 0u; d < p.D; d++) {
        dv[d] = fma(pr, dO[qb + d], dv[d]);
        dk[d] = fma(ds, q[qb + d], dk[d]);
      }
    }
  }
  for (var d = 0u; d < p.D; d++) { dK[kb + d] = dk[d]; dV[kb + d] = dv[d]; }
}

// ---- Tiled forward for GPUs: a workgroup owns QT consecutive query rows of one (sequence, head); key and
// value rows are staged through workgroup memory KT at a time and shared by all of its queries, so each
// K/V element is read from storage once per workgroup instead of once per query. Same results as
// attention_forward (dispatch: x = query tiles, y = heads, z = sequences).
override QT: u32 = 64; // queries per workgroup (the workgroup size)
override KT: u32 = 16; // keys per staged tile
override DK: u32 = 64; // head dim capacity of the staged tiles (>= D)
var<workgroup> Kt: array<f32, KT * DK>;
var<workgroup> Vt: array<f32, KT * DK>;

@compute @workgroup_size(QT)
fn attention_forward_tiled(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.z;
  let h = wid.y;
  let g = h / (p.nH / p.nKV);
  let i = wid.x * QT + lid; // query position within the sequence
  let live = i < p.S;
  let row = b * p.S + min(i, p.S - 1u);
  var qr: array<f32, MAX_D>;
  var acc: array<f32, MAX_D>;
  let qb = q_at(row, h);
  for (var d = 0u; d < p.D; d++) { qr[d] = q[qb + d] * p.scale; acc[d] = 0.0; }
  var m = NEG_INF;
  var l = 0.0;
  // Keys up to the workgroup's last query (causal), uniform across the workgroup.
  let lastKey = min(wid.x * QT + QT, p.S);
  for (var j0 = 0u; j0 < lastKey; j0 += KT) {
    for (var e = lid; e < KT * p.D; e += QT) {
      let j = j0 + e / p.D;
      var kv = vec2f(0.0);
      if (j < p.S) {
        let at = kv_at(b * p.S + j, g) + e % p.D;
        kv = vec2f(k[at], v[at]);
      }
      Kt[e] = kv.x;
      Vt[e] = kv.y;
    }
    workgroupBarrier();
    if (live) {
      let jEnd = min(KT, i + 1u - min(j0, i + 1u)); // keys j0 .. min(i, j0 + KT - 1)
      for (var jj = 0u; jj < jEnd; jj++) {
        if (!visible(row, b * p.S + j0 + jj)) { continue; }
        var s = 0.0;
        for (var d = 0u; d < p.D; d++) { s = fma(qr[d], Kt[jj * p.D + d], s); }
        let w = online_softmax(&m, &l, s);
        for (var d = 0u; d < p.D; d++) { acc[d] = fma(w.x, Vt[jj * p.D + d], acc[d] * w.y); }
      }
    }
    workgroupBarrier();
  }
  if (!live) { return; }
  let inv = 1.0 / l;
  for (var d = 0u; d < p.D; d++) { o[qb + d] = acc[d] * inv; }
  stats[2u * (row * p.nH + h)] = m + log(l);
}
