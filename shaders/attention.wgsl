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
// Each invocation owns one (row, head) and keeps its D-vector in function-scope arrays: D is the override
// HD (loops of a trip count known when the pipeline is made), and the host sizes the arrays by setting
// MAX_D (a power of two, HD <= MAX_D <= 256) in the module's text. Every entry point binds at most 8
// storage buffers, WebGPU's default limit.
// Decoding (forward only): queries are Sq rows per sequence at absolute positions qOffset.., keys and
// values Skv rows per sequence (a KV cache); query i sees keys j <= qOffset + i. With SEQ_OFFSETS each
// sequence b has its own qOffset, seqOffsets[b] (a batch of prompts of different lengths). Training:
// Sq = Skv = S.
// Sliding window (window > 0, Mistral): query position i also needs i - j < window; 0 means unlimited.
// Soft-capping (softcap > 0, Gemma 2): each scaled score s becomes softcap * tanh(s / softcap) before the
// softmax; the backward passes multiply by its derivative, 1 - tanh^2, taken from the capped score.
// attention_blocked.wgsl holds the same kernels in another form (score blocks, for CPU implementations).
// #include lib/attention_common.wgsl

override WG: u32 = 64;
override SEQ_OFFSETS: bool = false;
const MAX_D = 256u; // sized by the host to the head dim
const MAX_D4 = MAX_D / 4u;

// #include lib/flat_index.wgsl

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
  var qr: array<vec4f, MAX_D4>;
  var acc: array<vec4f, MAX_D4>;
  let qb = q_at(row, h);
  for (var c = 0u; c < HD4; c++) { qr[c] = q4(qb, c) * p.scale; acc[c] = vec4f(0.0); }
  var m = NEG_INF;
  var l = 0.0;
  for (var j = first; j <= last; j++) {
    if (!visible(row, j)) { continue; }
    let kb = kv_at(j, g);
    var s = 0.0;
    for (var c = 0u; c < HD4; c++) { s += dot(qr[c], k4(kb, c)); }
    let w = online_softmax(&m, &l, cap(s));
    for (var c = 0u; c < HD4; c++) { acc[c] = fma(vec4f(w.x), v4(kb, c), acc[c] * w.y); }
  }
  let inv = 1.0 / l;
  for (var c = 0u; c < HD4; c++) {
    let out = acc[c] * inv;
    for (var e = 0u; e < 4u && 4u * c + e < HD; e++) { o[qb + 4u * c + e] = out[e]; }
  }
  stats[2u * t] = m + log(l);
}

// stats[row, h, 1] = delta.
@compute @workgroup_size(WG)
fn attention_backward_prep(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                           @builtin(local_invocation_index) lid: u32) {
  let t = flat_index(wid, nwg, lid, WG);
  if (t >= p.B * p.S * p.nH) { return; }
  stats[2u * t + 1u] = row_delta(t / p.nH, t % p.nH);
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
  var qr: array<vec4f, MAX_D4>;
  var dor: array<vec4f, MAX_D4>;
  var acc: array<vec4f, MAX_D4>;
  for (var c = 0u; c < HD4; c++) { qr[c] = q4(qb, c) * p.scale; dor[c] = dO4(qb, c); acc[c] = vec4f(0.0); }
  let rowLse = stats[2u * t];
  let rowDelta = stats[2u * t + 1u];
  for (var j = first; j <= row; j++) {
    if (!visible(row, j)) { continue; }
    let kb = kv_at(j, g);
    var s = 0.0;
    var dp = 0.0;
    for (var c = 0u; c < HD4; c++) {
      s += dot(qr[c], k4(kb, c));
      dp += dot(dor[c], v4(kb, c));
    }
    let sc = cap(s);
    let ds = exp(sc - rowLse) * (dp - rowDelta) * cap_grad(sc);
    for (var c = 0u; c < HD4; c++) { acc[c] = fma(vec4f(ds), k4(kb, c), acc[c]); }
  }
  for (var c = 0u; c < HD4; c++) {
    let out = acc[c] * p.scale;
    for (var e = 0u; e < 4u && 4u * c + e < HD; e++) { dQ[qb + 4u * c + e] = out[e]; }
  }
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
  var kr: array<vec4f, MAX_D4>;
  var vr: array<vec4f, MAX_D4>;
  var dk: array<vec4f, MAX_D4>;
  var dv: array<vec4f, MAX_D4>;
  for (var c = 0u; c < HD4; c++) { kr[c] = k4(kb, c); vr[c] = v4(kb, c); dk[c] = vec4f(0.0); dv[c] = vec4f(0.0); }
  for (var i = row; i < last; i++) {
    if (!visible(i, row)) { continue; }
    for (var hh = 0u; hh < group; hh++) {
      let h = g * group + hh;
      let qb = q_at(i, h);
      var s = 0.0;
      var dp = 0.0;
      for (var c = 0u; c < HD4; c++) {
        s += dot(q4(qb, c), kr[c]);
        dp += dot(dO4(qb, c), vr[c]);
      }
      let st = 2u * (i * p.nH + h);
      let sc = cap(s * p.scale);
      let pr = exp(sc - stats[st]);
      let ds = pr * (dp - stats[st + 1u]) * p.scale * cap_grad(sc);
      for (var c = 0u; c < HD4; c++) {
        dv[c] = fma(vec4f(pr), dO4(qb, c), dv[c]);
        dk[c] = fma(vec4f(ds), q4(qb, c), dk[c]);
      }
    }
  }
  for (var c = 0u; c < HD4; c++) {
    for (var e = 0u; e < 4u && 4u * c + e < HD; e++) { dK[kb + 4u * c + e] = dk[c][e]; dV[kb + 4u * c + e] = dv[c][e]; }
  }
}

