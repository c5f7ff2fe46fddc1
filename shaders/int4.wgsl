// Group-wise asymmetric int4 for a frozen weight W of shape [N, K] (HF layout [out, in]); groups of G
// consecutive values along K (G = 32, 64 or 128, a multiple of 8). Packed format, per row n:
//   qweight u32 [N, KW], KW = ceil(K / 8): value k in word n*KW + k/8, bits 4*(k%8).. (low nibble first);
//                                          padding nibbles past K are 0.
//   scales  u32 [N, SW], SW = ceil(NG / 2), NG = ceil(K / G): f16 scale of group g in word n*SW + g/2,
//                                          low half for even g (pack2x16float order); unused half 0.
//   zeros   u32 [N, ZW], ZW = ceil(NG / 8): zero point (0..15) of group g in word n*ZW + g/8, nibble g%8.
// Dequantized value: (q - zero) * scale. Each group's range is widened to include 0 so zero fits 0..15,
// which bounds the error by scale / 2.
struct Params { M: u32, N: u32, K: u32, G: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> W: array<f32>;
@group(0) @binding(2) var<storage, read_write> qweight: array<u32>;
@group(0) @binding(3) var<storage, read_write> scales: array<u32>;
@group(0) @binding(4) var<storage, read_write> zeros: array<u32>;
@group(0) @binding(5) var<storage, read_write> Y: array<f32>;
@group(0) @binding(6) var<storage, read> X: array<f32>;

override WG: u32 = 64;

// #include lib/flat_index.wgsl

fn words_per_row() -> u32 { return (p.K + 7u) / 8u; }
fn groups_per_row() -> u32 { return (p.K + p.G - 1u) / p.G; }

fn scale_of(n: u32, g: u32) -> f32 {
  let sw = (groups_per_row() + 1u) / 2u;
  return unpack2x16float(scales[n * sw + g / 2u])[g % 2u];
}

fn zero_of(n: u32, g: u32) -> f32 {
  let zw = (groups_per_row() + 7u) / 8u;
  return f32((zeros[n * zw + g / 8u] >> (4u * (g % 8u))) & 15u);
}

// One invocation per (row, block of 8 groups): it owns whole words of all three arrays, so no atomics.
@compute @workgroup_size(WG)
fn quantize(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_index) lid: u32) {
  let ng = groups_per_row();
  let zw = (ng + 7u) / 8u;
  let t = flat_index(wid, nwg, lid, WG);
  if (t >= p.N * zw) { return; }
  let n = t / zw;
  let blk = t % zw;
  let kw = words_per_row();
  let sw = (ng + 1u) / 2u;
  var zword = 0u;
  var pair = vec2f(0.0);
  let gEnd = min(ng, blk * 8u + 8u);
  for (var g = blk * 8u; g < gEnd; g++) {
    let k0 = g * p.G;
    let k1 = min(p.K, k0 + p.G);
    var lo = 0.0;
    var hi = 0.0;
    for (var k = k0; k < k1; k++) {
      let w = W[n * p.K + k];
      lo = min(lo, w);
      hi = max(hi, w);
    }
    // Quantize with the scale as stored (f16), so dequantization reproduces exactly what was rounded.
    let s = unpack2x16float(pack2x16float(vec2f(min((hi - lo) / 15.0, 65504.0), 0.0))).x;
    let inv = select(0.0, 1.0 / s, s > 0.0);
    let zp = clamp(round(-lo * inv), 0.0, 15.0);
    zword |= u32(zp) << (4u * (g % 8u));
    pair[g % 2u] = s;
    if (g % 2u == 1u || g + 1u == gEnd) {
      scales[n * sw + g / 2u] = pack2x16float(pair);
      pair = vec2f(0.0);
    }
    for (var wd = k0 / 8u; wd < (k1 + 7u) / 8u; wd++) {
      var word = 0u;
      for (var j = 0u; j < 8u; j++) {
        let k = wd * 8u + j;
        if (k < k1) {
          let q = clamp(round(W[n * p.K + k] * inv) + zp, 0.0, 15.0);
          word |= u32(q) << (4u * j);
        }
      }
      qweight[n * kw + wd] = word;
    }
  }
  zeros[n * zw + blk] = zword;
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
  let g = (wd * 8u) / p.G;
  let s = scale_of(n, g);
  let z = zero_of(n, g);
  let word = qweight[t];
  for (var j = 0u; j < 8u; j++) {
    let k = wd * 8u + j;
    if (k < p.K) { Y[n * p.K + k] = (f32((word >> (4u * j)) & 15u) - z) * s; }
  }
}

