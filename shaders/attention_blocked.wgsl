// Causal attention in score blocks, for CPU implementations: the same kernels as attention.wgsl's (its
// header gives the layout, masks and soft-capping), for training only (no KV cache). A workgroup owns
// BLOCK query rows (the forward and dQ passes) or key rows (dK/dV) and walks the rows they interact with
// BLOCK at a time. A block's BLOCK x BLOCK scores are computed as a matmul is, each 4 x 4 of them by one
// invocation with q, k, v and dO read straight from storage (caches do the staging), and held in
// workgroup memory; the products with head rows (P V, dS K, P^T dO, dS^T Q) are again register blocks: 4
// rows by NQ quads of the head dim (quads cg, cg + CG, .., column group cg of CG). An invocation's values
// live in variables, never in arrays indexed by a loop's counter, which SwiftShader keeps in memory. On
// SwiftShader this form measured 0.6 to 0.75 of the tiled kernels' time forward and 0.75 to 0.92 backward
// (GPT-2 d128, Llama d512).
// #include lib/attention_common.wgsl

const BLOCK = 32u;
const BLOCK_PAD = 33u; // row stride of the score blocks
override NQ: u32 = 1u; // quads per invocation in the products with head rows, 1 or 2
override CG: u32 = (HD4 + NQ - 1u) / NQ; // column groups
override WGB: u32 = 8u * CG; // the workgroup: BLOCK / 4 row groups of 4 rows by CG column groups
var<workgroup> blockScores: array<f32, BLOCK * BLOCK_PAD>;
var<workgroup> blockGrads: array<f32, BLOCK * BLOCK_PAD>;
// Per row of the block: running max and sum, and this block's correction factor (forward); log-sum-exp
// and delta (backward).
var<workgroup> blockRows: array<vec4f, BLOCK>;

// Elements at .. at + 3: the head row quad at `at` where the head dim is a multiple of 4.
fn q4at(at: u32) -> vec4f { return vec4f(q[at], q[at + 1u], q[at + 2u], q[at + 3u]); }
fn k4at(at: u32) -> vec4f { return vec4f(k[at], k[at + 1u], k[at + 2u], k[at + 3u]); }
fn v4at(at: u32) -> vec4f { return vec4f(v[at], v[at + 1u], v[at + 2u], v[at + 3u]); }

// The 4 x 4 scores q_a . k_e (unscaled) of query rows and key rows starting at elements qAt and kAt.
fn score_block(qAt: vec4u, kAt: vec4u) -> mat4x4f {
  var s = mat4x4f();
  for (var c = 0u; c < HD4; c++) {
    var x: mat4x4f;
    var y: mat4x4f;
    if (HD % 4u == 0u) {
      x = mat4x4f(q4at(qAt.x + 4u * c), q4at(qAt.y + 4u * c), q4at(qAt.z + 4u * c), q4at(qAt.w + 4u * c));
      y = mat4x4f(k4at(kAt.x + 4u * c), k4at(kAt.y + 4u * c), k4at(kAt.z + 4u * c), k4at(kAt.w + 4u * c));
    } else {
      x = mat4x4f(q4(qAt.x, c), q4(qAt.y, c), q4(qAt.z, c), q4(qAt.w, c));
      y = mat4x4f(k4(kAt.x, c), k4(kAt.y, c), k4(kAt.z, c), k4(kAt.w, c));
    }
    s = add_dots(s, x, y);
  }
  return s;
}

// Whether query position i sees key position j of sequence b; branch-free (& rather than &&, indices
// clamped).
fn sees(b: u32, i: u32, j: u32) -> bool {
  var seen = (j <= i) & (i < p.S) & (j >= window_start(i));
  if (SEGMENTS) { seen = seen & (segments[b * p.S + min(i, p.S - 1u)] == segments[b * p.S + min(j, p.S - 1u)]); }
  return seen;
}