// ---- Tiled kernels for GPUs. A workgroup owns OWN consecutive rows (queries for the forward and dQ passes,
// keys for the dK/dV pass) of one (sequence, head) and walks the rows they interact with, staging TILE of
// them at a time through workgroup memory, where all OWN invocations share them: each staged element is
// read from storage once per workgroup instead of once per invocation. Same results as the direct entry
// points. Dispatch: x = row tiles, y = heads (query heads, or key/value heads for dK/dV), z = sequences.
override OWN: u32 = 64; // rows per workgroup (the workgroup size)
override TILE: u32 = 4; // rows per staged tile, set by the host; the default fits MAX_D 256 in 16 KiB
// Forward and dQ stage keys in tileA and values in tileB; dK/dV stages queries and output gradients, with
// their (log-sum-exp, delta) pairs in tileStats.
var<workgroup> tileA: array<vec4f, TILE * MAX_D4>;
var<workgroup> tileB: array<vec4f, TILE * MAX_D4>;
var<workgroup> tileStats: array<vec2f, TILE>;

// Stages rows r0 .. r0 + TILE - 1 of key/value head g of sequence b into tileA (K) and tileB (V); rows past
// the sequence read as zero. Every invocation of the workgroup must call it.
fn stage_kv(b: u32, g: u32, r0: u32, lid: u32) {
  for (var e = lid; e < TILE * HD4; e += OWN) {
    let j = r0 + e / HD4;
    var kk = vec4f(0.0);
    var vv = vec4f(0.0);
    if (j < p.S) {
      let at = kv_at(b * p.S + j, g);
      kk = k4(at, e % HD4);
      vv = v4(at, e % HD4);
    }
    tileA[e] = kk;
    tileB[e] = vv;
  }
}

// The staged key range [start, end) that queries q0 .. q0 + OWN - 1 of the workgroup see (causal, window).
fn query_tile_keys(q0: u32) -> vec2u {
  return vec2u(window_start(q0), min(q0 + OWN, p.S));
}

// How many of the staged rows r0 .. r0 + TILE - 1 lie at or before position i (causal): the loops over a
// tile stop there.
fn causal_count(r0: u32, i: u32) -> u32 {
  return select(0u, min(TILE, i + 1u - r0), i >= r0);
}

