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
// values Skv rows per sequence (a KV cache); query i sees keys j <= qOffset + i. With SEQ_OFFSETS each
// sequence b has its own qOffset, seqOffsets[b] (a batch of prompts of different lengths). Training:
// Sq = Skv = S.
// Sliding window (window > 0, Mistral): query position i also needs i - j < window; 0 means unlimited.
// Soft-capping (softcap > 0, Gemma 2): each scaled score s becomes softcap * tanh(s / softcap) before the
// softmax; the backward passes multiply by its derivative, 1 - tanh^2, taken from the capped score.
struct Params {
  B: u32, S: u32, nH: u32, nKV: u32, D: u32, scale: f32, Skv: u32, qOffset: u32, window: u32, softcap: f32,
  // attention_backward_tiled: where dQ, dK and dV start in dQKV (elements).
  dqAt: u32, dkAt: u32, dvAt: u32,
}

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
@group(0) @binding(11) var<storage, read> seqOffsets: array<u32>;

override WG: u32 = 64;
override SEGMENTS: bool = false;
override SEQ_OFFSETS: bool = false;
const MAX_D = 256u;
const NEG_INF = -3.402823e38;

// #include lib/flat_index.wgsl

fn q_at(row: u32, h: u32) -> u32 { return (row * p.nH + h) * p.D; }
fn kv_at(row: u32, g: u32) -> u32 { return (row * p.nKV + g) * p.D; }

// First key position that query position i sees under the sliding window.
fn window_start(i: u32) -> u32 {
  if (p.window == 0u || i < p.window) { return 0u; }
  return i + 1u - p.window;
}

// One past the last query position that sees key position j under the sliding window (capped at S).
fn window_end(j: u32) -> u32 {
  if (p.window == 0u) { return p.S; }
  return min(p.S, j + p.window);
}

// #include lib/tanh.wgsl

fn cap(s: f32) -> f32 {
  if (p.softcap == 0.0) { return s; }
  return soft_cap(s, p.softcap);
}

// d cap(s) / d s from the capped score c.
fn cap_grad(c: f32) -> f32 {
  if (p.softcap == 0.0) { return 1.0; }
  let t = c / p.softcap;
  return 1.0 - t * t;
}

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
  var qOffset = p.qOffset;
  if (SEQ_OFFSETS) { qOffset = seqOffsets[row / p.S]; }
  let pos = qOffset + row % p.S; // absolute position of this query
  let seqStart = (row / p.S) * p.Skv; // first key row of this sequence
  let first = seqStart + window_start(pos);
  let last = seqStart + min(pos, p.Skv - 1u); // last visible key row
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
    let w = online_softmax(&m, &l, cap(s));
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
  let first = (row / p.S) * p.S + window_start(row % p.S);
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
    let sc = cap(s);
        let ds = exp(sc - rowLse) * (dp - rowDelta) * cap_grad(sc);
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
  let last = (row / p.S) * p.S + window_end(row % p.S); // one past the last row that sees this key
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
      let sc = cap(s * p.scale);
      let pr = exp(sc - stats[st]);
      let ds = pr * (dp - stats[st + 1u]) * p.scale * cap_grad(sc);
      for (var d = 0u; d < p.D; d++) {
        dv[d] = fma(pr, dO[qb + d], dv[d]);
        dk[d] = fma(ds, q[qb + d], dk[d]);
      }
    }
  }
  for (var d = 0u; d < p.D; d++) { dK[kb + d] = dk[d]; dV[kb + d] = dv[d]; }
}

// ---- Tiled kernels for GPUs. A workgroup owns OWN consecutive rows (queries for the forward and dQ passes,
// keys for the dK/dV pass) of one (sequence, head) and walks the rows they interact with, staging TILE of
// them at a time through workgroup memory, where all OWN invocations share them: each staged element is
// read from storage once per workgroup instead of once per invocation. Same results as the direct entry
// points. Dispatch: x = row tiles, y = heads (query heads, or key/value heads for dK/dV), z = sequences.
override OWN: u32 = 64; // rows per workgroup (the workgroup size)
override TILE: u32 = 16; // rows per staged tile
override DK: u32 = 64; // head dim capacity of the staged tiles (>= D)
// Forward and dQ stage keys in tileA and values in tileB; dK/dV stages queries and output gradients, with
// their (log-sum-exp, delta) pairs in tileStats.
var<workgroup> tileA: array<f32, TILE * DK>;
var<workgroup> tileB: array<f32, TILE * DK>;
var<workgroup> tileStats: array<vec2f, TILE>;