// The capped, scaled scores of query i and keys j .. j + 3 (NEG_INF where unseen) from row sRow of a block.
fn masked_scores(b: u32, i: u32, j: u32, sRow: vec4f) -> vec4f {
  return vec4f(select(NEG_INF, cap(sRow.x * p.scale), sees(b, i, j)), select(NEG_INF, cap(sRow.y * p.scale), sees(b, i, j + 1u)),
               select(NEG_INF, cap(sRow.z * p.scale), sees(b, i, j + 2u)), select(NEG_INF, cap(sRow.w * p.scale), sees(b, i, j + 3u)));
}

// How many keys of the block from j0 lie at or before query position i: the causal part of its row, which
// the products with head rows walk. For the last row of a group of four it is a multiple of 4, blocks
// starting at multiples of BLOCK (keys past the sequence are masked: zero weights).
fn seen_keys(i: u32, j0: u32) -> u32 {
  return select(0u, min(BLOCK, i + 1u - j0), i >= j0);
}

// The key blocks that query rows i0 .. i0 + BLOCK - 1 see: [start, end), start a multiple of BLOCK.
fn key_blocks(i0: u32) -> vec2u {
  let first = window_start(i0);
  return vec2u(first - first % BLOCK, min(i0 + BLOCK, p.S));
}

// Element offset of head row j of a sequence (clamped into it) at head h of n heads.
fn row_at(seq: u32, j: u32, h: u32, n: u32) -> u32 { return ((seq + min(j, p.S - 1u)) * n + h) * HD; }

fn v_quad(at: u32, c: u32) -> vec4f { if (HD % 4u == 0u) { return v4at(at + 4u * c); } return v4(at, c); }

fn put_block_row(at: u32, x: vec4f) {
  blockScores[at] = x.x; blockScores[at + 1u] = x.y; blockScores[at + 2u] = x.z; blockScores[at + 3u] = x.w;
}

// Rows r, r + 1, r + 2, r + 3 of column jj of the score block.
fn block_column(r: u32, jj: u32) -> vec4f {
  let at = r * BLOCK_PAD + jj;
  return vec4f(blockScores[at], blockScores[at + BLOCK_PAD], blockScores[at + 2u * BLOCK_PAD], blockScores[at + 3u * BLOCK_PAD]);
}

// acc[a] += w[a] * x for the four rows a of a register block.
fn add_outer(acc: mat4x4f, w: vec4f, x: vec4f) -> mat4x4f {
  return mat4x4f(fma(vec4f(w.x), x, acc[0]), fma(vec4f(w.y), x, acc[1]), fma(vec4f(w.z), x, acc[2]), fma(vec4f(w.w), x, acc[3]));
}

fn scale_rows(acc: mat4x4f, f: vec4f) -> mat4x4f {
  return mat4x4f(acc[0] * f.x, acc[1] * f.y, acc[2] * f.z, acc[3] * f.w);
}

// The four head-row offsets of rows r .. r + 3 of a sequence (clamped into it) at head h of n heads.
fn rows_at(seq: u32, r: u32, h: u32, n: u32) -> vec4u {
  let rows = vec4u(seq) + min(vec4u(r) + vec4u(0u, 1u, 2u, 3u), vec4u(p.S - 1u));
  return (rows * n + h) * HD;
}

// Stores row a of a register block (quad c of the head row at `at`), the part inside the head dim.
fn store_o(at: u32, c: u32, x: vec4f) {
  for (var e = 0u; e < 4u && 4u * c + e < HD; e++) { o[at + 4u * c + e] = x[e]; }
}

// The register block invocation lid owns in the products with head rows: rows r0 .. r0 + 3 of the block,
// quads cg and c1 = cg + CG; `live` unless its column group lies past HD4 (the last of the 8 CG may).
struct OwnedBlock { r0: u32, cg: u32, c1: u32, live: bool }

fn owned_block(lid: u32) -> OwnedBlock {
  let r0 = 4u * (lid / CG);
  let cg = lid % CG;
  return OwnedBlock(r0, cg, cg + CG, r0 < BLOCK && cg < HD4);
}

