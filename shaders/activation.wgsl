// Activations of the MLP, element-wise over n values; backward passes overwrite their outputs.
//   swiglu: h = act(gate) * up: act = silu(x) = x sigmoid(x) with GATE 0 (SwiGLU, Llama family), gelu with
//           GATE 1 (tanh form: GeGLU, Gemma's gelu_pytorch_tanh) or GATE 2 (exact)
//   gelu:   y = gelu(x); GELU_TANH: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   (GPT-2 'gelu_new')
//           otherwise exact: 0.5 x (1 + erf(x / sqrt(2)))
// With HALF_OUT the forward passes store their output as f16 in outh, two per word, one invocation per
// word (an even n): mixed precision's input to the down projection.
struct Params { n: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;       // gate, or x
@group(0) @binding(2) var<storage, read> b: array<f32>;       // up
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // h, or y
@group(0) @binding(4) var<storage, read> dout: array<f32>;
@group(0) @binding(5) var<storage, read_write> da: array<f32>;
@group(0) @binding(6) var<storage, read_write> db: array<f32>;
@group(0) @binding(7) var<storage, read_write> outh: array<u32>;

override WG: u32 = 256;
override GATE: u32 = 0u;
override HALF_OUT: bool = false;

// #include lib/flat_index.wgsl
// #include lib/half_encode.wgsl

fn sigmoid(x: f32) -> f32 { return 1.0 / (1.0 + exp(-x)); }

// #include lib/gelu.wgsl

// The gated MLP's activation of the gate, and its derivative.
fn gate_act(x: f32) -> f32 {
  if (GATE == 0u) { return x * sigmoid(x); }
  return gelu(x);
}

fn gate_grad(x: f32) -> f32 {
  if (GATE == 0u) {
    let s = sigmoid(x);
    return s * (1.0 + x * (1.0 - s));
  }
  return gelu_grad(x);
}

// Element i's forward output: the gated product, or the GELU alone.
fn swiglu_at(i: u32) -> f32 { return gate_act(a[i]) * b[i]; }
fn gelu_at(i: u32) -> f32 { return gelu(a[i]); }

// Word i of a 16-bit output: elements 2i and 2i + 1, rounded to f16.
fn pack_pair(lo: f32, hi: f32) -> u32 { return half_encode(lo, HALF_F16) | (half_encode(hi, HALF_F16) << 16u); }

@compute @workgroup_size(WG)
fn swiglu_forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                  @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (HALF_OUT) {
    if (2u * i < p.n) { outh[i] = pack_pair(swiglu_at(2u * i), swiglu_at(2u * i + 1u)); }
    return;
  }
  if (i >= p.n) { return; }
  out[i] = swiglu_at(i);
}

@compute @workgroup_size(WG)
fn swiglu_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                   @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= p.n) { return; }
  let g = a[i];
  let d = dout[i];
  da[i] = d * b[i] * gate_grad(g);
  db[i] = d * gate_act(g);
}

@compute @workgroup_size(WG)
fn gelu_forward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (HALF_OUT) {
    if (2u * i < p.n) { outh[i] = pack_pair(gelu_at(2u * i), gelu_at(2u * i + 1u)); }
    return;
  }
  if (i >= p.n) { return; }
  out[i] = gelu_at(i);
}

@compute @workgroup_size(WG)
fn gelu_backward(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= p.n) { return; }
  da[i] = dout[i] * gelu_grad(a[i]);
}
