// Global gradient norm and the clipping factor that fused AdamW reads from a buffer, so clipping never
// needs a host round trip. Stage 1 (sumsq_partials) writes one partial sum of squares per workgroup at
// partials[offset + workgroup]; several tensors can fill disjoint ranges. Stage 2 (clip_factor, one
// workgroup) sums the partials: norm = scale * sqrt(sum), out[0] = min(1, maxNorm / (norm + 1e-6))
// (1 when maxNorm <= 0), out[1] = norm. This is torch.nn.utils.clip_grad_norm_'s rule; `scale` is the
// factor the optimizer applies to the raw gradient sum first (e.g. 1 / accumulation steps). With `skip`,
// a norm that is not finite (an overflow) makes out[0] = -1, which every optimizer kernel takes as "leave
// everything as it is" (PyTorch's GradScaler skips such a step), and counts the step in out[2].
struct Params { n: u32, offset: u32, numPartials: u32, maxNorm: f32, scale: f32, skip: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

override WG: u32 = 256;

// #include lib/workgroup_reduce.wgsl

@compute @workgroup_size(WG)
fn sumsq_partials(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                  @builtin(local_invocation_index) lid: u32) {
  var acc = 0.0;
  for (var i = wid.x * WG + lid; i < p.n; i += nwg.x * WG) {
    let v = x[i];
    acc = fma(v, v, acc);
  }
  let total = wg_sum(lid, acc);
  if (lid == 0u) { partials[p.offset + wid.x] = total; }
}

@compute @workgroup_size(WG)
fn clip_factor(@builtin(local_invocation_index) lid: u32) {
  var acc = 0.0;
  for (var i = lid; i < p.numPartials; i += WG) { acc += partials[i]; }
  let norm = p.scale * sqrt(wg_sum(lid, acc));
  if (lid == 0u) {
    var factor = 1.0;
    if (p.maxNorm > 0.0) { factor = min(1.0, p.maxNorm / (norm + 1e-6)); }
    // By its bits: a compiler may assume floats are finite and fold a comparison away.
    if (p.skip != 0u && (bitcast<u32>(norm) & 0x7f800000u) == 0x7f800000u) {
      factor = -1.0;
      out[2] += 1.0;
    }
    out[0] = factor;
    out[1] = norm;
  }
}
