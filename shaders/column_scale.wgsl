// A per-column scale on a linear layer's output (DoRA's magnitude over the column norm), y [rows, cols]:
//   forward:  z = y;  saved = z (SAVE);  y = z * s[col] + bias[col] (BIAS)
//   backward: dz = dy * s[col];  ds[col] += sum over rows of dy * z (GRAD), over divisor[col] (DIVIDE)
// The backward runs one invocation per column and walks the rows, so the column sum needs no atomics;
// neighbouring invocations read neighbouring columns of a row.
struct Params { rows: u32, cols: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> scale: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> saved: array<f32>;
@group(0) @binding(5) var<storage, read> dy: array<f32>;
@group(0) @binding(6) var<storage, read> z: array<f32>;
@group(0) @binding(7) var<storage, read_write> dz: array<f32>;
@group(0) @binding(8) var<storage, read_write> ds: array<f32>;
@group(0) @binding(9) var<storage, read> divisor: array<f32>;

override WG: u32 = 256;
override BIAS: bool = false;
override SAVE: bool = false;
override GRAD: bool = false;
// DoRA's magnitude m under s = m / n (n held constant): dm = Σ dy z / n.
override DIVIDE: bool = false;

// #include lib/flat_index.wgsl

@compute @workgroup_size(WG)
fn column_scale_forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                        @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= p.rows * p.cols) { return; }
  let col = i % p.cols;
  let v = y[i];
  if (SAVE) { saved[i] = v; }
  var out = v * scale[col];
  if (BIAS) { out += bias[col]; }
  y[i] = out;
}

@compute @workgroup_size(WG)
fn column_scale_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                         @builtin(local_invocation_index) lid: u32) {
  let col = flat_index(wid, nwg, lid, WG);
  if (col >= p.cols) { return; }
  let s = scale[col];
  var acc = 0.0;
  for (var r = 0u; r < p.rows; r++) {
    let i = r * p.cols + col;
    let g = dy[i];
    dz[i] = g * s;
    if (GRAD) { acc = fma(g, z[i], acc); }
  }
  if (GRAD) { ds[col] += select(acc, acc / divisor[col], DIVIDE); }
}
