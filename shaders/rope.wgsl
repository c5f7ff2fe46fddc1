// Rotary position embedding, Hugging Face's rotate-half convention, in place on x [T, rowStride] whose
// row t holds `heads` heads, headStride apart, starting at colOffset (q, k, or a slice of a fused qkv
// row); the first D values of each head rotate (D = headStride, or less with partial rotation, Phi-4-mini):
//   out[j]        = x[j] cos(a_j) - x[j + D/2] sin(a_j)
//   out[j + D/2]  = x[j + D/2] cos(a_j) + x[j] sin(a_j),   a_j = pos[t] * theta^(-2j/D), j < D/2
// table[(p * D/2 + j) * 2 + {0, 1}] = cos, sin of a_j at position p (computed on the host in float64).
// BACKWARD applies the inverse rotation (the transpose), which is the gradient of the forward.
struct Params { T: u32, heads: u32, D: u32, rowStride: u32, colOffset: u32, maxPos: u32, headStride: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> positions: array<u32>;
@group(0) @binding(3) var<storage, read> table: array<f32>;

override WG: u32 = 256;
override BACKWARD: bool = false;

// #include lib/flat_index.wgsl

@compute @workgroup_size(WG)
fn rope(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let half = p.D / 2u;
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= p.T * p.heads * half) { return; }
  let j = i % half;
  let h = (i / half) % p.heads;
  let t = i / (half * p.heads);
  let pos = min(positions[t], p.maxPos - 1u);
  let c = table[(pos * half + j) * 2u];
  var s = table[(pos * half + j) * 2u + 1u];
  if (BACKWARD) { s = -s; }
  let at = t * p.rowStride + p.colOffset + h * p.headStride + j;
  let a = x[at];
  let b = x[at + half];
  x[at] = a * c - b * s;
  x[at + half] = b * c + a * s;
}