@compute @workgroup_size(OWN)
fn attention_forward_tiled(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.z;
  let h = wid.y;
  let g = h / (p.nH / p.nKV);
  let i = wid.x * OWN + lid; // query position within the sequence
  let live = i < p.S;
  let row = b * p.S + min(i, p.S - 1u);
  var qr: array<vec4f, MAX_D4>;
  var acc: array<vec4f, MAX_D4>;
  let qb = q_at(row, h);
  for (var c = 0u; c < HD4; c++) { qr[c] = q4(qb, c) * p.scale; acc[c] = vec4f(0.0); }
  var m = NEG_INF;
  var l = 0.0;
  let keys = query_tile_keys(wid.x * OWN);
  let jMin = window_start(i);
  for (var j0 = keys.x; j0 < keys.y; j0 += TILE) {
    stage_kv(b, g, j0, lid);
    workgroupBarrier();
    let n = select(0u, causal_count(j0, i), live);
    for (var jj = 0u; jj < n; jj++) {
      let j = j0 + jj;
      if (j < jMin || !visible(row, b * p.S + j)) { continue; }
      var s = 0.0;
      for (var c = 0u; c < HD4; c++) { s += dot(qr[c], tileA[jj * HD4 + c]); }
      let w = online_softmax(&m, &l, cap(s));
      for (var c = 0u; c < HD4; c++) { acc[c] = fma(vec4f(w.x), tileB[jj * HD4 + c], acc[c] * w.y); }
    }
    workgroupBarrier();
  }
  if (!live) { return; }
  let inv = 1.0 / l;
  for (var c = 0u; c < HD4; c++) {
    let out = acc[c] * inv;
    for (var e = 0u; e < 4u && 4u * c + e < HD; e++) { o[qb + 4u * c + e] = out[e]; }
  }
  stats[2u * (row * p.nH + h)] = m + log(l);
}