@compute @workgroup_size(WGB)
fn attention_forward_blocked(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.z;
  let h = wid.y;
  let g = h / (p.nH / p.nKV);
  let i0 = wid.x * BLOCK;
  let seq = b * p.S;
  let own = owned_block(lid);
  let r0 = own.r0;
  let cg = own.cg;
  let c1 = own.c1;
  let live = own.live;
  var acc0 = mat4x4f();
  var acc1 = mat4x4f();
  for (var r = lid; r < BLOCK; r += WGB) { blockRows[r] = vec4f(NEG_INF, 0.0, 1.0, 0.0); }
  let keys = key_blocks(i0);
  for (var j0 = keys.x; j0 < keys.y; j0 += BLOCK) {
    // Scores: 64 register blocks of 4 x 4 (query rows 4 (t / 8) .., keys 4 (t % 8) ..).
    for (var t = lid; t < 64u; t += WGB) {
      let qr = 4u * (t / 8u);
      let kc = 4u * (t % 8u);
      // Keys past all four queries: never read (see the loops below).
      if (j0 + kc > i0 + qr + 3u) { continue; }
      let s = score_block(rows_at(seq, i0 + qr, h, p.nH), rows_at(seq, j0 + kc, g, p.nKV));
      // Written out, not looped: a matrix column indexed by a loop's counter lives in memory.
      put_block_row(qr * BLOCK_PAD + kc, masked_scores(b, i0 + qr, j0 + kc, s[0]));
      put_block_row((qr + 1u) * BLOCK_PAD + kc, masked_scores(b, i0 + qr + 1u, j0 + kc, s[1]));
      put_block_row((qr + 2u) * BLOCK_PAD + kc, masked_scores(b, i0 + qr + 2u, j0 + kc, s[2]));
      put_block_row((qr + 3u) * BLOCK_PAD + kc, masked_scores(b, i0 + qr + 3u, j0 + kc, s[3]));
    }
    workgroupBarrier();
    // Online softmax over each row's block of scores: weights in place, the correction in blockRows.
    for (var r = lid; r < BLOCK; r += WGB) {
      let at = r * BLOCK_PAD;
      let m = blockRows[r].x;
      var top = m;
      // The keys up to the last one the row's group of four sees (causal).
      let end = seen_keys(i0 + (r | 3u), j0);
      for (var e = 0u; e < end; e++) { top = max(top, blockScores[at + e]); }
      var sum = 0.0;
      for (var e = 0u; e < end; e++) {
        let sc = blockScores[at + e];
        let w = select(0.0, exp(sc - top), sc > NEG_INF);
        blockScores[at + e] = w;
        sum += w;
      }
      let correction = exp(m - top);
      blockRows[r] = vec4f(top, blockRows[r].y * correction + sum, correction, 0.0);
    }
    workgroupBarrier();
    if (live) {
      let corr = vec4f(blockRows[r0].z, blockRows[r0 + 1u].z, blockRows[r0 + 2u].z, blockRows[r0 + 3u].z);
      acc0 = scale_rows(acc0, corr);
      if (NQ > 1u) { acc1 = scale_rows(acc1, corr); }
      // Four keys a step: loop overhead is significant for CPU implementations' compilers.
      let n = seen_keys(i0 + r0 + 3u, j0);
      for (var jj = 0u; jj < n; jj += 4u) {
        let w0 = block_column(r0, jj);
        let w1 = block_column(r0, jj + 1u);
        let w2 = block_column(r0, jj + 2u);
        let w3 = block_column(r0, jj + 3u);
        let a0 = row_at(seq, j0 + jj, g, p.nKV);
        let a1 = row_at(seq, j0 + jj + 1u, g, p.nKV);
        let a2 = row_at(seq, j0 + jj + 2u, g, p.nKV);
        let a3 = row_at(seq, j0 + jj + 3u, g, p.nKV);
        acc0 = add_outer(add_outer(add_outer(add_outer(acc0, w0, v_quad(a0, cg)), w1, v_quad(a1, cg)), w2, v_quad(a2, cg)), w3, v_quad(a3, cg));
        if (NQ > 1u) { acc1 = add_outer(add_outer(add_outer(add_outer(acc1, w0, v4(a0, c1)), w1, v4(a1, c1)), w2, v4(a2, c1)), w3, v4(a3, c1)); }
      }
    }
    workgroupBarrier();
  }
  if (live) {
    let oAt = rows_at(seq, i0 + r0, h, p.nH);
    let inv = 1.0 / vec4f(blockRows[r0].y, blockRows[r0 + 1u].y, blockRows[r0 + 2u].y, blockRows[r0 + 3u].y);
    let out0 = scale_rows(acc0, inv);
    let out1 = scale_rows(acc1, inv);
    // Rows past the sequence are clamped onto its last row: only rows inside it store.
    let n = min(4u, p.S - min(p.S, i0 + r0));
    if (n > 0u) { store_o(oAt.x, cg, out0[0]); if (NQ > 1u && c1 < HD4) { store_o(oAt.x, c1, out1[0]); } }
    if (n > 1u) { store_o(oAt.y, cg, out0[1]); if (NQ > 1u && c1 < HD4) { store_o(oAt.y, c1, out1[1]); } }
    if (n > 2u) { store_o(oAt.z, cg, out0[2]); if (NQ > 1u && c1 < HD4) { store_o(oAt.z, c1, out1[2]); } }
    if (n > 3u) { store_o(oAt.w, cg, out0[3]); if (NQ > 1u && c1 < HD4) { store_o(oAt.w, c1, out1[3]); } }
  }
  for (var r = lid; r < BLOCK; r += WGB) {
    if (i0 + r < p.S) { stats[2u * ((seq + i0 + r) * p.nH + h)] = blockRows[r].x + log(blockRows[r].y); }
  }
}