// Stages rows r0 .. r0 + TILE - 1 of key/value head g of sequence b into tileA (K) and tileB (V); rows past
// the sequence read as zero. Every invocation of the workgroup must call it.
fn stage_kv(b: u32, g: u32, r0: u32, lid: u32) {
  for (var e = lid; e < TILE * p.D; e += OWN) {
    let j = r0 + e / p.D;
    var kv = vec2f(0.0);
    if (j < p.S) {
      let at = kv_at(b * p.S + j, g) + e % p.D;
      kv = vec2f(k[at], v[at]);
    }
    tileA[e] = kv.x;
    tileB[e] = kv.y;
  }
}

// The staged key range [start, end) that queries q0 .. q0 + OWN - 1 of the workgroup see (causal, window).
fn query_tile_keys(q0: u32) -> vec2u {
  return vec2u(window_start(q0), min(q0 + OWN, p.S));
}

@compute @workgroup_size(OWN)
fn attention_forward_tiled(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.z;
  let h = wid.y;
  let g = h / (p.nH / p.nKV);
  let i = wid.x * OWN + lid; // query position within the sequence
  let live = i < p.S;
  let row = b * p.S + min(i, p.S - 1u);
  var qr: array<f32, MAX_D>;
  var acc: array<f32, MAX_D>;
  let qb = q_at(row, h);
  for (var d = 0u; d < p.D; d++) { qr[d] = q[qb + d] * p.scale; acc[d] = 0.0; }
  var m = NEG_INF;
  var l = 0.0;
  let keys = query_tile_keys(wid.x * OWN);
  let jMin = window_start(i);
  for (var j0 = keys.x; j0 < keys.y; j0 += TILE) {
    stage_kv(b, g, j0, lid);
    workgroupBarrier();
    if (live) {
      for (var jj = 0u; jj < TILE; jj++) {
        let j = j0 + jj;
        if (j > i) { break; }
        if (j < jMin || !visible(row, b * p.S + j)) { continue; }
        var s = 0.0;
        for (var d = 0u; d < p.D; d++) { s = fma(qr[d], tileA[jj * p.D + d], s); }
        let w = online_softmax(&m, &l, cap(s));
        for (var d = 0u; d < p.D; d++) { acc[d] = fma(w.x, tileB[jj * p.D + d], acc[d] * w.y); }
      }
    }
    workgroupBarrier();
  }
  if (!live) { return; }
  let inv = 1.0 / l;
  for (var d = 0u; d < p.D; d++) { o[qb + d] = acc[d] * inv; }
  stats[2u * (row * p.nH + h)] = m + log(l);
}

// The tiled dQ pass for query position i of the tile from q0 (rows past the sequence are not `live`):
// acc = the sum over the keys it sees of P_ij (dO_i . v_j - delta_i) k_j, to be scaled. Every invocation
// of the workgroup must call it (it stages keys and values for all of them).
fn dq_tiled(acc: ptr<function, array<f32, MAX_D>>, b: u32, h: u32, q0: u32, i: u32, row: u32, live: bool, lid: u32, rowLse: f32, rowDelta: f32) {
  let g = h / (p.nH / p.nKV);
  let qb = q_at(row, h);
  var qr: array<f32, MAX_D>;
  var dor: array<f32, MAX_D>;
  for (var d = 0u; d < p.D; d++) { qr[d] = q[qb + d] * p.scale; dor[d] = dO[qb + d]; (*acc)[d] = 0.0; }
  let keys = query_tile_keys(q0);
  let jMin = window_start(i);
  for (var j0 = keys.x; j0 < keys.y; j0 += TILE) {
    stage_kv(b, g, j0, lid);
    workgroupBarrier();
    if (live) {
      for (var jj = 0u; jj < TILE; jj++) {
        let j = j0 + jj;
        if (j > i) { break; }
        if (j < jMin || !visible(row, b * p.S + j)) { continue; }
        var s = 0.0;
        var dp = 0.0;
        for (var d = 0u; d < p.D; d++) {
          s = fma(qr[d], tileA[jj * p.D + d], s);
          dp = fma(dor[d], tileB[jj * p.D + d], dp);
        }
        let sc = cap(s);
        let ds = exp(sc - rowLse) * (dp - rowDelta) * cap_grad(sc);
        for (var d = 0u; d < p.D; d++) { (*acc)[d] = fma(ds, tileA[jj * p.D + d], (*acc)[d]); }
      }
    }
    workgroupBarrier();
  }
}

