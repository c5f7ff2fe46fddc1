// DoRA's column norms and merges (src/kernels/dora.ts). A DoRA layer's output is
// y = m / n ⊙ (x W^T + s x A^T B^T) + b with n = ‖W + s B A‖ per output row of W [N, K]; the norm is
// computed from small products each pass, never by materializing W + s B A:
//   n_j² = ‖W_j‖² + 2 s Σ_r B_jr P_rj + s² Σ_r Σ_q B_jr G_rq B_jq,   P = A W^T [R, N],  G = A A^T [R, R],
// with ‖W_j‖² measured once (identity_chunk and column_sumsq run the layer's own product, whatever
// format its weight is stored in, over chunks of the identity).
struct Params { rows: u32, cols: u32, offset: u32, R: u32, s: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read> wn2: array<f32>;
@group(0) @binding(4) var<storage, read> P: array<f32>;
@group(0) @binding(5) var<storage, read> G: array<f32>;
@group(0) @binding(6) var<storage, read> B: array<f32>;
@group(0) @binding(7) var<storage, read> m: array<f32>;
@group(0) @binding(8) var<storage, read_write> norm: array<f32>;
@group(0) @binding(9) var<storage, read> base: array<f32>;

override WG: u32 = 256;
// column_norm: write m / n (false: only n, which initializes m).
override SCALE: bool = true;
// row_rescale's operation: 0 merge, 1 unmerge, 2 delta, 3 delta of a merged weight.
override MODE: u32 = 0u;

// #include lib/flat_index.wgsl
// #include lib/workgroup_reduce.wgsl

// x [rows, cols] = rows offset.. offset + rows of the identity: x[i, j] = 1 where j = offset + i.
@compute @workgroup_size(WG)
fn identity_chunk(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                  @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= p.rows * p.cols) { return; }
  x[i] = select(0.0, 1.0, i % p.cols == p.offset + i / p.cols);
}

// y[j] += Σ_i x[i, j]², x [rows, cols]: one invocation per column, walking the rows.
@compute @workgroup_size(WG)
fn column_sumsq(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32) {
  let j = flat_index(wid, nwg, lid, WG);
  if (j >= p.cols) { return; }
  var acc = 0.0;
  for (var i = 0u; i < p.rows; i++) {
    let v = x[i * p.cols + j];
    acc = fma(v, v, acc);
  }
  y[j] += acc;
}

// norm[j] = n_j (above, over cols = N output rows of W) and y[j] = m_j / n_j, the layer's column scale.
// Initializing, norm is m itself and m and y are placeholders: m = n.
@compute @workgroup_size(WG)
fn column_norm(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_index) lid: u32) {
  let j = flat_index(wid, nwg, lid, WG);
  if (j >= p.cols) { return; }
  var cross = 0.0;
  var low = 0.0;
  for (var r = 0u; r < p.R; r++) {
    let b = B[j * p.R + r];
    cross = fma(b, P[r * p.cols + j], cross);
    var gb = 0.0;
    for (var q = 0u; q < p.R; q++) { gb = fma(G[r * p.R + q], B[j * p.R + q], gb); }
    low = fma(b, gb, low);
  }
  let n = sqrt(max(wn2[j] + 2.0 * p.s * cross + p.s * p.s * low, 0.0));
  norm[j] = n;
  if (SCALE) { y[j] = m[j] / n; }
}

// One workgroup per row j of x [rows, cols] (the weight, N rows of K):
//   merge (x = W + s B A):  norm[j] = ‖x_j‖;  x_j *= m_j / norm[j]
//   unmerge (x merged):     x_j *= norm[j] / m_j   (then s B A is subtracted)
//   delta (x = s B A):      n = ‖base_j + x_j‖;  x_j = m_j / n (base_j + x_j) - base_j
//   merged delta (x = s B A, base merged): x_j += (1 - norm[j] / m_j) base_j
@compute @workgroup_size(WG)
fn row_rescale(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_index) lid: u32) {
  let j = wid.y * nwg.x + wid.x;
  if (j >= p.rows) { return; } // uniform across the workgroup: the reduction below stays uniform
  let row = j * p.cols;
  if (MODE == 1u) {
    let f = norm[j] / m[j];
    for (var i = lid; i < p.cols; i += WG) { x[row + i] *= f; }
    return;
  }
  if (MODE == 3u) {
    let f = 1.0 - norm[j] / m[j];
    for (var i = lid; i < p.cols; i += WG) { x[row + i] = fma(f, base[row + i], x[row + i]); }
    return;
  }
  var acc = 0.0;
  for (var i = lid; i < p.cols; i += WG) {
    var v = x[row + i];
    if (MODE == 2u) { v += base[row + i]; }
    acc = fma(v, v, acc);
  }
  let n = sqrt(wg_sum(lid, acc));
  let f = m[j] / n;
  if (MODE == 0u) {
    if (lid == 0u) { norm[j] = n; }
    for (var i = lid; i < p.cols; i += WG) { x[row + i] *= f; }
  } else {
    for (var i = lid; i < p.cols; i += WG) {
      let w = base[row + i];
      x[row + i] = f * (w + x[row + i]) - w;
    }
  }
}