// Y[M, N] = X[M, K] @ dequant(W)^T without materializing W: each workgroup stages a 64 x 32 tile of X and
// dequantizes a 64-row x 4-word tile of W into workgroup memory, then 4x4 register blocks as in matmul.
const BM = 64u;
const BN = 64u;
const BK = 32u; // 4 packed words; a multiple of 8 dividing every G, so one group per word tile
var<workgroup> Xs: array<f32, 2048>; // [BK][BM]
var<workgroup> Ws: array<f32, 2048>; // [BK][BN]

@compute @workgroup_size(16, 16)
fn matmul_int4(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
               @builtin(local_invocation_index) li: u32) {
  let m0 = wid.y * BM;
  let n0 = wid.x * BN;
  let kw = words_per_row();
  var acc: array<vec4f, 4>;
  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    for (var r = 0u; r < 8u; r++) {
      let e = li + r * 256u;
      let kk = e % BK;
      let mm = e / BK;
      var x = 0.0;
      if (m0 + mm < p.M && k0 + kk < p.K) { x = X[(m0 + mm) * p.K + k0 + kk]; }
      Xs[kk * BM + mm] = x;
    }
    {
      let nn = li / 4u;
      let w = li % 4u;
      let n = n0 + nn;
      let k = k0 + w * 8u;
      var vals = array<f32, 8>();
      if (n < p.N && k < p.K) {
        let g = k / p.G;
        let s = scale_of(n, g);
        let z = zero_of(n, g);
        let word = qweight[n * kw + k / 8u];
        for (var j = 0u; j < 8u; j++) { vals[j] = (f32((word >> (4u * j)) & 15u) - z) * s; }
      }
      for (var j = 0u; j < 8u; j++) { Ws[(w * 8u + j) * BN + nn] = vals[j]; }
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      let ar = kk * BM + lid.y * 4u;
      let br = kk * BN + lid.x * 4u;
      let bv = vec4f(Ws[br], Ws[br + 1u], Ws[br + 2u], Ws[br + 3u]);
      for (var i = 0u; i < 4u; i++) { acc[i] = fma(vec4f(Xs[ar + i]), bv, acc[i]); }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let m = m0 + lid.y * 4u + i;
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + lid.x * 4u + j;
      if (m < p.M && n < p.N) { Y[m * p.N + n] = acc[i][j]; }
    }
  }
}

// Barrier-free variant: each invocation owns ROWS rows of Y (4, or 1 when decoding) and four columns,
// walks K group by group (scales and zero points loaded once per group) and word by word, unpacking each
// weight word once for all its rows. For decoding (M = 1) and for CPU implementations, where barriers
// are costly.
override ROWS: u32 = 4;

// The 8 values of a packed word minus the zero point, as two vec4s.
fn unpack8(word: u32, zero: f32) -> array<vec4f, 2> {
  return array<vec4f, 2>(
    vec4f(f32(word & 15u), f32((word >> 4u) & 15u), f32((word >> 8u) & 15u), f32((word >> 12u) & 15u)) - zero,
    vec4f(f32((word >> 16u) & 15u), f32((word >> 20u) & 15u), f32((word >> 24u) & 15u), f32(word >> 28u)) - zero,
  );
}

fn x_at(row: u32, k: u32) -> f32 {
  // Past K the packed nibbles are padding: multiply them by 0 (branch-free, index kept in bounds).
  return select(0.0, X[row * p.K + min(k, p.K - 1u)], k < p.K);
}

// One row of X (8 values from k) against the unpacked words of four weight rows.
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

const DX = 16u; // invocations per workgroup along N, four columns each
const DY = 4u; // along M, ROWS rows each
@compute @workgroup_size(DX, DY)
fn matmul_int4_direct(@builtin(global_invocation_id) gid: vec3u) {
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
    let s = vec4f(scale_of(cols[0], g), scale_of(cols[1], g), scale_of(cols[2], g), scale_of(cols[3], g));
    let z = vec4f(zero_of(cols[0], g), zero_of(cols[1], g), zero_of(cols[2], g), zero_of(cols[3], g));
    // Explicit initializer: SwiftShader was seen to keep the previous iteration's values otherwise.
    var part = array<vec4f, 4>(vec4f(0.0), vec4f(0.0), vec4f(0.0), vec4f(0.0));
    let wEnd = min(kw, (g + 1u) * wordsPerGroup);
    for (var w = g * wordsPerGroup; w < wEnd; w++) {
      let q0 = unpack8(qweight[cols[0] * kw + w], z[0]);
      let q1 = unpack8(qweight[cols[1] * kw + w], z[1]);
      let q2 = unpack8(qweight[cols[2] * kw + w], z[2]);
      let q3 = unpack8(qweight[cols[3] * kw + w], z[3]);
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
      if (m0 + i < p.M && n0 + j < p.N) { Y[(m0 + i) * p.N + n0 + j] = acc[i][j]; }
    }
  }
}