// Tiled attention_backward_dq (needs attention_backward_prep's delta, like the direct form).
@compute @workgroup_size(OWN)
fn attention_backward_dq_tiled(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.z;
  let h = wid.y;
  let i = wid.x * OWN + lid;
  let live = i < p.S;
  let row = b * p.S + min(i, p.S - 1u);
  let st = 2u * (row * p.nH + h);
  var acc: array<f32, MAX_D>;
  dq_tiled(&acc, b, h, wid.x * OWN, i, row, live, lid, stats[st], stats[st + 1u]);
  if (!live) { return; }
  let qb = q_at(row, h);
  for (var d = 0u; d < p.D; d++) { dQ[qb + d] = acc[d] * p.scale; }
}

// The dK/dV pass: the workgroup owns OWN key rows of key/value head g and walks, for each query head
// sharing g, the query rows that see them, TILE at a time: stage_queries stages q and dO, the entry point
// their (log-sum-exp, delta) pairs into tileStats, and dkv_tile folds the staged rows into key row j's
// dk and dv (kr: its key, pre-scaled; vr: its value).
struct KeyRow { kr: array<f32, MAX_D>, vr: array<f32, MAX_D>, dk: array<f32, MAX_D>, dv: array<f32, MAX_D> }

fn key_row(b: u32, g: u32, row: u32) -> KeyRow {
  var r: KeyRow;
  let kb = kv_at(row, g);
  for (var d = 0u; d < p.D; d++) { r.kr[d] = k[kb + d] * p.scale; r.vr[d] = v[kb + d]; r.dk[d] = 0.0; r.dv[d] = 0.0; }
  return r;
}

// The query rows [start, end) that see any of the keys k0 .. k0 + OWN - 1 (causal, window).
fn key_tile_queries(k0: u32) -> vec2u {
  return vec2u(k0, window_end(min(k0 + OWN, p.S) - 1u));
}

fn stage_queries(b: u32, h: u32, i0: u32, lid: u32) {
  for (var e = lid; e < TILE * p.D; e += OWN) {
    let i = i0 + e / p.D;
    var qd = vec2f(0.0);
    if (i < p.S) {
      let at = q_at(b * p.S + i, h) + e % p.D;
      qd = vec2f(q[at], dO[at]);
    }
    tileA[e] = qd.x;
    tileB[e] = qd.y;
  }
}

fn dkv_tile(r: ptr<function, KeyRow>, b: u32, j: u32, row: u32, i0: u32) {
  let iEnd = window_end(j);
  for (var ii = 0u; ii < TILE; ii++) {
    let i = i0 + ii;
    if (i >= iEnd) { break; }
    if (i < j || !visible(b * p.S + i, row)) { continue; }
    var s = 0.0;
    var dp = 0.0;
    for (var d = 0u; d < p.D; d++) {
      s = fma(tileA[ii * p.D + d], (*r).kr[d], s);
      dp = fma(tileB[ii * p.D + d], (*r).vr[d], dp);
    }
    let sc = cap(s);
    let pr = exp(sc - tileStats[ii].x);
    let ds = pr * (dp - tileStats[ii].y) * p.scale * cap_grad(sc);
    for (var d = 0u; d < p.D; d++) {
      (*r).dv[d] = fma(pr, tileB[ii * p.D + d], (*r).dv[d]);
      (*r).dk[d] = fma(ds, tileA[ii * p.D + d], (*r).dk[d]);
    }
  }
}

