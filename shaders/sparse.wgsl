// Sparse fine-tuning of a weight W [N, K] (HF layout [out, in]) at a fixed mask: idx holds sorted,
// unique flat indices n * K + k. Values are the trainable entries W[idx[p]].
struct Params { nnz: u32, T: u32, N: u32, K: u32, alpha: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> idx: array<u32>;
@group(0) @binding(2) var<storage, read> dY: array<f32>;    // [T, N]
@group(0) @binding(3) var<storage, read> X: array<f32>;     // [T, K]
@group(0) @binding(4) var<storage, read_write> values: array<f32>; // [nnz]
@group(0) @binding(5) var<storage, read_write> W: array<f32>;      // [N, K]
@group(0) @binding(6) var<storage, read_write> WH: array<atomic<u32>>; // [N, K] 16-bit, packed in pairs
@group(0) @binding(7) var<storage, read> Xh: array<u32>;    // [T, K] f16, packed in pairs (HALF_X)

override WG: u32 = 256;
override ACCUMULATE: bool = false;
override ADD: bool = false;

override HALF: u32 = 0;
// The layer input X is f16 (mixed precision's activations), read from Xh.
override HALF_X: bool = false;

// #include lib/flat_index.wgsl
// #include lib/half_store.wgsl

fn xat(e: u32) -> f32 {
  if (HALF_X) { return unpack2x16float(Xh[e / 2u])[e & 1u]; }
  return X[e];
}

// Sampled dense-dense product: values[p] = alpha * sum_t dY[t, n] * X[t, k] at (n, k) = idx[p], the
// gradient of y = x W^T at the masked entries only (nnz * T work instead of N * K * T). Sorted indices
// make neighbouring invocations share n and read neighbouring k, so loads of a row of X coalesce.
@compute @workgroup_size(WG)
fn sparse_grad(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= p.nnz) { return; }
  let flat = idx[i];
  let n = flat / p.K;
  let k = flat % p.K;
  // Four independent partial sums shorten the dependency chain.
  var acc = vec4f(0.0);
  var t = 0u;
  for (; t + 4u <= p.T; t += 4u) {
    let dy = vec4f(dY[t * p.N + n], dY[(t + 1u) * p.N + n], dY[(t + 2u) * p.N + n], dY[(t + 3u) * p.N + n]);
    let x = vec4f(xat(t * p.K + k), xat((t + 1u) * p.K + k), xat((t + 2u) * p.K + k), xat((t + 3u) * p.K + k));
    acc = fma(dy, x, acc);
  }
  for (; t < p.T; t++) { acc.x = fma(dY[t * p.N + n], xat(t * p.K + k), acc.x); }
  var g = p.alpha * ((acc.x + acc.y) + (acc.z + acc.w));
  if (ACCUMULATE) { g += values[i]; }
  values[i] = g;
}

// Block-sparse weight gradient: for each selected BS x BS block (idx holds block ids
// (n / BS) * (K / BS) + k / BS), values[blk * BS * BS + r * BS + c] = alpha * sum_t dY[t, n0 + r] X[t, k0 + c],
// a small tiled product per block. One 16x16 workgroup per block; each invocation owns (BS / 16)^2
// outputs; dY and X columns of the block are staged through workgroup memory TILE_T tokens at a time.
override BS: u32 = 16;
const TILE_T: u32 = 16u;
const MAX_BS: u32 = 64u;
var<workgroup> dyTile: array<f32, TILE_T * MAX_BS>; // [TILE_T, BS], BS <= MAX_BS
var<workgroup> xTile: array<f32, TILE_T * MAX_BS>;

@compute @workgroup_size(16, 16)
fn block_grad(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
              @builtin(local_invocation_id) lid3: vec3u, @builtin(local_invocation_index) lid: u32) {
  let blk = wid.x + wid.y * nwg.x;
  if (blk >= p.nnz) { return; } // uniform: the whole workgroup leaves together
  let id = idx[blk];
  let perRow = p.K / BS;
  let n0 = (id / perRow) * BS;
  let k0 = (id % perRow) * BS;
  let per = BS / 16u;
  var acc: array<f32, (MAX_BS / 16u) * (MAX_BS / 16u)>; // [per, per] with row stride MAX_BS / 16
  for (var t0 = 0u; t0 < p.T; t0 += TILE_T) {
    for (var e = lid; e < TILE_T * BS; e += 256u) {
      let t = t0 + e / BS;
      let j = e % BS;
      var a = 0.0;
      var b = 0.0;
      if (t < p.T) {
        a = dY[t * p.N + n0 + j];
        b = xat(t * p.K + k0 + j);
      }
      dyTile[e] = a;
      xTile[e] = b;
    }
    workgroupBarrier();
    for (var tt = 0u; tt < TILE_T; tt++) {
      for (var a = 0u; a < per; a++) {
        let dy = dyTile[tt * BS + lid3.y + 16u * a];
        for (var b = 0u; b < per; b++) {
          acc[a * (MAX_BS / 16u) + b] = fma(dy, xTile[tt * BS + lid3.x + 16u * b], acc[a * (MAX_BS / 16u) + b]);
        }
      }
    }
    workgroupBarrier();
  }
  for (var a = 0u; a < per; a++) {
    for (var b = 0u; b < per; b++) {
      let at = blk * BS * BS + (lid3.y + 16u * a) * BS + lid3.x + 16u * b;
      var g = p.alpha * acc[a * (MAX_BS / 16u) + b];
      if (ACCUMULATE) { g += values[at]; }
      values[at] = g;
    }
  }
}

// W[idx[p]] = values[p] (ADD: W[idx[p]] += values[p], e.g. to merge a sparse delta).
@compute @workgroup_size(WG)
fn scatter(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
           @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= p.nnz) { return; }
  let at = idx[i];
  if (ADD) { W[at] += values[i]; } else { W[at] = values[i]; }
}

// values[p] = W[idx[p]]: initial trainable values from the frozen weight.
@compute @workgroup_size(WG)
fn gather(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
          @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= p.nnz) { return; }
  values[i] = W[idx[i]];
}

// scatter and gather on a 16-bit weight (packed in pairs): the stored value is the f32 value rounded.
@compute @workgroup_size(WG)
fn scatter_half(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= p.nnz) { return; }
  store_half(idx[i], values[i]);
}

@compute @workgroup_size(WG)
fn gather_half(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= p.nnz) { return; }
  values[i] = load_half(idx[i]);
}
