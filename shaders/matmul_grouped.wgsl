// Grouped matmul: several independent products in one dispatch, as CUTLASS's grouped GEMM, so a layer's
// products that share their operands' buffers cost one dispatch instead of one each. Workgroup z is
// the problem; each problem is read from a table recorded with the submission:
//   C = sum over its terms of alpha_t * op(A_t) @ op(B_t)  (+ bias[n]) (+ R[m, n]) (+ C)
// and two activation epilogues (GELU, lib/gelu.wgsl), so an MLP's activation costs no pass of its own:
//   ACT_OUT:  R[m, n] = gelu(C[m, n]) beside C (the up projection keeps its pre-activation for backward)
//   ACT_GRAD: C = (the sum above) * gelu'(R[m, n]), R holding the pre-activation (the down projection's
//             input gradient written as the up projection's output gradient)
// R serves one of the three (residual, activation output, activation input) per problem: a ninth storage
// binding would pass WebGPU's default limit of eight.
// A term is one K range: op(A)[m, k] = A[a + m * am + k * ak], op(B)[k, n] = B[b + k * bk + n * bn], so
// transposes are strides; a LoRA path (s (x A^T) B^T) is a term with its own alpha. A term with `ones` multiplies by a column of ones (op(B) = 1, N = 1): the row
// sums of op(A), which is a bias's gradient (db = dy^T 1). Terms in one problem sum in registers, so
// dx = dq Wq + dk Wk + dv Wv is one problem. Every problem of a dispatch binds the same buffers: A for
// every A, and so on; offsets are in elements of those bindings.
//
// The arithmetic is matmul.wgsl's (4x4 register blocks; f32 accumulation; its operand reads and register
// steps from lib/matmul_operands.wgsl, 16-bit operands by A_FORMAT and B_FORMAT), in its two forms: direct for CPU implementations, tiled
// (workgroup memory) for GPUs. Workgroups past a problem's edge return at once: the grid is the largest
// problem's.

@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<f32>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> R: array<f32>;
@group(0) @binding(6) var<storage, read> table: array<u32>;
// #include lib/matmul_operands.wgsl
// #include lib/gelu.wgsl

// Table layout, in 4-byte words: PROBLEM_WORDS per problem from word 0, then the terms, TERM_WORDS each.
const PROBLEM_WORDS = 8u;
const TERM_WORDS = 9u;
const FLAG_ACCUMULATE = 1u;
const FLAG_BIAS = 2u;
const FLAG_RESIDUAL = 4u;
const FLAG_ACT_OUT = 8u;
const FLAG_ACT_GRAD = 16u;

struct Problem {
  M: u32, N: u32, flags: u32, terms: u32,
  // Word of the first term; offsets of C, bias and R.
  first: u32, c: u32, bias: u32, residual: u32,
}

struct Term {
  a: u32, am: u32, ak: u32,
  b: u32, bk: u32, bn: u32,
  K: u32, ones: u32, alpha: f32,
}

fn problem(z: u32) -> Problem {
  let w = z * PROBLEM_WORDS;
  return Problem(table[w], table[w + 1u], table[w + 2u], table[w + 3u], table[w + 4u], table[w + 5u],
                 table[w + 6u], table[w + 7u]);
}

fn term(p: Problem, t: u32) -> Term {
  let w = p.first + t * TERM_WORDS;
  return Term(table[w], table[w + 1u], table[w + 2u], table[w + 3u], table[w + 4u], table[w + 5u],
              table[w + 6u], table[w + 7u], bitcast<f32>(table[w + 8u]));
}

// Stores C[m, n] = acc + bias + residual (+ C), times gelu'(R) with ACT_GRAD; and gelu of it in R with ACT_OUT.
fn store(p: Problem, m: u32, n: u32, acc: f32) {
  if (m >= p.M || n >= p.N) { return; }
  let i = m * p.N + n;
  var c = acc;
  if ((p.flags & FLAG_BIAS) != 0u) { c += bias[p.bias + n]; }
  if ((p.flags & FLAG_RESIDUAL) != 0u) { c += R[p.residual + i]; }
  if ((p.flags & FLAG_ACCUMULATE) != 0u) { c += C[p.c + i]; }
  if ((p.flags & FLAG_ACT_GRAD) != 0u) { c *= gelu_grad(R[p.residual + i]); }
  C[p.c + i] = c;
  if ((p.flags & FLAG_ACT_OUT) != 0u) { R[p.residual + i] = gelu(c); }
}

// ---- Direct: operands read straight from storage (matmul.wgsl's matmul_direct, strides at run time).
const DWG = 8u;
const TM = 4u;
const TN = 4u;

