// Workgroup-wide reductions built on subgroup operations: the variant of lib/workgroup_reduce.wgsl
// (same functions, same contract) for devices with the `subgroups` feature; the shader embedder swaps
// it in and adds `enable subgroups;`. Correct for any subgroup size and any assignment of invocations to
// subgroups (WGSL promises neither that subgroups are contiguous in local_invocation_index nor their
// size): each subgroup reduces with one operation, one elected invocation per subgroup sets its bit in
// a mask, and the partials are placed by rank among those bits, so they are combined in the order of
// their leaders' indices, the same on every run. Three barriers whatever WG is, where the tree takes
// log2(WG) + 2. The mask starts zeroed (WebGPU zero-fills workgroup memory) and is cleared after use.
var<workgroup> wg_scratch: array<f32, WG>;
var<workgroup> wg_leaders: array<atomic<u32>, (WG + 31u) / 32u>;

// The partials of every subgroup in wg_scratch[0..count), in leader order; returns the count.
fn wg_place_partial(lid: u32, partial: f32) -> u32 {
  let lead = subgroupElect();
  if (lead) { atomicOr(&wg_leaders[lid / 32u], 1u << (lid % 32u)); }
  workgroupBarrier();
  var rank = 0u;
  var count = 0u;
  for (var w = 0u; w < (WG + 31u) / 32u; w++) {
    let bits = atomicLoad(&wg_leaders[w]);
    if (w < lid / 32u) { rank += countOneBits(bits); }
    if (w == lid / 32u) { rank += countOneBits(bits & ((1u << (lid % 32u)) - 1u)); }
    count += countOneBits(bits);
  }
  if (lead) { wg_scratch[rank] = partial; }
  workgroupBarrier();
  if (lid < (WG + 31u) / 32u) { atomicStore(&wg_leaders[lid], 0u); }
  return count;
}

fn wg_sum(lid: u32, x: f32) -> f32 {
  let count = wg_place_partial(lid, subgroupAdd(x));
  var total = wg_scratch[0];
  for (var i = 1u; i < count; i++) { total += wg_scratch[i]; }
  workgroupBarrier(); // the scratch and the mask may be reused as soon as this returns
  return total;
}

fn wg_max(lid: u32, x: f32) -> f32 {
  let count = wg_place_partial(lid, subgroupMax(x));
  var total = wg_scratch[0];
  for (var i = 1u; i < count; i++) { total = max(total, wg_scratch[i]); }
  workgroupBarrier();
  return total;
}