fn dO4at(at: u32) -> vec4f { return vec4f(dO[at], dO[at + 1u], dO[at + 2u], dO[at + 3u]); }

// acc[a][e] += x[a] . y[e].
fn add_dots(acc: mat4x4f, x: mat4x4f, y: mat4x4f) -> mat4x4f {
  return acc + mat4x4f(vec4f(dot(x[0], y[0]), dot(x[0], y[1]), dot(x[0], y[2]), dot(x[0], y[3])),
                       vec4f(dot(x[1], y[0]), dot(x[1], y[1]), dot(x[1], y[2]), dot(x[1], y[3])),
                       vec4f(dot(x[2], y[0]), dot(x[2], y[1]), dot(x[2], y[2]), dot(x[2], y[3])),
                       vec4f(dot(x[3], y[0]), dot(x[3], y[1]), dot(x[3], y[2]), dot(x[3], y[3])));
}

// For the backward pass: the 4 x 4 scores q_a . k_e (unscaled) and dO_a . v_e of query rows at qAt and
// key rows at kAt (dO and v share q's and k's layouts). dO . v sums the quads in row_delta's order.
struct ScoresAndGrads { s: mat4x4f, dp: mat4x4f }

fn scores_and_grads(qAt: vec4u, kAt: vec4u) -> ScoresAndGrads {
  var r: ScoresAndGrads;
  for (var c = 0u; c < HD4; c++) {
    if (HD % 4u == 0u) {
      let x = qAt + vec4u(4u * c);
      let y = kAt + vec4u(4u * c);
      r.s = add_dots(r.s, mat4x4f(q4at(x.x), q4at(x.y), q4at(x.z), q4at(x.w)), mat4x4f(k4at(y.x), k4at(y.y), k4at(y.z), k4at(y.w)));
      r.dp = add_dots(r.dp, mat4x4f(dO4at(x.x), dO4at(x.y), dO4at(x.z), dO4at(x.w)), mat4x4f(v4at(y.x), v4at(y.y), v4at(y.z), v4at(y.w)));
    } else {
      r.s = add_dots(r.s, mat4x4f(q4(qAt.x, c), q4(qAt.y, c), q4(qAt.z, c), q4(qAt.w, c)), mat4x4f(k4(kAt.x, c), k4(kAt.y, c), k4(kAt.z, c), k4(kAt.w, c)));
      r.dp = add_dots(r.dp, mat4x4f(dO4(qAt.x, c), dO4(qAt.y, c), dO4(qAt.z, c), dO4(qAt.w, c)), mat4x4f(v4(kAt.x, c), v4(kAt.y, c), v4(kAt.z, c), v4(kAt.w, c)));
    }
  }
  return r;
}

