// Products with a frozen 4-bit weight W [N, K] (HF layout [out, in]) that never materialize it in f32,
// shared by the 4-bit formats (int4.wgsl, nf4.wgsl). Values are packed 8 per u32 word along K, low
// nibble first, ceil(K / 8) words per row; each group of G consecutive values of a row shares a scale.
// The including shader declares p (M, N, K, G), qweight, X and Y, and defines:
//   fn q4_scale(n: u32, g: u32) -> f32      the multiplier of group g of row n
//   fn q4_offset(n: u32, g: u32) -> f32     a per-group number the decoder takes (int4: the zero point)
//   fn q4_decode8(word: u32, offset: f32) -> array<vec4f, 2>   a word's 8 values before the multiplier
// Forward: Y [M, N] = X [M, K] @ dequant(W)^T. Input gradient: Y [M, K] = X [M, N] @ dequant(W), with X
// holding dY and Y receiving dX; with ACCUMULATE the products add into Y (summing input gradients of
// linears that share an input). Also here: dequantization to f32, and WG and flat_index for the
// including shader's quantizer.

override WG: u32 = 64;
override ACCUMULATE: bool = false;

fn put(i: u32, v: f32) {
  if (ACCUMULATE) { Y[i] = Y[i] + v; } else { Y[i] = v; }
}

// #include lib/flat_index.wgsl

fn words_per_row() -> u32 { return (p.K + 7u) / 8u; }
fn groups_per_row() -> u32 { return (p.K + p.G - 1u) / p.G; }

// The 8 dequantized values of word w of row n (w * 8 < K); G is a multiple of 8, so one group per word.
fn q4_word(n: u32, w: u32) -> array<vec4f, 2> {
  let g = (w * 8u) / p.G;
  let s = q4_scale(n, g);
  let q = q4_decode8(qweight[n * words_per_row() + w], q4_offset(n, g));
  return array<vec4f, 2>(q[0] * s, q[1] * s);
}

// One invocation per packed word: writes its 8 values of the f32 [N, K] matrix (into Y).
@compute @workgroup_size(WG)
fn dequantize(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
              @builtin(local_invocation_index) lid: u32) {
  let kw = words_per_row();
  let t = flat_index(wid, nwg, lid, WG);
  if (t >= p.N * kw) { return; }
  let n = t / kw;
  let wd = t % kw;
  let v = q4_word(n, wd);
  for (var j = 0u; j < 8u; j++) {
    let k = wd * 8u + j;
    if (k < p.K) { Y[n * p.K + k] = v[j / 4u][j % 4u]; }
  }
}

// Tiled kernels: each workgroup stages a 64 x 32 tile of X and dequantizes a 32 x 64 tile of W into
// workgroup memory, then 4x4 register blocks as in matmul.wgsl.
const BM = 64u;
const BN = 64u;
const BK = 32u; // 4 packed words of a row (forward); 32 rows of W (input gradient)
var<workgroup> Xs: array<f32, 2048>; // [BK][BM]
var<workgroup> Ws: array<f32, 2048>; // [BK][BN]

fn tile_product(lid: vec3u, acc: ptr<function, array<vec4f, 4>>) {
  for (var kk = 0u; kk < BK; kk++) {
    let ar = kk * BM + lid.y * 4u;
    let br = kk * BN + lid.x * 4u;
    let bv = vec4f(Ws[br], Ws[br + 1u], Ws[br + 2u], Ws[br + 3u]);
    for (var i = 0u; i < 4u; i++) { (*acc)[i] = fma(vec4f(Xs[ar + i]), bv, (*acc)[i]); }
  }
}

fn store_tile(lid: vec3u, m0: u32, c0: u32, cols: u32, acc: array<vec4f, 4>) {
  for (var i = 0u; i < 4u; i++) {
    let m = m0 + lid.y * 4u + i;
    for (var j = 0u; j < 4u; j++) {
      let c = c0 + lid.x * 4u + j;
      if (m < p.M && c < cols) { put(m * cols + c, acc[i][j]); }
    }
  }
}

// Stages X[m0.., d0..] (row length `cols`) transposed into Xs[BK][BM].
fn stage_x(li: u32, m0: u32, d0: u32, cols: u32) {
  for (var r = 0u; r < 8u; r++) {
    let e = li + r * 256u;
    let kk = e % BK;
    let mm = e / BK;
    var x = 0.0;
    if (m0 + mm < p.M && d0 + kk < cols) { x = X[(m0 + mm) * cols + d0 + kk]; }
    Xs[kk * BM + mm] = x;
  }
}

