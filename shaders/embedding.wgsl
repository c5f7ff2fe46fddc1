// Embedding lookup and its gradient.
//   forward:  out[t, c] = table[ids[t], c]  (+ out[t, c] with ACCUMULATE, e.g. adding position embeddings)
//   backward: dtable[u, c] += sum of dout[t, c] over the tokens t with id u. Without float atomics this is
//   a segmented sum: the host groups token indices by id (unique ids, offsets, order), so each
//   invocation owns one (id, c) and the result is deterministic.
struct Params { T: u32, C: u32, rows: u32, U: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;      // forward: [T]; backward: unique ids [U]
@group(0) @binding(2) var<storage, read> table: array<f32>;    // [rows, C]
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // [T, C]
@group(0) @binding(4) var<storage, read> offsets: array<u32>;  // [U + 1]
@group(0) @binding(5) var<storage, read> order: array<u32>;    // [T], token indices grouped by id
@group(0) @binding(6) var<storage, read> dout: array<f32>;     // [T, C]
@group(0) @binding(7) var<storage, read_write> dtable: array<f32>; // [rows, C]

override WG: u32 = 256;
override ACCUMULATE: bool = false;

// #include lib/flat_index.wgsl

@compute @workgroup_size(WG)
fn embedding_forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                     @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= p.T * p.C) { return; }
  let t = i / p.C;
  let c = i % p.C;
  let v = table[min(ids[t], p.rows - 1u) * p.C + c];
  if (ACCUMULATE) { out[i] += v; } else { out[i] = v; }
}

@compute @workgroup_size(WG)
fn embedding_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                      @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= p.U * p.C) { return; }
  let u = i / p.C;
  let c = i % p.C;
  var acc = 0.0;
  for (var k = offsets[u]; k < offsets[u + 1u]; k++) { acc += dout[order[k] * p.C + c]; }
  dtable[min(ids[u], p.rows - 1u) * p.C + c] += acc;
}