// Probability and score gradient of query position i (log-sum-exp and delta in `row`) and key position j
// from their unscaled score s and dO_i . v_j; zero where i does not see j.
fn prob_and_grad(b: u32, i: u32, j: u32, s: f32, dp: f32, row: vec4f) -> vec2f {
  let sc = cap(s * p.scale);
  let pr = exp(sc - row.x);
  return select(vec2f(0.0), vec2f(pr, pr * (dp - row.y) * cap_grad(sc)), sees(b, i, j));
}

// Score gradients of query i and keys j .. j + 3 (the dQ pass's block row).
fn grads_row(b: u32, i: u32, j: u32, s: vec4f, dp: vec4f, row: vec4f) -> vec4f {
  return vec4f(prob_and_grad(b, i, j, s.x, dp.x, row).y, prob_and_grad(b, i, j + 1u, s.y, dp.y, row).y,
               prob_and_grad(b, i, j + 2u, s.z, dp.z, row).y, prob_and_grad(b, i, j + 3u, s.w, dp.w, row).y);
}

// Probabilities and scaled score gradients of query i and keys j .. j + 3 into rows j .. j + 3 of the dK/dV
// pass's blocks (keys by queries), from element `at` of the first.
fn put_key_columns(b: u32, i: u32, j: u32, at: u32, s: vec4f, dp: vec4f, row: vec4f) {
  let p0 = prob_and_grad(b, i, j, s.x, dp.x, row);
  let p1 = prob_and_grad(b, i, j + 1u, s.y, dp.y, row);
  let p2 = prob_and_grad(b, i, j + 2u, s.z, dp.z, row);
  let p3 = prob_and_grad(b, i, j + 3u, s.w, dp.w, row);
  blockScores[at] = p0.x; blockScores[at + BLOCK_PAD] = p1.x; blockScores[at + 2u * BLOCK_PAD] = p2.x; blockScores[at + 3u * BLOCK_PAD] = p3.x;
  blockGrads[at] = p0.y * p.scale; blockGrads[at + BLOCK_PAD] = p1.y * p.scale; blockGrads[at + 2u * BLOCK_PAD] = p2.y * p.scale; blockGrads[at + 3u * BLOCK_PAD] = p3.y * p.scale;
}

// The two-pass backward (KEEP_SCORES): the dQ pass keeps every score's probability and scaled gradient in
// dQKV, from element keptAt, [B, nH, S, S] each, gradients after probabilities, and 4 spare elements after
// both; the dK/dV pass reads them instead of computing them again.
override KEEP_SCORES: bool = false;

fn kept_plane() -> u32 { return p.B * p.nH * p.S * p.S; }

// Keeps the probability and scaled gradient of score (i, j) of head h of sequence b; a score outside the
// sequence goes to the spare elements, which nothing reads as a score.
fn keep(b: u32, h: u32, i: u32, j: u32, pg: vec2f) {
  let inside = (i < p.S) & (j < p.S);
  let at = p.keptAt + ((b * p.nH + h) * p.S + i) * p.S + j;
  let spare = p.keptAt + 2u * kept_plane();
  dQKV[select(spare, at, inside)] = pg.x;
  dQKV[select(spare, at + kept_plane(), inside)] = pg.y * p.scale;
}

// grads_row, keeping each score's probability and scaled gradient for the dK/dV pass.
fn grads_row_kept(b: u32, h: u32, i: u32, j: u32, s: vec4f, dp: vec4f, row: vec4f) -> vec4f {
  let p0 = prob_and_grad(b, i, j, s.x, dp.x, row);
  let p1 = prob_and_grad(b, i, j + 1u, s.y, dp.y, row);
  let p2 = prob_and_grad(b, i, j + 2u, s.z, dp.z, row);
  let p3 = prob_and_grad(b, i, j + 3u, s.w, dp.w, row);
  keep(b, h, i, j, p0); keep(b, h, i, j + 1u, p1); keep(b, h, i, j + 2u, p2); keep(b, h, i, j + 3u, p3);
  return vec4f(p0.y, p1.y, p2.y, p3.y);
}

