// Attention's common part, included by attention.wgsl (one invocation per row, or tiled) and
// attention_blocked.wgsl (score blocks): the layout and semantics in attention.wgsl's header, the
// bindings (WebGPU's default limit of 8 storage buffers holds per entry point), head-row quads, masks,
// soft-capping and delta.
struct Params {
  B: u32, S: u32, nH: u32, nKV: u32, scale: f32, Skv: u32, qOffset: u32, window: u32, softcap: f32,
  // The one-dispatch backward passes: where dQ, dK and dV start in dQKV (elements); the two-pass blocked
  // backward: where the kept probabilities start (their gradients follow, B nH S S elements on).
  dqAt: u32, dkAt: u32, dvAt: u32, keptAt: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> segments: array<u32>;
@group(0) @binding(5) var<storage, read_write> o: array<f32>;
@group(0) @binding(6) var<storage, read_write> stats: array<f32>;
@group(0) @binding(7) var<storage, read> dO: array<f32>;
@group(0) @binding(8) var<storage, read_write> dQ: array<f32>;
@group(0) @binding(9) var<storage, read_write> dK: array<f32>;
@group(0) @binding(10) var<storage, read_write> dV: array<f32>;
@group(0) @binding(11) var<storage, read> seqOffsets: array<u32>;

// dQ, dK and dV in one buffer, for the backward passes in one dispatch.
@group(0) @binding(12) var<storage, read_write> dQKV: array<f32>;

override HD: u32 = 1u; // the head dim, D
override SEGMENTS: bool = false;
const NEG_INF = -3.402823e38;

// Head rows are held as HD4 vec4s, the last zero-padded past HD: a quarter of the loop steps and memory
// operations of scalars, which CPU implementations (SwiftShader) pay for one by one. Every dot product
// over a head row sums the same quads in the same order, so that dO . O (delta) and dO . v_j agree to the
// last bit where O = v_j (a query that sees one key), and their difference is exactly zero.
override HD4: u32 = (HD + 3u) / 4u;
// Elements 4c .. 4c + 3 of a head row, clamped into it, and which of them lie inside it.
fn quad(c: u32) -> vec4u { return min(vec4u(4u * c) + vec4u(0u, 1u, 2u, 3u), vec4u(HD - 1u)); }
fn inside(c: u32) -> vec4<bool> { return vec4u(4u * c) + vec4u(0u, 1u, 2u, 3u) < vec4u(HD); }
// Quad c of the head row at element `at` of q, k, v, dO or o; zero past HD.
fn q4(at: u32, c: u32) -> vec4f { let i = quad(c) + at; return select(vec4f(0.0), vec4f(q[i.x], q[i.y], q[i.z], q[i.w]), inside(c)); }
fn k4(at: u32, c: u32) -> vec4f { let i = quad(c) + at; return select(vec4f(0.0), vec4f(k[i.x], k[i.y], k[i.z], k[i.w]), inside(c)); }
fn v4(at: u32, c: u32) -> vec4f { let i = quad(c) + at; return select(vec4f(0.0), vec4f(v[i.x], v[i.y], v[i.z], v[i.w]), inside(c)); }
fn dO4(at: u32, c: u32) -> vec4f { let i = quad(c) + at; return select(vec4f(0.0), vec4f(dO[i.x], dO[i.y], dO[i.z], dO[i.w]), inside(c)); }
fn o4(at: u32, c: u32) -> vec4f { let i = quad(c) + at; return select(vec4f(0.0), vec4f(o[i.x], o[i.y], o[i.z], o[i.w]), inside(c)); }

fn q_at(row: u32, h: u32) -> u32 { return (row * p.nH + h) * HD; }
fn kv_at(row: u32, g: u32) -> u32 { return (row * p.nKV + g) * HD; }

// First key position that query position i sees under the sliding window. The helpers the score blocks
// inline per score are branch-free: SwiftShader's compiler slows, and its memory grows, with each branch.
fn window_start(i: u32) -> u32 {
  return select(i + 1u - p.window, 0u, (p.window == 0u) | (i < p.window));
}

// One past the last query position that sees key position j under the sliding window (capped at S).
fn window_end(j: u32) -> u32 {
  if (p.window == 0u) { return p.S; }
  return min(p.S, j + p.window);
}

// #include lib/tanh.wgsl

fn cap(s: f32) -> f32 {
  if (p.softcap == 0.0) { return s; }
  return soft_cap(s, p.softcap);
}

// d cap(s) / d s from the capped score c.
fn cap_grad(c: f32) -> f32 {
  if (p.softcap == 0.0) { return 1.0; }
  let t = c / p.softcap;
  return 1.0 - t * t;
}

fn visible(i: u32, j: u32) -> bool {
  // j <= i is guaranteed by the loops; only the segment test remains.
  if (SEGMENTS) { return segments[i] == segments[j]; }
  return true;
}

// delta = sum over d of dO * O for (row, h): the softmax-backward term shared by every key of that row.
fn row_delta(row: u32, h: u32) -> f32 {
  let base = q_at(row, h);
  var s = 0.0;
  for (var c = 0u; c < HD4; c++) { s += dot(dO4(base, c), o4(base, c)); }
  return s;
}