@compute @workgroup_size(16, 16)
fn matmul_q4(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
             @builtin(local_invocation_index) li: u32) {
  let m0 = wid.y * BM;
  let n0 = wid.x * BN;
  var acc: array<vec4f, 4>;
  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    stage_x(li, m0, k0, p.K);
    {
      // Row n0 + li / 4, word li % 4 of the tile: Ws[k - k0][n - n0].
      let nn = li / 4u;
      let w = li % 4u;
      let n = n0 + nn;
      var v = array<vec4f, 2>(vec4f(0.0), vec4f(0.0));
      if (n < p.N && k0 + w * 8u < p.K) { v = q4_word(n, k0 / 8u + w); }
      for (var j = 0u; j < 8u; j++) { Ws[(w * 8u + j) * BN + nn] = v[j / 4u][j % 4u]; }
    }
    workgroupBarrier();
    tile_product(lid, &acc);
    workgroupBarrier();
  }
  store_tile(lid, m0, n0, p.N, acc);
}

@compute @workgroup_size(16, 16)
fn matmul_q4_t(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
               @builtin(local_invocation_index) li: u32) {
  let m0 = wid.y * BM;
  let c0 = wid.x * BN; // output columns: positions along K, 8 words of W per tile
  var acc: array<vec4f, 4>;
  for (var n0 = 0u; n0 < p.N; n0 += BK) {
    stage_x(li, m0, n0, p.N);
    {
      // Row n0 + li / 8, word li % 8 of the tile: Ws[n - n0][k - c0]. Columns past K hold padding and
      // are never stored.
      let nn = li / 8u;
      let w = li % 8u;
      let n = n0 + nn;
      var v = array<vec4f, 2>(vec4f(0.0), vec4f(0.0));
      if (n < p.N && c0 + w * 8u < p.K) { v = q4_word(n, c0 / 8u + w); }
      for (var j = 0u; j < 8u; j++) { Ws[nn * BN + w * 8u + j] = v[j / 4u][j % 4u]; }
    }
    workgroupBarrier();
    tile_product(lid, &acc);
    workgroupBarrier();
  }
  store_tile(lid, m0, c0, p.K, acc);
}

// Barrier-free variants, for decoding (M small) and for CPU implementations, where barriers are costly.
override ROWS: u32 = 4; // rows of Y per invocation: 4, or 1 when decoding

fn x_at(row: u32, k: u32) -> f32 {
  // Past K the packed nibbles are padding: multiply them by 0 (branch-free, index kept in bounds).
  return select(0.0, X[row * p.K + min(k, p.K - 1u)], k < p.K);
}

// One row of X (8 values from k) against the decoded words of four weight rows.
fn row_dots(row: u32, k: u32, q0: array<vec4f, 2>, q1: array<vec4f, 2>, q2: array<vec4f, 2>, q3: array<vec4f, 2>) -> vec4f {
  let x0 = vec4f(x_at(row, k), x_at(row, k + 1u), x_at(row, k + 2u), x_at(row, k + 3u));
  let x1 = vec4f(x_at(row, k + 4u), x_at(row, k + 5u), x_at(row, k + 6u), x_at(row, k + 7u));
  return vec4f(
    dot(q0[0], x0) + dot(q0[1], x1),
    dot(q1[0], x0) + dot(q1[1], x1),
    dot(q2[0], x0) + dot(q2[1], x1),
    dot(q3[0], x0) + dot(q3[1], x1),
  );
}