// Score gradients of query i and keys j .. j + 3 of head h, kept where the two-pass backward runs.
fn dq_grads_row(b: u32, h: u32, i: u32, j: u32, s: vec4f, dp: vec4f, row: vec4f) -> vec4f {
  if (KEEP_SCORES) { return grads_row_kept(b, h, i, j, s, dp, row); }
  return grads_row(b, i, j, s, dp, row);
}

// Quad c of head row `at` of k, q or dO, the head dim a multiple of 4 or not.
fn k_quad(at: u32, c: u32) -> vec4f { if (HD % 4u == 0u) { return k4at(at + 4u * c); } return k4(at, c); }
fn q_quad(at: u32, c: u32) -> vec4f { if (HD % 4u == 0u) { return q4at(at + 4u * c); } return q4(at, c); }
fn dO_quad(at: u32, c: u32) -> vec4f { if (HD % 4u == 0u) { return dO4at(at + 4u * c); } return dO4(at, c); }

// Stores row x of a register block, the part inside the head dim, into dQKV at element at + 4 c.
fn store_grad(at: u32, c: u32, x: vec4f) {
  for (var e = 0u; e < 4u && 4u * c + e < HD; e++) { dQKV[at + 4u * c + e] = x[e]; }
}

// Stores a register block of rows r .. r + 3 (offsets `at`, those inside the sequence) at quads c0 and c1.
fn store_grad_block(at: vec4u, r: u32, c0: u32, c1: u32, x0: mat4x4f, x1: mat4x4f) {
  let n = min(4u, p.S - min(p.S, r));
  for (var a = 0u; a < n; a++) {
    store_grad(at[a], c0, x0[a]);
    if (NQ > 1u && c1 < HD4) { store_grad(at[a], c1, x1[a]); }
  }
}

// The whole backward pass in one dispatch, gradients in one buffer (as attention_backward_tiled):
// workgroups y < nH take the dQ pass of query head y, the others the dK/dV pass of key/value head y - nH.
@compute @workgroup_size(WGB)
fn attention_backward_blocked(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  if (wid.y < p.nH) { dq_blocked(wid.z, wid.y, wid.x * BLOCK, lid); } else { dkv_blocked(wid.z, wid.y - p.nH, wid.x * BLOCK, lid); }
}

// The two-pass backward's first pass: dQ, keeping every score's probability and gradient (KEEP_SCORES).
@compute @workgroup_size(WGB)
fn attention_backward_dq_keeping(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  dq_blocked(wid.z, wid.y, wid.x * BLOCK, lid);
}

// Its second pass: dK and dV of key rows j .. j + 3 of key/value head g per invocation (its register
// blocks), sums over the query rows that see them of the kept P_ij dO_i and scale * dS_ij q_i, in the order
// dkv_blocked takes them. No workgroup memory and no barriers: each invocation reads its four keys' scores
// of each query row as one quad, and the head rows straight from storage.
@compute @workgroup_size(WGB)
fn attention_backward_dkv_kept(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let own = owned_block(lid);
  let j = wid.x * BLOCK + own.r0;
  if (!own.live || j >= p.S) { return; }
  let b = wid.z;
  let g = wid.y;
  let seq = b * p.S;
  let plane = kept_plane();
  var dk0 = mat4x4f();
  var dk1 = mat4x4f();
  var dv0 = mat4x4f();
  var dv1 = mat4x4f();
  let group = p.nH / p.nKV;
  // Queries before j see none of the four keys; those from j to the window's end see at least one, and
  // the dQ pass wrote their quads of scores whole (zero where a query does not see a key).
  let end = window_end(min(j + 3u, p.S - 1u));
  for (var hh = 0u; hh < group; hh++) {
    let h = g * group + hh;
    for (var i = j; i < end; i++) {
      let at = p.keptAt + ((b * p.nH + h) * p.S + i) * p.S + j;
      let pr = vec4f(dQKV[at], dQKV[at + 1u], dQKV[at + 2u], dQKV[at + 3u]);
      let ds = vec4f(dQKV[at + plane], dQKV[at + plane + 1u], dQKV[at + plane + 2u], dQKV[at + plane + 3u]);
      let qAt = row_at(seq, i, h, p.nH);
      dv0 = add_outer(dv0, pr, dO_quad(qAt, own.cg));
      dk0 = add_outer(dk0, ds, q_quad(qAt, own.cg));
      if (NQ > 1u) { dv1 = add_outer(dv1, pr, dO4(qAt, own.c1)); dk1 = add_outer(dk1, ds, q4(qAt, own.c1)); }
    }
  }
  let at = rows_at(seq, j, g, p.nKV);
  store_grad_block(vec4u(p.dkAt) + at, j, own.cg, own.c1, dk0, dk1);
  store_grad_block(vec4u(p.dvAt) + at, j, own.cg, own.c1, dv0, dv1);
}

