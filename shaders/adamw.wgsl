// Fused AdamW over a flat parameter buffer: one dispatch reads param, grad, m, v once and writes
// param, m, v once (the unfused form takes ~8 element-wise passes). clip[0] is the global clipping
// factor produced by gradnorm.wgsl (write 1.0 there to disable clipping); below 0, the step is skipped.
// #include lib/adamw_update.wgsl
// #include lib/flat_index.wgsl

@group(0) @binding(0) var<uniform> o: AdamParams;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read> grads: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read> clip: array<f32>;

override WG: u32 = 256;
// Elements per invocation, strided by the launch size so neighbouring invocations touch neighbouring
// elements. More than 1 amortizes the per-invocation cost of CPU implementations.
override PER: u32 = 1;

@compute @workgroup_size(WG)
fn adamw_step(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
              @builtin(local_invocation_index) lid: u32) {
  let first = flat_index(wid, nwg, lid, WG);
  let stride = nwg.x * nwg.y * WG;
  let scale = clip[0];
  if (scale < 0.0) { return; }
  for (var e = 0u; e < PER; e++) {
    let i = first + e * stride;
    if (i >= o.n) { return; }
    let r = adamw_update(o, params[i], grads[i], m[i], v[i], scale);
    params[i] = r.x;
    m[i] = r.y;
    v[i] = r.z;
  }
}
