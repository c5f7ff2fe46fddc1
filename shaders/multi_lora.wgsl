// Many LoRA adapters in one batch, after Punica's BGMV "shrink" and "expand": row t of the batch uses
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
override WG: u32 = 256;

// #include lib/flat_index.wgsl
// #include lib/workgroup_reduce.wgsl

fn slotOf(t: u32) -> u32 {
  if (p.fixedSlot != NONE) { return p.fixedSlot; }
  return rowSlot[t];
}

// u[t, j] = sum_k x[t, k] A[j, k] of row t's adapter: one invocation per (t, j), with no workgroup
// memory or barriers (what costs most on a software device, and little to save for rank-many outputs).
// Rows without an adapter leave u alone.
@compute @workgroup_size(WG)
fn shrink(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
          @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= p.T * p.R) { return; }
  let t = i / p.R;
  let s = slotOf(t);
  if (s == NONE) { return; }
  let a = s * p.slotStride + p.offA + (i % p.R) * p.inDim;
  let xr = t * p.inDim;
  // Four independent partial sums shorten the dependency chain.
  var acc = vec4f(0.0);
  var k = 0u;
  for (; k + 4u <= p.inDim; k += 4u) {
    acc = fma(vec4f(x[xr + k], x[xr + k + 1u], x[xr + k + 2u], x[xr + k + 3u]), vec4f(pool[a + k], pool[a + k + 1u], pool[a + k + 2u], pool[a + k + 3u]), acc);
  }
  for (; k < p.inDim; k++) { acc.x = fma(x[xr + k], pool[a + k], acc.x); }
  u[i] = (acc.x + acc.y) + (acc.z + acc.w);
}

// The same u, one workgroup per (t, j): its invocations stride over k and reduce across the workgroup
// (over subgroups where the device has them). For GPUs, where rank-many outputs per row are too few
// invocations to fill the device and each would walk a whole row alone.
@compute @workgroup_size(WG)
fn shrink_cooperative(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                      @builtin(local_invocation_index) lid: u32) {
  let i = wid.y * nwg.x + wid.x;
  // Workgroups past the end, or on rows without an adapter, still take part in the reduction's
  // barriers (uniform control flow) but read and write nothing.
  let live = i < p.T * p.R;
  var s = NONE;
  if (live) { s = slotOf(i / p.R); }
  let a = s * p.slotStride + p.offA + (i % p.R) * p.inDim;
  let xr = (i / p.R) * p.inDim;
  var acc = 0.0;
  if (s != NONE) {
    for (var k = lid; k < p.inDim; k += WG) { acc = fma(x[xr + k], pool[a + k], acc); }
  }
  let total = wg_sum(lid, acc);
  if (s != NONE && lid == 0u) { u[i] = total; }
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