// The tiled dQ pass for query position i of the tile from q0 (rows past the sequence are not `live`):
// acc = the sum over the keys it sees of P_ij (dO_i . v_j - delta_i) k_j, to be scaled. Every invocation
// of the workgroup must call it (it stages keys and values for all of them).
fn dq_tiled(acc: ptr<function, array<vec4f, MAX_D4>>, b: u32, h: u32, q0: u32, i: u32, row: u32, live: bool, lid: u32, rowLse: f32, rowDelta: f32) {
  let g = h / (p.nH / p.nKV);
  let qb = q_at(row, h);
  var qr: array<vec4f, MAX_D4>;
  var dor: array<vec4f, MAX_D4>;
  for (var c = 0u; c < HD4; c++) { qr[c] = q4(qb, c) * p.scale; dor[c] = dO4(qb, c); (*acc)[c] = vec4f(0.0); }
  let keys = query_tile_keys(q0);
  let jMin = window_start(i);
  for (var j0 = keys.x; j0 < keys.y; j0 += TILE) {
    stage_kv(b, g, j0, lid);
    workgroupBarrier();
    let n = select(0u, causal_count(j0, i), live);
    for (var jj = 0u; jj < n; jj++) {
      let j = j0 + jj;
      if (j < jMin || !visible(row, b * p.S + j)) { continue; }
      var s = 0.0;
      var dp = 0.0;
      for (var c = 0u; c < HD4; c++) {
        s += dot(qr[c], tileA[jj * HD4 + c]);
        dp += dot(dor[c], tileB[jj * HD4 + c]);
      }
      let sc = cap(s);
      let ds = exp(sc - rowLse) * (dp - rowDelta) * cap_grad(sc);
      for (var c = 0u; c < HD4; c++) { (*acc)[c] = fma(vec4f(ds), tileA[jj * HD4 + c], (*acc)[c]); }
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
  var acc: array<vec4f, MAX_D4>;
  dq_tiled(&acc, b, h, wid.x * OWN, i, row, live, lid, stats[st], stats[st + 1u]);
  if (!live) { return; }
  let qb = q_at(row, h);
  for (var c = 0u; c < HD4; c++) {
    let out = acc[c] * p.scale;
    for (var e = 0u; e < 4u && 4u * c + e < HD; e++) { dQ[qb + 4u * c + e] = out[e]; }
  }
}

// The dK/dV pass: the workgroup owns OWN key rows of key/value head g and walks, for each query head
// sharing g, the query rows that see them, TILE at a time: stage_queries stages q and dO, the entry point
// their (log-sum-exp, delta) pairs into tileStats, and dkv_tile folds the staged rows into key row j's
// dk and dv (kr: its key, pre-scaled; vr: its value).
struct KeyRow { kr: array<vec4f, MAX_D4>, vr: array<vec4f, MAX_D4>, dk: array<vec4f, MAX_D4>, dv: array<vec4f, MAX_D4> }

fn key_row(b: u32, g: u32, row: u32) -> KeyRow {
  var r: KeyRow;
  let kb = kv_at(row, g);
  for (var c = 0u; c < HD4; c++) { r.kr[c] = k4(kb, c) * p.scale; r.vr[c] = v4(kb, c); r.dk[c] = vec4f(0.0); r.dv[c] = vec4f(0.0); }
  return r;
}

// The query rows [start, end) that see any of the keys k0 .. k0 + OWN - 1 (causal, window).
fn key_tile_queries(k0: u32) -> vec2u {
  return vec2u(k0, window_end(min(k0 + OWN, p.S) - 1u));
}

fn stage_queries(b: u32, h: u32, i0: u32, lid: u32) {
  for (var e = lid; e < TILE * HD4; e += OWN) {
    let i = i0 + e / HD4;
    var qq = vec4f(0.0);
    var dd = vec4f(0.0);
    if (i < p.S) {
      let at = q_at(b * p.S + i, h);
      qq = q4(at, e % HD4);
      dd = dO4(at, e % HD4);
    }
    tileA[e] = qq;
    tileB[e] = dd;
  }
}

fn dkv_tile(r: ptr<function, KeyRow>, b: u32, j: u32, row: u32, i0: u32) {
  let iEnd = window_end(j);
  // Staged rows before the key (i < j) do not see it; those from iEnd on are past its window.
  let first = select(0u, j - i0, j > i0);
  let end = min(TILE, select(0u, iEnd - i0, iEnd > i0));
  for (var ii = first; ii < end; ii++) {
    if (!visible(b * p.S + i0 + ii, row)) { continue; }
    var s = 0.0;
    var dp = 0.0;
    for (var c = 0u; c < HD4; c++) {
      s += dot(tileA[ii * HD4 + c], (*r).kr[c]);
      dp += dot(tileB[ii * HD4 + c], (*r).vr[c]);
    }
    let sc = cap(s);
    let pr = exp(sc - tileStats[ii].x);
    let ds = pr * (dp - tileStats[ii].y) * p.scale * cap_grad(sc);
    for (var c = 0u; c < HD4; c++) {
      (*r).dv[c] = fma(vec4f(pr), tileB[ii * HD4 + c], (*r).dv[c]);
      (*r).dk[c] = fma(vec4f(ds), tileA[ii * HD4 + c], (*r).dk[c]);
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
  for (var c = 0u; c < HD4; c++) {
    for (var e = 0u; e < 4u && 4u * c + e < HD; e++) { dK[kb + 4u * c + e] = r.dk[c][e]; dV[kb + 4u * c + e] = r.dv[c][e]; }
  }
}

// ---- The whole backward pass in one dispatch, where dQ, dK and dV lie in one buffer (dQKV, at offsets
// dqAt, dkAt and dvAt): workgroups y < nH take the dQ pass of query head y, the others the dK/dV pass of
// key/value head y - nH. Neither has the prep pass's delta, so each computes it from dO and O: the dQ pass
// for its own row, the dK/dV pass for each staged query row (TILE dot products per tile, shared by the
// workgroup's OWN keys).
@compute @workgroup_size(OWN)
fn attention_backward_tiled(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.z;
  if (wid.y < p.nH) {
    let h = wid.y;
    let i = wid.x * OWN + lid;
    let live = i < p.S;
    let row = b * p.S + min(i, p.S - 1u);
    var acc: array<vec4f, MAX_D4>;
    dq_tiled(&acc, b, h, wid.x * OWN, i, row, live, lid, stats[2u * (row * p.nH + h)], row_delta(row, h));
    // No early return: the other branch's barriers must stay in uniform control flow.
    if (live) {
      let qb = p.dqAt + q_at(row, h);
      for (var c = 0u; c < HD4; c++) {
        let out = acc[c] * p.scale;
        for (var e = 0u; e < 4u && 4u * c + e < HD; e++) { dQKV[qb + 4u * c + e] = out[e]; }
      }
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
  for (var c = 0u; c < HD4; c++) {
    for (var e = 0u; e < 4u && 4u * c + e < HD; e++) { dQKV[p.dkAt + kb + 4u * c + e] = r.dk[c][e]; dQKV[p.dvAt + kb + 4u * c + e] = r.dv[c][e]; }
  }
}
