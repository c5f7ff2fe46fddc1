// Workgroup-wide tree reductions over one f32 per invocation. The including shader declares
// `override WG: u32` (the 1-D workgroup size, a power of two). Call from uniform control flow only:
// every invocation of the workgroup must reach the same call. The result is returned to all invocations.
var<workgroup> wg_scratch: array<f32, WG>;

fn wg_sum(lid: u32, x: f32) -> f32 {
  wg_scratch[lid] = x;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) { wg_scratch[lid] = wg_scratch[lid] + wg_scratch[lid + s]; }
    workgroupBarrier();
  }
  let total = wg_scratch[0];
  workgroupBarrier(); // the scratch may be reused as soon as this returns
  return total;
}

fn wg_max(lid: u32, x: f32) -> f32 {
  wg_scratch[lid] = x;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s = s >> 1u) {
    if (lid < s) { wg_scratch[lid] = max(wg_scratch[lid], wg_scratch[lid + s]); }
    workgroupBarrier();
  }
  let total = wg_scratch[0];
  workgroupBarrier();
  return total;
}