// The (log-sum-exp, delta) pairs of query rows i0 .. i0 + BLOCK - 1 of head h into blockRows.
fn stage_row_stats(seq: u32, h: u32, i0: u32, lid: u32) {
  for (var r = lid; r < BLOCK; r += WGB) {
    let row = seq + min(i0 + r, p.S - 1u);
    blockRows[r] = vec4f(stats[2u * (row * p.nH + h)], row_delta(row, h), 0.0, 0.0);
  }
}

// dQ of query rows i0 .. i0 + BLOCK - 1 of head h: scale * the sum over seen keys j of dS_ij k_j.
fn dq_blocked(b: u32, h: u32, i0: u32, lid: u32) {
  let g = h / (p.nH / p.nKV);
  let seq = b * p.S;
  let own = owned_block(lid);
  let r0 = own.r0;
  let cg = own.cg;
  let c1 = own.c1;
  let live = own.live;
  var acc0 = mat4x4f();
  var acc1 = mat4x4f();
  stage_row_stats(seq, h, i0, lid);
  workgroupBarrier();
  let keys = key_blocks(i0);
  for (var j0 = keys.x; j0 < keys.y; j0 += BLOCK) {
    for (var t = lid; t < 64u; t += WGB) {
      let qr = 4u * (t / 8u);
      let kc = 4u * (t % 8u);
      if (j0 + kc > i0 + qr + 3u) { continue; } // never read
      let sg = scores_and_grads(rows_at(seq, i0 + qr, h, p.nH), rows_at(seq, j0 + kc, g, p.nKV));
      put_block_row(qr * BLOCK_PAD + kc, dq_grads_row(b, h, i0 + qr, j0 + kc, sg.s[0], sg.dp[0], blockRows[qr]));
      put_block_row((qr + 1u) * BLOCK_PAD + kc, dq_grads_row(b, h, i0 + qr + 1u, j0 + kc, sg.s[1], sg.dp[1], blockRows[qr + 1u]));
      put_block_row((qr + 2u) * BLOCK_PAD + kc, dq_grads_row(b, h, i0 + qr + 2u, j0 + kc, sg.s[2], sg.dp[2], blockRows[qr + 2u]));
      put_block_row((qr + 3u) * BLOCK_PAD + kc, dq_grads_row(b, h, i0 + qr + 3u, j0 + kc, sg.s[3], sg.dp[3], blockRows[qr + 3u]));
    }
    workgroupBarrier();
    if (live) {
      let n = seen_keys(i0 + r0 + 3u, j0);
      for (var jj = 0u; jj < n; jj++) {
        let w = block_column(r0, jj);
        let kAt = row_at(seq, j0 + jj, g, p.nKV);
        acc0 = add_outer(acc0, w, k_quad(kAt, cg));
        if (NQ > 1u) { acc1 = add_outer(acc1, w, k4(kAt, c1)); }
      }
    }
    workgroupBarrier();
  }
  if (live) {
    store_grad_block(vec4u(p.dqAt) + rows_at(seq, i0 + r0, h, p.nH), i0 + r0, cg, c1, acc0 * p.scale, acc1 * p.scale);
  }
}