@compute @workgroup_size(DWG, DWG)
fn grouped_direct(@builtin(global_invocation_id) gid: vec3u) {
  let p = problem(gid.z);
  let m0 = gid.y * TM;
  let n0 = gid.x * TN;
  if (m0 >= p.M || n0 >= p.N) { return; }
  var sum: array<vec4f, 4>;
  for (var ti = 0u; ti < p.terms; ti++) {
    let t = term(p, ti);
    // Zeroed explicitly per term: an implementation may keep a declaration's storage across iterations.
    var acc = array<vec4f, 4>(vec4f(0.0), vec4f(0.0), vec4f(0.0), vec4f(0.0));
    // Rows and columns past the edge are clamped: they read valid memory and are never stored.
    var am: array<u32, 4>;
    var bn: array<u32, 4>;
    for (var i = 0u; i < TM; i++) { am[i] = t.a + min(m0 + i, p.M - 1u) * t.am; }
    for (var j = 0u; j < TN; j++) { bn[j] = t.b + min(n0 + j, p.N - 1u) * t.bn; }
    if (t.ones != 0u) {
      for (var k = 0u; k < t.K; k++) {
        for (var i = 0u; i < TM; i++) { acc[i] += vec4f(a_elem(am[i] + k * t.ak)); }
      }
    } else if (A_FORMAT == FORMAT_F32 && B_FORMAT == FORMAT_F32) {
      var k = 0u;
      for (; k + 4u <= t.K; k += 4u) {
        acc = step_k_f32(acc, am, bn, k, t.ak, t.bk);
        acc = step_k_f32(acc, am, bn, k + 1u, t.ak, t.bk);
        acc = step_k_f32(acc, am, bn, k + 2u, t.ak, t.bk);
        acc = step_k_f32(acc, am, bn, k + 3u, t.ak, t.bk);
      }
      for (; k < t.K; k++) { acc = step_k_f32(acc, am, bn, k, t.ak, t.bk); }
    } else {
      var k = 0u;
      for (; k + 4u <= t.K; k += 4u) {
        acc = step_k(acc, am, bn, k, t.ak, t.bk);
        acc = step_k(acc, am, bn, k + 1u, t.ak, t.bk);
        acc = step_k(acc, am, bn, k + 2u, t.ak, t.bk);
        acc = step_k(acc, am, bn, k + 3u, t.ak, t.bk);
      }
      for (; k < t.K; k++) { acc = step_k(acc, am, bn, k, t.ak, t.bk); }
    }
    for (var i = 0u; i < TM; i++) { sum[i] = fma(vec4f(t.alpha), acc[i], sum[i]); }
  }
  for (var i = 0u; i < TM; i++) {
    for (var j = 0u; j < TN; j++) { store(p, m0 + i, n0 + j, sum[i][j]); }
  }
}

// ---- Tiled: a 64x64 tile of C per workgroup, K in steps of 16 staged in workgroup memory (matmul_tiled).
const WGX = 16u;
const WGY = 16u;
const BM = 64u;
const BN = 64u;
const BK = 16u;
var<workgroup> As: array<f32, 1024>; // [BK][BM]
var<workgroup> Bs: array<f32, 1024>; // [BK][BN]

fn a_at(p: Problem, t: Term, m: u32, k: u32) -> f32 {
  if (m >= p.M || k >= t.K) { return 0.0; }
  return a_elem(t.a + m * t.am + k * t.ak);
}

fn b_at(p: Problem, t: Term, k: u32, n: u32) -> f32 {
  if (k >= t.K || n >= p.N) { return 0.0; }
  if (t.ones != 0u) { return 1.0; }
  return b_elem(t.b + k * t.bk + n * t.bn);
}

@compute @workgroup_size(WGX, WGY)
fn grouped_tiled(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
                 @builtin(local_invocation_index) li: u32) {
  let p = problem(wid.z);
  let m0 = wid.y * BM;
  let n0 = wid.x * BN;
  if (m0 >= p.M || n0 >= p.N) { return; } // the whole workgroup: no barrier is skipped by part of it
  var sum: array<vec4f, 4>;
  for (var ti = 0u; ti < p.terms; ti++) {
    let t = term(p, ti);
    // Zeroed explicitly per term: an implementation may keep a declaration's storage across iterations.
    var acc = array<vec4f, 4>(vec4f(0.0), vec4f(0.0), vec4f(0.0), vec4f(0.0));
    for (var k0 = 0u; k0 < t.K; k0 += BK) {
      // 1024 elements per tile, 4 per invocation; the fast-moving index follows the operand's unit stride.
      for (var r = 0u; r < 4u; r++) {
        let e = li + r * 256u;
        var mm: u32; var ka: u32;
        if (t.ak == 1u) { ka = e % BK; mm = e / BK; } else { mm = e % BM; ka = e / BM; }
        As[ka * BM + mm] = a_at(p, t, m0 + mm, k0 + ka);
        var nn: u32; var kb: u32;
        if (t.bn == 1u) { nn = e % BN; kb = e / BN; } else { kb = e % BK; nn = e / BK; }
        Bs[kb * BN + nn] = b_at(p, t, k0 + kb, n0 + nn);
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
    for (var i = 0u; i < TM; i++) { sum[i] = fma(vec4f(t.alpha), acc[i], sum[i]); }
  }
  let bm = m0 + lid.y * TM;
  let bn = n0 + lid.x * TN;
  for (var i = 0u; i < TM; i++) {
    for (var j = 0u; j < TN; j++) { store(p, bm + i, bn + j, sum[i][j]); }
  }
}