// Row i of query head h of sequence b, clamped into the sequence (staged rows past it are never used).
fn stats_at(b: u32, h: u32, i: u32) -> u32 {
  return 2u * ((b * p.S + min(i, p.S - 1u)) * p.nH + h);
}

// Tiled attention_backward_dkv (needs attention_backward_prep's delta, like the direct form).
@compute @workgroup_size(OWN)
fn attention_backward_dkv_tiled(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.z;
  let g = wid.y;
  let j = wid.x * OWN + lid; // key position within the sequence
  let live = j < p.S;
  let row = b * p.S + min(j, p.S - 1u);
  var r = key_row(b, g, row);
  let queries = key_tile_queries(wid.x * OWN);
  let group = p.nH / p.nKV;
  for (var hh = 0u; hh < group; hh++) {
    let h = g * group + hh;
    for (var i0 = queries.x; i0 < queries.y; i0 += TILE) {
      stage_queries(b, h, i0, lid);
      for (var e = lid; e < TILE; e += OWN) {
        let st = stats_at(b, h, i0 + e);
        tileStats[e] = vec2f(stats[st], stats[st + 1u]);
      }
      workgroupBarrier();
      if (live) { dkv_tile(&r, b, j, row, i0); }
      workgroupBarrier();
    }
  }
  if (!live) { return; }
  let kb = kv_at(row, g);
  for (var d = 0u; d < p.D; d++) { dK[kb + d] = r.dk[d]; dV[kb + d] = r.dv[d]; }
}

// ---- The whole backward pass in one dispatch, where dQ, dK and dV lie in one buffer (dQKV, at offsets
// dqAt, dkAt and dvAt): workgroups y < nH take the dQ pass of query head y, the others the dK/dV pass of
// key/value head y - nH. Neither has the prep pass's delta, so each computes it from dO and O: the dQ pass
// for its own row, the dK/dV pass for each staged query row (TILE dot products per tile, shared by the
// workgroup's OWN keys).
@group(0) @binding(12) var<storage, read_write> dQKV: array<f32>;

fn row_delta(row: u32, h: u32) -> f32 {
  let base = q_at(row, h);
  var s = 0.0;
  for (var d = 0u; d < p.D; d++) { s = fma(dO[base + d], o[base + d], s); }
  return s;
}

@compute @workgroup_size(OWN)
fn attention_backward_tiled(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.z;
  if (wid.y < p.nH) {
    let h = wid.y;
    let i = wid.x * OWN + lid;
    let live = i < p.S;
    let row = b * p.S + min(i, p.S - 1u);
    var acc: array<f32, MAX_D>;
    dq_tiled(&acc, b, h, wid.x * OWN, i, row, live, lid, stats[2u * (row * p.nH + h)], row_delta(row, h));
    // No early return: the other branch's barriers must stay in uniform control flow.
    if (live) {
      let qb = p.dqAt + q_at(row, h);
      for (var d = 0u; d < p.D; d++) { dQKV[qb + d] = acc[d] * p.scale; }
    }
  } else {
    attention_backward_dkv_role(b, wid.y - p.nH, wid.x, lid);
  }
}

fn attention_backward_dkv_role(b: u32, g: u32, tile: u32, lid: u32) {
  let j = tile * OWN + lid;
  let live = j < p.S;
  let row = b * p.S + min(j, p.S - 1u);
  var r = key_row(b, g, row);
  let queries = key_tile_queries(tile * OWN);
  let group = p.nH / p.nKV;
  for (var hh = 0u; hh < group; hh++) {
    let h = g * group + hh;
    for (var i0 = queries.x; i0 < queries.y; i0 += TILE) {
      stage_queries(b, h, i0, lid);
      for (var e = lid; e < TILE; e += OWN) {
        let i = min(i0 + e, p.S - 1u);
        tileStats[e] = vec2f(stats[stats_at(b, h, i)], row_delta(b * p.S + i, h));
      }
      workgroupBarrier();
      if (live) { dkv_tile(&r, b, j, row, i0); }
      workgroupBarrier();
    }
  }
  if (!live) { return; }
  let kb = kv_at(row, g);
  for (var d = 0u; d < p.D; d++) { dQKV[p.dkAt + kb + d] = r.dk[d]; dQKV[p.dvAt + kb + d] = r.dv[d]; }
}