// dV and dK of key rows j0 .. j0 + BLOCK - 1 of key/value head g: the sums over the query rows i that see
// key j, of every query head sharing g, of P_ij dO_i and scale * dS_ij q_i.
fn dkv_blocked(b: u32, g: u32, j0: u32, lid: u32) {
  let seq = b * p.S;
  let own = owned_block(lid);
  let r0 = own.r0;
  let cg = own.cg;
  let c1 = own.c1;
  let live = own.live;
  var dk0 = mat4x4f();
  var dk1 = mat4x4f();
  var dv0 = mat4x4f();
  var dv1 = mat4x4f();
  let group = p.nH / p.nKV;
  let queries = key_tile_queries_of(j0);
  for (var hh = 0u; hh < group; hh++) {
    let h = g * group + hh;
    for (var i0 = queries.x; i0 < queries.y; i0 += BLOCK) {
      stage_row_stats(seq, h, i0, lid);
      workgroupBarrier();
      // Probabilities into blockScores and score gradients into blockGrads, [key][query].
      for (var t = lid; t < 64u; t += WGB) {
        let qr = 4u * (t / 8u);
        let kc = 4u * (t % 8u);
        if (j0 + kc > i0 + qr + 3u) { continue; } // never read
        let sg = scores_and_grads(rows_at(seq, i0 + qr, h, p.nH), rows_at(seq, j0 + kc, g, p.nKV));
        put_key_columns(b, i0 + qr, j0 + kc, kc * BLOCK_PAD + qr, sg.s[0], sg.dp[0], blockRows[qr]);
        put_key_columns(b, i0 + qr + 1u, j0 + kc, kc * BLOCK_PAD + qr + 1u, sg.s[1], sg.dp[1], blockRows[qr + 1u]);
        put_key_columns(b, i0 + qr + 2u, j0 + kc, kc * BLOCK_PAD + qr + 2u, sg.s[2], sg.dp[2], blockRows[qr + 2u]);
        put_key_columns(b, i0 + qr + 3u, j0 + kc, kc * BLOCK_PAD + qr + 3u, sg.s[3], sg.dp[3], blockRows[qr + 3u]);
      }
      workgroupBarrier();
      if (live) {
        // Queries before key row j0 + r0 see none of the four keys (their entries are not written).
        // Queries past the sequence have zero entries; both bounds are multiples of 4 (i0 - j0 is one of
        // BLOCK), and the loop takes two queries a step.
        let first = select(0u, j0 + r0 - i0, j0 + r0 > i0);
        let end = min(BLOCK, (p.S - i0 + 3u) & ~3u);
        for (var ii = first; ii < end; ii++) {
          let at = row_at(seq, i0 + ii, h, p.nH);
          let pr = block_column(r0, ii);
          let ds = grad_column(r0, ii);
          dv0 = add_outer(dv0, pr, dO_quad(at, cg));
          dk0 = add_outer(dk0, ds, q_quad(at, cg));
          if (NQ > 1u) { dv1 = add_outer(dv1, pr, dO4(at, c1)); dk1 = add_outer(dk1, ds, q4(at, c1)); }
        }
      }
      workgroupBarrier();
    }
  }
  if (live) {
    let at = rows_at(seq, j0 + r0, g, p.nKV);
    store_grad_block(vec4u(p.dkAt) + at, j0 + r0, cg, c1, dk0, dk1);
    store_grad_block(vec4u(p.dvAt) + at, j0 + r0, cg, c1, dv0, dv1);
  }
}

// Rows r .. r + 3 of column ii of blockGrads.
fn grad_column(r: u32, ii: u32) -> vec4f {
  let at = r * BLOCK_PAD + ii;
  return vec4f(blockGrads[at], blockGrads[at + BLOCK_PAD], blockGrads[at + 2u * BLOCK_PAD], blockGrads[at + 3u * BLOCK_PAD]);
}

// The query rows [start, end) that see any of the keys k0 .. k0 + BLOCK - 1 (causal, window).
fn key_tile_queries_of(k0: u32) -> vec2u {
  return vec2u(k0, window_end(min(k0 + BLOCK, p.S) - 1u));
}