// Forward: each invocation owns ROWS rows of Y and four columns, walks K group by group (multipliers and
// offsets loaded once per group) and word by word, decoding each weight word once for all its rows.
const DX = 16u; // invocations per workgroup along the output columns
const DY = 4u; // along M, ROWS rows each
@compute @workgroup_size(DX, DY)
fn matmul_q4_direct(@builtin(global_invocation_id) gid: vec3u) {
  let m0 = gid.y * ROWS;
  let n0 = gid.x * 4u;
  if (m0 >= p.M || n0 >= p.N) { return; }
  let kw = words_per_row();
  let ng = groups_per_row();
  let wordsPerGroup = p.G / 8u;
  var cols: array<u32, 4>;
  for (var j = 0u; j < 4u; j++) { cols[j] = min(n0 + j, p.N - 1u); }
  var acc: array<vec4f, 4>; // acc[i][j]: row m0 + i, column n0 + j
  for (var g = 0u; g < ng; g++) {
    let s = vec4f(q4_scale(cols[0], g), q4_scale(cols[1], g), q4_scale(cols[2], g), q4_scale(cols[3], g));
    let o = vec4f(q4_offset(cols[0], g), q4_offset(cols[1], g), q4_offset(cols[2], g), q4_offset(cols[3], g));
    // Explicit initializer: SwiftShader was seen to keep the previous iteration's values otherwise.
    var part = array<vec4f, 4>(vec4f(0.0), vec4f(0.0), vec4f(0.0), vec4f(0.0));
    let wEnd = min(kw, (g + 1u) * wordsPerGroup);
    for (var w = g * wordsPerGroup; w < wEnd; w++) {
      let q0 = q4_decode8(qweight[cols[0] * kw + w], o[0]);
      let q1 = q4_decode8(qweight[cols[1] * kw + w], o[1]);
      let q2 = q4_decode8(qweight[cols[2] * kw + w], o[2]);
      let q3 = q4_decode8(qweight[cols[3] * kw + w], o[3]);
      let k = w * 8u;
      // Written out for ROWS = 4: CPU JIT compilers do not unroll this loop themselves.
      part[0] += row_dots(min(m0, p.M - 1u), k, q0, q1, q2, q3);
      if (ROWS == 4u) {
        part[1] += row_dots(min(m0 + 1u, p.M - 1u), k, q0, q1, q2, q3);
        part[2] += row_dots(min(m0 + 2u, p.M - 1u), k, q0, q1, q2, q3);
        part[3] += row_dots(min(m0 + 3u, p.M - 1u), k, q0, q1, q2, q3);
      }
    }
    for (var i = 0u; i < ROWS; i++) { acc[i] = fma(part[i], s, acc[i]); }
  }
  for (var i = 0u; i < ROWS; i++) {
    for (var j = 0u; j < 4u; j++) {
      if (m0 + i < p.M && n0 + j < p.N) { put((m0 + i) * p.N + n0 + j, acc[i][j]); }
    }
  }
}

// Input gradient: each invocation owns ROWS rows of Y and the 8 columns of one word, and walks the N rows
// of W (one multiplier per row: a word lies in one group). Rows are written out, not looped over: CPU JIT
// compilers keep a local array indexed in a loop in memory rather than registers.
fn store_word(row: u32, w: u32, lo: vec4f, hi: vec4f) {
  if (row >= p.M) { return; }
  for (var j = 0u; j < 4u; j++) {
    if (w * 8u + j < p.K) { put(row * p.K + w * 8u + j, lo[j]); }
    if (w * 8u + 4u + j < p.K) { put(row * p.K + w * 8u + 4u + j, hi[j]); }
  }
}

@compute @workgroup_size(DX, DY)
fn matmul_q4_t_direct(@builtin(global_invocation_id) gid: vec3u) {
  let m0 = gid.y * ROWS;
  let w = gid.x;
  if (m0 >= p.M || w >= words_per_row()) { return; }
  let r0 = m0 * p.N;
  let r1 = min(m0 + 1u, p.M - 1u) * p.N;
  let r2 = min(m0 + 2u, p.M - 1u) * p.N;
  let r3 = min(m0 + 3u, p.M - 1u) * p.N;
  var lo0 = vec4f(0.0); var hi0 = vec4f(0.0);
  var lo1 = vec4f(0.0); var hi1 = vec4f(0.0);
  var lo2 = vec4f(0.0); var hi2 = vec4f(0.0);
  var lo3 = vec4f(0.0); var hi3 = vec4f(0.0);
  for (var n = 0u; n < p.N; n++) {
    let v = q4_word(n, w);
    let d0 = X[r0 + n];
    lo0 = fma(vec4f(d0), v[0], lo0);
    hi0 = fma(vec4f(d0), v[1], hi0);
    if (ROWS == 4u) {
      let d1 = X[r1 + n];
      let d2 = X[r2 + n];
      let d3 = X[r3 + n];
      lo1 = fma(vec4f(d1), v[0], lo1);
      hi1 = fma(vec4f(d1), v[1], hi1);
      lo2 = fma(vec4f(d2), v[0], lo2);
      hi2 = fma(vec4f(d2), v[1], hi2);
      lo3 = fma(vec4f(d3), v[0], lo3);
      hi3 = fma(vec4f(d3), v[1], hi3);
    }
  }
  store_word(m0, w, lo0, hi0);
  if (ROWS == 4u) {
    store_word(m0 + 1u, w, lo1, hi1);
    store_word(m0 + 2u, w, lo2, hi2);
    store_word(m0 + 3u, w, lo3, hi3);
  }
}
