// Embedding lookup and its gradient.
//   forward:  out[t, c] = scale * table[ids[t], c]  (+ out[t, c] with ACCUMULATE)
//             (+ posTable[positions[t], c] with POSITIONS: GPT-2's learned positions, in the same pass);
//             scale is 1, or Gemma's sqrt(hidden size);
//             TABLE_FORMAT 0: f32 in table; 1: bfloat16, 2: IEEE binary16, packed two per u32 in table_h
//             (element 2i in the low half), as the matmul's Bh.
//   backward: dtable[u, c] += scale * the sum of dout[t, c] over the tokens t with id u. Without float atomics this is
//   a segmented sum: the host groups token indices by id (unique ids, offsets, order), so each
//   invocation owns one (id, c) and the result is deterministic.
// PIECE: the table holds rows [r0, r0 + rows) of a vocabulary split into pieces that each fit a binding;
// tokens whose ids fall outside are another piece's (skipped), and rows are indexed from r0.
struct Params { T: u32, C: u32, rows: u32, U: u32, scale: f32, r0: u32, posRows: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;      // forward: [T]; backward: unique ids [U]
@group(0) @binding(2) var<storage, read> table: array<f32>;    // [rows, C]
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // [T, C]
@group(0) @binding(4) var<storage, read> offsets: array<u32>;  // [U + 1]
@group(0) @binding(5) var<storage, read> order: array<u32>;    // [T], token indices grouped by id
@group(0) @binding(6) var<storage, read> dout: array<f32>;     // [T, C]
@group(0) @binding(7) var<storage, read_write> dtable: array<f32>; // [rows, C]
@group(0) @binding(8) var<storage, read> table_h: array<u32>;  // [rows, C] 16-bit, packed
@group(0) @binding(9) var<storage, read> positions: array<u32>; // [T]
@group(0) @binding(10) var<storage, read> posTable: array<f32>; // [posRows, C]

override WG: u32 = 256;
override ACCUMULATE: bool = false;
override TABLE_FORMAT: u32 = 0u;
override PIECE: bool = false;
override POSITIONS: bool = false;

fn table_value(i: u32) -> f32 {
  if (TABLE_FORMAT == 0u) { return table[i]; }
  let bits = (table_h[i >> 1u] >> ((i & 1u) * 16u)) & 0xffffu;
  if (TABLE_FORMAT == 1u) { return bitcast<f32>(bits << 16u); }
  return unpack2x16float(bits).x;
}

// #include lib/flat_index.wgsl

@compute @workgroup_size(WG)
fn embedding_forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                     @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= p.T * p.C) { return; }
  let t = i / p.C;
  let c = i % p.C;
  var row = min(ids[t], p.rows - 1u);
  if (PIECE) {
    if (ids[t] < p.r0 || ids[t] - p.r0 >= p.rows) { return; }
    row = ids[t] - p.r0;
  }
  var v = table_value(row * p.C + c) * p.scale;
  if (POSITIONS) { v += posTable[min(positions[t], p.posRows - 1u) * p.C + c]; }
  if (ACCUMULATE) { out[i] += v; } else { out[i] = v; }
}

@compute @workgroup_size(WG)
fn embedding_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                      @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= p.U * p.C) { return; }
  let u = i / p.C;
  let c = i % p.C;
  var row = min(ids[u], p.rows - 1u);
  if (PIECE) {
    if (ids[u] < p.r0 || ids[u] - p.r0 >= p.rows) { return; }
    row = ids[u] - p.r0;
  }
  var acc = 0.0;
  for (var k = offsets[u]; k < offsets[u + 1u]; k++) { acc += dout[order[k] * p.C + c]; }
  dtable[row * p.C + c] += acc * p.scale;
}
