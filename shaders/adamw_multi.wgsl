// Fused AdamW over many tensors in one dispatch, as torch's multi-tensor and fused AdamW: the tensors of
// one set of buffers (parameters, gradients, moments) are segments of one index space, each with its own
// offsets and step (learning rate, bias corrections, decay computed on the host in float64). An
// invocation takes PER consecutive elements, finds its first segment by binary search and walks on.
// clip[0] is the global clipping factor from gradnorm.wgsl; below 0, the step is skipped.
// #include lib/adamw_update.wgsl
// #include lib/flat_index.wgsl

struct MultiParams {
  // Elements over all segments, and the number of segments.
  total: u32,
  segments: u32,
  beta1: f32,
  oneMinusBeta1: f32,
  beta2: f32,
  oneMinusBeta2: f32,
  eps: f32,
  gradScale: f32,
}

// One tensor: its elements are [first, first + length) of the index space; offsets are in elements.
struct Segment {
  first: u32,
  length: u32,
  param: u32,
  grad: u32,
  moment: u32,
  stepSize: f32,
  bc2Sqrt: f32,
  decay: f32,
}

@group(0) @binding(0) var<uniform> o: MultiParams;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read> grads: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;
@group(0) @binding(4) var<storage, read_write> v: array<f32>;
@group(0) @binding(5) var<storage, read> clip: array<f32>;
@group(0) @binding(6) var<storage, read> segs: array<Segment>;

override WG: u32 = 256;
// Consecutive elements per invocation: more than 1 amortizes the search and the per-invocation cost of
// CPU implementations.
override PER: u32 = 1;

@compute @workgroup_size(WG)
fn adamw_multi(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_index) lid: u32) {
  let start = flat_index(wid, nwg, lid, WG) * PER;
  let scale = clip[0];
  if (start >= o.total || scale < 0.0) { return; }
  // The last segment whose first element is at or before `start`.
  var lo = 0u;
  var hi = o.segments - 1u;
  while (lo < hi) {
    let mid = (lo + hi + 1u) / 2u;
    if (segs[mid].first <= start) { lo = mid; } else { hi = mid - 1u; }
  }
  var seg = segs[lo];
  var s = lo;
  for (var e = 0u; e < PER; e++) {
    let i = start + e;
    if (i >= o.total) { return; }
    while (i >= seg.first + seg.length) {
      s++;
      seg = segs[s];
    }
    let k = i - seg.first;
    let p = AdamParams(0u, o.beta1, o.oneMinusBeta1, o.beta2, o.oneMinusBeta2, o.eps, seg.decay, seg.stepSize, seg.bc2Sqrt, o.gradScale);
    let r = adamw_update(p, params[seg.param + k], grads[seg.grad + k], m[seg.moment + k], v[seg.moment + k], scale);
    params[seg.param + k] = r.x;
    m[seg.moment + k] = r.y;
    v[seg.moment + k] = r.z;
  }
}
