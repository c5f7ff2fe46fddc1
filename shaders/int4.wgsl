// Group-wise asymmetric int4 for a frozen weight W of shape [N, K] (HF layout [out, in]); groups of G
// consecutive values along K (G = 32, 64 or 128, a multiple of 8). Packed format, per row n:
//   qweight u32 [N, KW], KW = ceil(K / 8): value k in word n*KW + k/8, bits 4*(k%8).. (low nibble first);
//                                          padding nibbles past K are 0.
//   scales  u32 [N, SW], SW = ceil(NG / 2), NG = ceil(K / G): f16 scale of group g in word n*SW + g/2,
//                                          low half for even g (pack2x16float order); unused half 0.
//   zeros   u32 [N, ZW], ZW = ceil(NG / 8): stored zero point (0..15) of group g in word n*ZW + g/8,
//                                          nibble g%8.
// Dequantized value: (q - (zero + ZB)) * scale, where the uniform ZB is 0 for weights this shader
// quantizes and 1 for GPTQ checkpoints (which store zero - 1, so their zero points run 1..16). Each
// group's range is widened to include 0 so zero fits 0..15, which bounds the error by scale / 2.
struct Params { M: u32, N: u32, K: u32, G: u32, ZB: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> W: array<f32>;
@group(0) @binding(2) var<storage, read_write> qweight: array<u32>;
@group(0) @binding(3) var<storage, read_write> scales: array<u32>;
@group(0) @binding(4) var<storage, read_write> zeros: array<u32>;
@group(0) @binding(5) var<storage, read_write> Y: array<f32>;
@group(0) @binding(6) var<storage, read> X: array<f32>;


const F16_MIN_NORMAL = 6.103515625e-5; // 2^-14
const F16_MAX = 65504.0;

// The group's f16 scale and its zero point, as the 4-bit products (lib/q4_matmul.wgsl) take them.
fn q4_scale(n: u32, g: u32) -> f32 {
  let sw = (groups_per_row() + 1u) / 2u;
  return unpack2x16float(scales[n * sw + g / 2u])[g % 2u];
}

fn q4_offset(n: u32, g: u32) -> f32 {
  let zw = (groups_per_row() + 7u) / 8u;
  return f32(((zeros[n * zw + g / 8u] >> (4u * (g % 8u))) & 15u) + p.ZB);
}

// One invocation per (row, block of 8 groups): it owns whole words of all three arrays, so no atomics.
@compute @workgroup_size(WG)
fn quantize(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_index) lid: u32) {
  let ng = groups_per_row();
  let zw = (ng + 7u) / 8u;
  let t = flat_index(wid, nwg, lid, WG);
  if (t >= p.N * zw) { return; }
  let n = t / zw;
  let blk = t % zw;
  let kw = words_per_row();
  let sw = (ng + 1u) / 2u;
  var zword = 0u;
  var pair = vec2f(0.0);
  let gEnd = min(ng, blk * 8u + 8u);
  for (var g = blk * 8u; g < gEnd; g++) {
    let k0 = g * p.G;
    let k1 = min(p.K, k0 + p.G);
    var lo = 0.0;
    var hi = 0.0;
    for (var k = k0; k < k1; k++) {
      let w = W[n * p.K + k];
      lo = min(lo, w);
      hi = max(hi, w);
    }
    // Quantize with the scale as stored (f16), so dequantization reproduces exactly what was rounded.
    // A nonzero range gets at least the smallest normal f16 scale: pack2x16float may flush subnormals
    // to zero, which would erase the group, and subnormal scales round far coarser than 2^-11.
    let span = hi - lo;
    let stored = unpack2x16float(pack2x16float(vec2f(clamp(span / 15.0, F16_MIN_NORMAL, F16_MAX), 0.0))).x;
    let s = select(0.0, stored, span > 0.0);
    let inv = select(0.0, 1.0 / s, s > 0.0);
    let zp = clamp(round(-lo * inv), 0.0, 15.0);
    zword |= u32(zp) << (4u * (g % 8u));
    pair[g % 2u] = s;
    if (g % 2u == 1u || g + 1u == gEnd) {
      scales[n * sw + g / 2u] = pack2x16float(pair);
      pair = vec2f(0.0);
    }
    for (var wd = k0 / 8u; wd < (k1 + 7u) / 8u; wd++) {
      var word = 0u;
      for (var j = 0u; j < 8u; j++) {
        let k = wd * 8u + j;
        if (k < k1) {
          let q = clamp(round(W[n * p.K + k] * inv) + zp, 0.0, 15.0);
          word |= u32(q) << (4u * j);
        }
      }
      qweight[n * kw + wd] = word;
    }
  }
  zeros[n * zw + blk] = zword;
}

// A word's 8 codes minus the zero point, as two vec4s (the decoder of lib/q4_matmul.wgsl).
fn q4_decode8(word: u32, zero: f32) -> array<vec4f, 2> {
  return array<vec4f, 2>(
    vec4f(f32(word & 15u), f32((word >> 4u) & 15u), f32((word >> 8u) & 15u), f32((word >> 12u) & 15u)) - zero,
    vec4f(f32((word >> 16u) & 15u), f32((word >> 20u) & 15u), f32((word >> 24u) & 15u), f32(word >> 28u)) - zero,
  );
}

// #include lib/q4_matmul.wgsl
