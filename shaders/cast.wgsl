// f32 values into 16-bit ones packed two per u32 (element e in word e / 2, the low half first): the f16
// working copies of f32 master weights that mixed precision's products read. One invocation per word,
// so no two invocations share one; an odd count leaves the last word's high half zero.
// #include lib/half_encode.wgsl
// #include lib/flat_index.wgsl

struct Params { n: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;

override WG: u32 = 256;
override HALF: u32 = HALF_F16;

@compute @workgroup_size(WG)
fn pack_halves(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
               @builtin(local_invocation_index) lid: u32) {
  let w = flat_index(wid, nwg, lid, WG);
  let e = 2u * w;
  if (e >= p.n) { return; }
  var word = half_encode(x[e], HALF);
  if (e + 1u < p.n) { word = word | (half_encode(x[e + 1u], HALF) << 16u); }
  y[w] = word;
}
