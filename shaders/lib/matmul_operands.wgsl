// How matmul.wgsl and matmul_grouped.wgsl read their operands, included by both. The including shader
// binds A and B (f32); 16-bit operands come from Ah and Bh through lib/half_read.wgsl, as A_FORMAT and
// B_FORMAT say: 0 f32, 1 bfloat16, 2 IEEE binary16.
// #include lib/half_read.wgsl

override A_FORMAT: u32 = 0;
override B_FORMAT: u32 = 0;
const FORMAT_F32 = 0u;
const FORMAT_BF16 = 1u;
const FORMAT_F16 = 2u;

// Element i of A in its storage format.
fn a_elem(i: u32) -> f32 {
  if (A_FORMAT == FORMAT_F32) { return A[i]; }
  return half_a(i, A_FORMAT == FORMAT_BF16);
}

// Element i of B in its storage format.
fn b_elem(i: u32) -> f32 {
  if (B_FORMAT == FORMAT_F32) { return B[i]; }
  return half_b(i, B_FORMAT == FORMAT_BF16);
}

// One rank-1 update of a 4x4 register block at k (rows am, columns bn, steps ak and bk along K), written
// out so no inner loop is left to the compiler. The f32 form reads A and B directly: with the
// storage-format branches of a_elem and b_elem in this loop, SwiftShader ran the f32 products 1.2 to 1.3x
// slower, constant as the overrides are.
fn step_k_f32(acc: array<vec4f, 4>, am: array<u32, 4>, bn: array<u32, 4>, k: u32, ak: u32, bk: u32) -> array<vec4f, 4> {
  let bv = vec4f(B[bn[0] + k * bk], B[bn[1] + k * bk], B[bn[2] + k * bk], B[bn[3] + k * bk]);
  return array<vec4f, 4>(
    fma(vec4f(A[am[0] + k * ak]), bv, acc[0]),
    fma(vec4f(A[am[1] + k * ak]), bv, acc[1]),
    fma(vec4f(A[am[2] + k * ak]), bv, acc[2]),
    fma(vec4f(A[am[3] + k * ak]), bv, acc[3]),
  );
}

fn step_k(acc: array<vec4f, 4>, am: array<u32, 4>, bn: array<u32, 4>, k: u32, ak: u32, bk: u32) -> array<vec4f, 4> {
  let bv = vec4f(b_elem(bn[0] + k * bk), b_elem(bn[1] + k * bk), b_elem(bn[2] + k * bk), b_elem(bn[3] + k * bk));
  return array<vec4f, 4>(
    fma(vec4f(a_elem(am[0] + k * ak)), bv, acc[0]),
    fma(vec4f(a_elem(am[1] + k * ak)), bv, acc[1]),
    fma(vec4f(a_elem(am[2] + k * ak)), bv, acc[2]),
    fma(vec4f(a_elem(am[3] + k * ak)), bv, acc[3]),
  );
}
