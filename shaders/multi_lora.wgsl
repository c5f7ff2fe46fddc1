// Many LoRA adapters in one batch, after Punica's BGMV "shrink" and "expand" (and both in one pass for
// few rows, where launches cost more than the arithmetic): row t of the batch uses
// the adapter in slot slotOf(t) of a pool, and y[t] += scale * (x[t] A^T) B^T with that slot's A and B.
// A slot holds, for every module of its pool, A [R, inDim] at offA and B [outDim, R] at offB (an
// adapter of a smaller rank is zero-padded to R, which adds exact zeros). NONE: no adapter on the row.
struct Params {
  T: u32,
  inDim: u32,
  outDim: u32,
  R: u32,
  slotStride: u32,
  offA: u32,
  offB: u32,
  // NONE: each row's slot is rowSlot[t]; otherwise every row uses this slot (one adapter, no row map).
  fixedSlot: u32,
  scaleStride: u32,
  scaleOffset: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;        // [T, inDim]
@group(0) @binding(2) var<storage, read> pool: array<f32>;     // [slots, slotStride]
@group(0) @binding(3) var<storage, read> rowSlot: array<u32>;  // [T]
@group(0) @binding(4) var<storage, read> scales: array<f32>;   // [slots, scaleStride]
@group(0) @binding(5) var<storage, read_write> u: array<f32>;  // [T, R]
@group(0) @binding(6) var<storage, read_write> y: array<f32>;  // [T, outDim]

const NONE: u32 = 0xffffffffu;
const SHRINK_WG: u32 = 64u;
override WG: u32 = 256;

// #include lib/flat_index.wgsl

var<workgroup> partial: array<f32, SHRINK_WG>;

fn slotOf(t: u32) -> u32 {
  if (p.fixedSlot != NONE) { return p.fixedSlot; }
  return rowSlot[t];
}

// u[t, j] = sum_k x[t, k] A[j, k] of row t's adapter: one workgroup per (j, t), its invocations
// splitting k and summing in workgroup memory. Rows beyond T or without an adapter leave u alone.
@compute @workgroup_size(SHRINK_WG)
fn shrink(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
          @builtin(local_invocation_index) lid: u32) {
  let j = wid.x;
  let t = wid.y + wid.z * nwg.y;
  if (t >= p.T) { return; } // uniform: the whole workgroup leaves together
  let s = slotOf(t);
  if (s == NONE) { return; }
  let a = s * p.slotStride + p.offA + j * p.inDim;
  let xr = t * p.inDim;
  var acc = 0.0;
  for (var k = lid; k < p.inDim; k += SHRINK_WG) { acc = fma(x[xr + k], pool[a + k], acc); }
  partial[lid] = acc;
  workgroupBarrier();
  for (var w = SHRINK_WG / 2u; w > 0u; w >>= 1u) {
    if (lid < w) { partial[lid] += partial[lid + w]; }
    workgroupBarrier();
  }
  if (lid == 0u) { u[t * p.R + j] = partial[0]; }
}

// y[t, n] += scale * sum_j u[t, j] B[n, j] of row t's adapter: one invocation per output element.
@compute @workgroup_size(WG)
fn expand(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
          @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= p.T * p.outDim) { return; }
  let t = i / p.outDim;
  let n = i % p.outDim;
  let s = slotOf(t);
  if (s == NONE) { return; }
  let b = s * p.slotStride + p.offB + n * p.R;
  let ur = t * p.R;
  var acc = 0.0;
  for (var j = 0u; j < p.R; j++) { acc = fma(u[ur + j], pool[b + j], acc); }
  y[i] += scales[s * p.scaleStride + p.scaleOffset] * acc;
}

// Both steps for one row per workgroup, for batches of few rows (decode): u[j] summed in workgroup
// memory one rank row at a time, then every output of the row. One launch instead of two.
const ROW_WG: u32 = 256u;
const MAX_RANK: u32 = 64u;
var<workgroup> rowPartial: array<f32, ROW_WG>;
var<workgroup> uRow: array<f32, MAX_RANK>;

@compute @workgroup_size(ROW_WG)
fn row(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
       @builtin(local_invocation_index) lid: u32) {
  let t = wid.x + wid.y * nwg.x;
  if (t >= p.T) { return; } // uniform: the whole workgroup leaves together
  let s = slotOf(t);
  if (s == NONE) { return; }
  let base = s * p.slotStride;
  let xr = t * p.inDim;
  for (var j = 0u; j < p.R; j++) {
    let a = base + p.offA + j * p.inDim;
    var acc = 0.0;
    for (var k = lid; k < p.inDim; k += ROW_WG) { acc = fma(x[xr + k], pool[a + k], acc); }
    rowPartial[lid] = acc;
    workgroupBarrier();
    for (var w = ROW_WG / 2u; w > 0u; w >>= 1u) {
      if (lid < w) { rowPartial[lid] += rowPartial[lid + w]; }
      workgroupBarrier();
    }
    if (lid == 0u) { uRow[j] = rowPartial[0]; }
    workgroupBarrier();
  }
  let scale = scales[s * p.scaleStride + p.scaleOffset];
  for (var n = lid; n < p.outDim; n += ROW_WG) {
    let b = base + p.offB + n * p.R;
    var acc = 0.0;
    for (var j = 0u; j < p.R; j++) { acc = fma(uRow[j], pool[b + j], acc); }
    y[t * p.outDim + n] += scale * acc;
  }
}
