// Sparse AdamW: the fused AdamW update over the masked values and their moments, then each new value is
// written into the dense weight in place, W[idx[p]] = value, so the next forward pass sees it with no
// adapter and no separate scatter dispatch. A clip[0] below 0 (gradnorm.wgsl's skip) leaves all as it is.
// #include lib/adamw_update.wgsl
// #include lib/flat_index.wgsl

@group(0) @binding(0) var<uniform> o: AdamParams;
@group(0) @binding(1) var<storage, read_write> values: array<f32>;
@group(0) @binding(2) var<storage, read> grads: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read> clip: array<f32>;
@group(0) @binding(6) var<storage, read> idx: array<u32>;
@group(0) @binding(7) var<storage, read_write> W: array<f32>;
@group(0) @binding(8) var<storage, read_write> WH: array<atomic<u32>>; // a 16-bit weight, packed in pairs

override WG: u32 = 256;
override HALF: u32 = 0;

// #include lib/half_store.wgsl

// Updates value i and its moments; returns the new value.
fn update(i: u32) -> f32 {
  let r = adamw_update(o, values[i], grads[i], m[i], v[i], clip[0]);
  values[i] = r.x;
  m[i] = r.y;
  v[i] = r.z;
  return r.x;
}

@compute @workgroup_size(WG)
fn sparse_adamw(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= o.n || clip[0] < 0.0) { return; }
  W[idx[i]] = update(i);
}

// The same update on a 16-bit weight: the values stay f32 masters and the weight holds their rounding.
@compute @workgroup_size(WG)
fn sparse_adamw_half(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                     @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= o.n || clip[0] < 0.0) { return; }
  store_half(idx[i], update(i));
}
