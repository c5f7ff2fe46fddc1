// Batched f32 matmul for the three products of a linear layer:
//   C[b] = alpha * op(A[b]) @ op(B[b])            (ACCUMULATE = false)
//   C[b] = alpha * op(A[b]) @ op(B[b]) + C[b]     (ACCUMULATE = true: summing gradients)
// op(A) is [M, K], stored [M, K] row-major or, with TRANS_A, [K, M]; op(B) is [K, N], stored [K, N] or,
// with TRANS_B, [N, K]. Forward y = x W^T uses TRANS_B; dX = dY W plain; dW = dY^T X uses TRANS_A.
// Batch b starts at b * stride (in elements); a stride of 0 broadcasts an operand (shared weights).
// Any M, N, K: edge tiles are guarded. Each invocation owns a TM x TN block of C (register blocking).
//
// Fused epilogue terms, added before C is stored, so a linear layer's bias and a LoRA adapter's path cost
// no extra pass over C:
//   BIAS:     + bias[n]                                     (every batch entry)
//   LOW_RANK: + beta * keep(m, n) * (U @ op(V))[m, n]      (batch 1; U [M, R] row-major, op(V) [R, N]
//             stored [R, N] or, with TRANS_V, [N, R]); with DROPOUT, keep(m, n) is the dropout mask of
//             element m * N + n under `seed` (as elementwise.wgsl's), otherwise 1.
// LoRA forward: y = x W^T + s (x A^T) B^T is U = x A^T, V = B with TRANS_V; backward: dx = dy W + du A.
//
// B_FORMAT picks how B is stored, so a frozen 16-bit weight is read as it is, never widened in memory:
//   0: f32 in B;  1: bfloat16 in Bh;  2: IEEE binary16 in Bh.
// A_FORMAT does the same for A (in Ah): 16-bit activations of mixed precision. Either way the products
// of 16-bit values are exact in f32 and accumulate in f32, as tensor cores do.
// Ah and Bh hold two values per 4 bytes, element 2i in the low half and 2i + 1 in the high half (little-endian
// order, as the file's bytes), read through lib/matmul_operands.wgsl by lib/half_read.wgsl (packed u32 words: bf16 widens by a shift, f16
// by the core unpack2x16float) or, on devices with shader-f16, its variant lib/half_read_f16.wgsl (f16
// loads). The operand not in use is bound to a placeholder.
struct Params {
  M: u32, N: u32, K: u32, batch: u32,
  strideA: u32, strideB: u32, strideC: u32, alpha: f32,
  R: u32, beta: f32, seed: u32, threshold: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> U: array<f32>;
@group(0) @binding(6) var<storage, read> V: array<f32>;
// #include lib/matmul_operands.wgsl

override TRANS_A: bool = false;
override TRANS_B: bool = false;
override ACCUMULATE: bool = false;
override BIAS: bool = false;
override LOW_RANK: bool = false;
override TRANS_V: bool = false;
override DROPOUT: bool = false;

// #include lib/hash.wgsl

const TM = 4u;
const TN = 4u;
const WGX = 16u;
const WGY = 16u;
const BM = 64u; // WGY * TM
const BN = 64u; // WGX * TN
const BK = 16u;

fn a_at(base: u32, m: u32, k: u32) -> f32 {
  if (m >= p.M || k >= p.K) { return 0.0; }
  if (TRANS_A) { return a_elem(base + k * p.M + m); }
  return a_elem(base + m * p.K + k);
}

fn b_at(base: u32, k: u32, n: u32) -> f32 {
  if (k >= p.K || n >= p.N) { return 0.0; }
  if (TRANS_B) { return b_elem(base + n * p.K + k); }
  return b_elem(base + k * p.N + n);
}

// The 4x4 block of U @ op(V) at rows m0.., columns n0.. (indices past the edge clamped; never stored).
fn low_rank_block(m0: u32, n0: u32) -> array<vec4f, 4> {
  var out = array<vec4f, 4>(vec4f(0.0), vec4f(0.0), vec4f(0.0), vec4f(0.0));
  if (!LOW_RANK) { return out; }
  var um: array<u32, 4>;
  var vn: array<u32, 4>;
  for (var i = 0u; i < 4u; i++) {
    um[i] = min(m0 + i, p.M - 1u) * p.R;
    let n = min(n0 + i, p.N - 1u);
    vn[i] = select(n, n * p.R, TRANS_V);
  }
  let vr = select(p.N, 1u, TRANS_V); // step between consecutive r in V
  for (var r = 0u; r < p.R; r++) {
    let v = vec4f(V[vn[0] + r * vr], V[vn[1] + r * vr], V[vn[2] + r * vr], V[vn[3] + r * vr]);
    out[0] = fma(vec4f(U[um[0] + r]), v, out[0]);
    out[1] = fma(vec4f(U[um[1] + r]), v, out[1]);
    out[2] = fma(vec4f(U[um[2] + r]), v, out[2]);
    out[3] = fma(vec4f(U[um[3] + r]), v, out[3]);
  }
  return out;
}

// Stores C[m, n] = alpha * acc + epilogue terms (+ C); lowRank is this element's (U @ op(V))[m, n].
fn store(base: u32, m: u32, n: u32, acc: f32, lowRank: f32) {
  if (m >= p.M || n >= p.N) { return; }
  let i = base + m * p.N + n;
  var c = p.alpha * acc;
  if (BIAS) { c += bias[n]; }
  if (LOW_RANK) {
    var term = p.beta * lowRank;
    if (DROPOUT && !dropout_keeps(m * p.N + n, p.seed, p.threshold)) { term = 0.0; }
    c += term;
  }
  if (ACCUMULATE) { c += C[i]; }
  C[i] = c;
}

// ---- Shared-memory tiled: a 64x64 tile of C per workgroup, K in steps of 16 staged in workgroup memory.
var<workgroup> As: array<f32, 1024>; // [BK][BM]
var<workgroup> Bs: array<f32, 1024>; // [BK][BN]

@compute @workgroup_size(WGX, WGY)
fn matmul_tiled(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
                @builtin(local_invocation_index) li: u32) {
  let aBase = wid.z * p.strideA;
  let bBase = wid.z * p.strideB;
  let m0 = wid.y * BM;
  let n0 = wid.x * BN;
  var acc: array<vec4f, TM>;
  for (var k0 = 0u; k0 < p.K; k0 += BK) {
    // 1024 elements per tile, 4 per invocation; the fast-moving index follows memory order.
    for (var r = 0u; r < 4u; r++) {
      let e = li + r * 256u;
      var mm: u32; var ka: u32;
      if (TRANS_A) { mm = e % BM; ka = e / BM; } else { ka = e % BK; mm = e / BK; }
      As[ka * BM + mm] = a_at(aBase, m0 + mm, k0 + ka);
      var nn: u32; var kb: u32;
      if (TRANS_B) { kb = e % BK; nn = e / BK; } else { nn = e % BN; kb = e / BN; }
      Bs[kb * BN + nn] = b_at(bBase, k0 + kb, n0 + nn);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      let ar = kk * BM + lid.y * TM;
      let br = kk * BN + lid.x * TN;
      let bv = vec4f(Bs[br], Bs[br + 1u], Bs[br + 2u], Bs[br + 3u]);
      acc[0] = fma(vec4f(As[ar]), bv, acc[0]);
      acc[1] = fma(vec4f(As[ar + 1u]), bv, acc[1]);
      acc[2] = fma(vec4f(As[ar + 2u]), bv, acc[2]);
      acc[3] = fma(vec4f(As[ar + 3u]), bv, acc[3]);
    }
    workgroupBarrier();
  }
  let cBase = wid.z * p.strideC;
  let bm = m0 + lid.y * TM;
  let bn = n0 + lid.x * TN;
  let lr = low_rank_block(bm, bn);
  for (var i = 0u; i < TM; i++) {
    for (var j = 0u; j < TN; j++) { store(cBase, bm + i, bn + j, acc[i][j], lr[i][j]); }
  }
}

// ---- Direct: same 4x4 register blocks, operands read straight from storage, no barriers. Faster on
// CPU implementations (SwiftShader), where barriers are costly and caches do the staging.
// DWG_X x DWG_Y invocations (64), a (4 DWG_Y) x (4 DWG_X) tile of C per workgroup: 8 x 8 by default, 2 x 32
// for a product 8 columns wide (a LoRA path's x A^T), so that no invocation of a SIMD group idles.
override DWG_X: u32 = 8u;
override DWG_Y: u32 = 8u;

@compute @workgroup_size(DWG_X, DWG_Y)
fn matmul_direct(@builtin(global_invocation_id) gid: vec3u) {
  let aBase = gid.z * p.strideA;
  let bBase = gid.z * p.strideB;
  let m0 = gid.y * TM;
  let n0 = gid.x * TN;
  if (m0 >= p.M || n0 >= p.N) { return; }
  // Rows and columns past the edge are clamped rather than branched on: they read valid memory and
  // their results are never stored. Branch-free inner loops matter on SIMD-across-invocations CPUs.
  var am: array<u32, TM>;
  var bn: array<u32, TN>;
  for (var i = 0u; i < TM; i++) {
    let m = min(m0 + i, p.M - 1u);
    if (TRANS_A) { am[i] = aBase + m; } else { am[i] = aBase + m * p.K; }
  }
  for (var j = 0u; j < TN; j++) {
    let n = min(n0 + j, p.N - 1u);
    if (TRANS_B) { bn[j] = bBase + n * p.K; } else { bn[j] = bBase + n; }
  }
  // Step between consecutive k for each operand.
  let ak = select(1u, p.M, TRANS_A);
  let bk = select(p.N, 1u, TRANS_B);
  var acc: array<vec4f, TM>;
  var k = 0u;
  // Unrolled by 4: loop overhead is significant for JIT compilers of CPU implementations.
  if (A_FORMAT == FORMAT_F32 && B_FORMAT == FORMAT_F32) {
    for (; k + 4u <= p.K; k += 4u) {
      acc = step_k_f32(acc, am, bn, k, ak, bk);
      acc = step_k_f32(acc, am, bn, k + 1u, ak, bk);
      acc = step_k_f32(acc, am, bn, k + 2u, ak, bk);
      acc = step_k_f32(acc, am, bn, k + 3u, ak, bk);
    }
    for (; k < p.K; k++) { acc = step_k_f32(acc, am, bn, k, ak, bk); }
  } else {
    for (; k + 4u <= p.K; k += 4u) {
      acc = step_k(acc, am, bn, k, ak, bk);
      acc = step_k(acc, am, bn, k + 1u, ak, bk);
      acc = step_k(acc, am, bn, k + 2u, ak, bk);
      acc = step_k(acc, am, bn, k + 3u, ak, bk);
    }
    for (; k < p.K; k++) { acc = step_k(acc, am, bn, k, ak, bk); }
  }
  let cBase = gid.z * p.strideC;
  let lr = low_rank_block(m0, n0);
  for (var i = 0u; i < TM; i++) {
    for (var j = 0u; j < TN; j++) { store(cBase, m0 + i, n0 + j, acc[i][j], lr[i][j]); }
  }
}
