// Cross-entropy over the LM head, chunked along the vocabulary: the host computes one chunk of logits
// [T, VC] at a time (a matmul into a scratch buffer), these kernels fold it into running per-row
// statistics, so full [T, V] logits never exist.
//   stats[3t + 0] = running max m, [3t + 1] = running sum l of exp(x - m), [3t + 2] = the target's logit
//   loss[t] = m + log(l) - logit[target]   (0 for ignored rows, target < 0, e.g. HF's -100)
// Backward recomputes each chunk (unless the forward's one chunk is still there) and turns it into
// d logits = scale * (softmax - onehot) in place.
// Soft-capping (softcap > 0, Gemma 2's final_logit_softcapping): every logit x is read as
// softcap * tanh(x / softcap), and its gradient carries the derivative 1 - tanh^2.
struct Params { T: u32, VC: u32, c0: u32, scale: f32, softcap: f32, edges: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>; // [T, VC] chunk starting at vocab c0
@group(0) @binding(2) var<storage, read> targets: array<i32>;
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> losses: array<f32>;

override WG: u32 = 256;
const NEG_INF = -3.402823e38;

// #include lib/tanh.wgsl

// The logit as the loss sees it.
fn logit(i: u32) -> f32 {
  let x = logits[i];
  if (p.softcap == 0.0) { return x; }
  return soft_cap(x, p.softcap);
}

// #include lib/workgroup_reduce.wgsl
// #include lib/flat_index.wgsl

// Which chunk this is: the first starts the statistics (nothing to merge), the last also writes the losses.
const FIRST_CHUNK = 1u;
const LAST_CHUNK = 2u;

// One workgroup per row: merge this chunk's max and sum of exponentials into the running statistics;
// after the last chunk, the row's loss.
@compute @workgroup_size(WG)
fn ce_chunk_stats(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                  @builtin(local_invocation_index) lid: u32) {
  let t = wid.y * nwg.x + wid.x;
  let live = t < p.T;
  let base = t * p.VC;
  // The statistics of the chunks before this one: none before the first.
  var before = vec3f(NEG_INF, 0.0, 0.0);
  if (live && (p.edges & FIRST_CHUNK) == 0u) { before = vec3f(stats[3u * t], stats[3u * t + 1u], stats[3u * t + 2u]); }
  var mx = NEG_INF;
  if (live) { for (var c = lid; c < p.VC; c += WG) { mx = max(mx, logit(base + c)); } }
  let chunkMax = wg_max(lid, mx);
  let m = max(before.x, chunkMax);
  var s = 0.0;
  if (live) { for (var c = lid; c < p.VC; c += WG) { s += exp(logit(base + c) - m); } }
  let chunkSum = wg_sum(lid, s);
  if (!live || lid != 0u) { return; }
  let l = before.y * exp(before.x - m) + chunkSum;
  let tgt = targets[t];
  var tgtLogit = before.z;
  if (tgt >= i32(p.c0) && tgt < i32(p.c0 + p.VC)) { tgtLogit = logit(base + u32(tgt) - p.c0); }
  stats[3u * t] = m;
  stats[3u * t + 1u] = l;
  stats[3u * t + 2u] = tgtLogit;
  if ((p.edges & LAST_CHUNK) != 0u) {
    var loss = 0.0;
    if (tgt >= 0) { loss = m + log(l) - tgtLogit; }
    losses[t] = loss;
  }
}

// In place: logits -> scale * (softmax - onehot(tgt)); ignored rows get 0.
@compute @workgroup_size(WG)
fn ce_chunk_grad(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
                 @builtin(local_invocation_index) lid: u32) {
  let i = flat_index(wid, nwg, lid, WG);
  if (i >= p.T * p.VC) { return; }
  let t = i / p.VC;
  let c = i % p.VC;
  let tgt = targets[t];
  var g = 0.0;
  if (tgt >= 0) {
    let lse = stats[3u * t] + log(stats[3u * t + 1u]);
    let x = logit(i);
    g = exp(x - lse);
    if (u32(tgt) == p.c0 + c) { g -= 1.0; }
    g *= p.scale;
    if (p.softcap != 0.0) { g *= 1.0 - (x / p.softcap) * (x / p.softcap); }
  }
  logits[i] = g;
}
