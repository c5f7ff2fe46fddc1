// Row reductions: out[r] = reduce over c of x[r * cols + c], for x of shape [rows, cols].
// OP: OP_SUM, OP_MAX or OP_SUMSQ (sum of squares). One workgroup per row (rows folded into x and y).
// Column sums: out[c] (= or, with ACCUMULATE, +=) alpha * the sum over r of x[r * cols + c] (a bias's
// gradient), one invocation per column walking the rows, neighbouring invocations reading neighbouring
// columns.
struct Params { rows: u32, cols: u32, alpha: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

override WG: u32 = 256;
override OP: u32 = 0;
const OP_SUM = 0u;
const OP_MAX = 1u;
const OP_SUMSQ = 2u;

// #include lib/workgroup_reduce.wgsl

@compute @workgroup_size(WG)
fn reduce_rows(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_index) lid: u32) {
  let row = wid.y * nwg.x + wid.x;
  // Rows past the end still take part in the barriers (uniform control flow) but contribute nothing.
  let live = row < p.rows;
  let base = row * p.cols;
  var acc = select(0.0, -3.402823e38, OP == OP_MAX);
  if (live) {
    for (var c = lid; c < p.cols; c += WG) {
      let v = x[base + c];
      if (OP == OP_MAX) { acc = max(acc, v); } else if (OP == OP_SUMSQ) { acc = fma(v, v, acc); } else { acc += v; }
    }
  }
  var total: f32;
  if (OP == OP_MAX) { total = wg_max(lid, acc); } else { total = wg_sum(lid, acc); }
  if (live && lid == 0u) { out[row] = total; }
}

override ACCUMULATE: bool = false;
const COLUMNS_WG = 64u;
@compute @workgroup_size(COLUMNS_WG)
fn sum_columns(@builtin(global_invocation_id) gid: vec3u) {
  let c = gid.x;
  if (c >= p.cols) { return; }
  var acc = 0.0;
  for (var r = 0u; r < p.rows; r++) { acc += x[r * p.cols + c]; }
  acc *= p.alpha;
  if (ACCUMULATE) { out[c] += acc; } else { out[c] = acc; }
}
