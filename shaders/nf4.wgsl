// NF4, QLoRA's 4-bit NormalFloat, for a frozen weight W of shape [N, K] (HF layout [out, in]): each block
// of 64 consecutive values along K (per row) stores its absolute maximum, and each value the index of
// the nearest of 16 code values (NF4_CODES, quantiles of a normal distribution scaled to [-1, 1], with
// an exact 0). Packed format, per row n:
//   qweight u32 [N, KW], KW = ceil(K / 8): code of value k in word n*KW + k/8, bits 4*(k%8).. (low nibble
//                                          first); padding nibbles past K are 0.
//   absmax  f32 [N, NB], NB = ceil(K / 64): the block's max |w| (as u32 bits here).
// Dequantized value: NF4_CODES[code] * absmax. Codes are chosen as bitsandbytes' kQuantizeBlockwise does:
// x = w * (1 / absmax) in f32, then the code whose interval (bounded by NF4_THRESHOLDS, the midpoints of
// adjacent codes, as f32) holds x; an all-zero block stores absmax 0 and code 0.
// bitsandbytes packs two codes per byte, the first in the high nibble, and its blocks run over the
// flattened tensor; with K a multiple of 64 its absmax array is this one, row for row.
//
// With DOUBLE_QUANT (QLoRA's double quantization) the absmax array is itself quantized, 8 bits per block
// instead of 32. Its T = N * NB values, block i = n * NB + b, are centred on their mean and stored as
//   absmax  u32 [ceil(T / 4) + ceil(T / 256) + 1]:
//     words [0, C), C = ceil(T / 4):   int8 code c_i of block i in byte i % 4 of word i / 4 (two's complement)
//     words [C, C + ceil(T / 256)):    f32 scale s_j of the 256 blocks j = i / 256: max |absmax_i - mean|
//     word  C + ceil(T / 256):         f32 mean of all absmax
//   with c_i = round(127 (absmax_i - mean) / s_j), and absmax_i read back as c_i / 127 * s_j + mean.
//   Codes are chosen with the exact absmax, so qweight is the same with and without it.
//
// Checkpoints bitsandbytes saved load as stored, with three variants (only read; quantize writes NF4
// per row):
//   FLAT_BLOCKS  the blocks of 64 run over the flattened [N, K] weight, so with K not a multiple of 64 a
//                block spans rows: the block of word w of row n is (n K + 8 w) / 64, T = ceil(N K / 64).
//                p.G is 8, so each word is its own group (K is a multiple of 8, so no word spans two
//                blocks). With K a multiple of 64 the two blockings are the same and this is off.
//   FP4          bitsandbytes' FP4 code table (FP4_CODES) instead of NF4's.
//   DQ_MAP       double quantization as bitsandbytes stores it: each code c_i is a u8 index into a map
//                of 256 f32 values (its dynamic map) held in the 256 words after the mean, and absmax_i
//                is map[c_i] * s_j + mean; with DQ_OFFSET the scales' groups of 256 start DQ_OFFSET
//                blocks before this weight (a part of a weight quantized whole).
struct Params { M: u32, N: u32, K: u32, G: u32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> W: array<f32>;
@group(0) @binding(2) var<storage, read_write> qweight: array<u32>;
@group(0) @binding(3) var<storage, read_write> absmax: array<u32>;
@group(0) @binding(5) var<storage, read_write> Y: array<f32>;
@group(0) @binding(6) var<storage, read> X: array<f32>;

const BLOCK = 64u; // p.G is 64, or 8 with FLAT_BLOCKS
override DOUBLE_QUANT: bool = false;
override FLAT_BLOCKS: bool = false;
override FP4: bool = false;
override DQ_MAP: bool = false;
override DQ_OFFSET: u32 = 0; // with DQ_MAP: blocks of the first scale's 256 that precede this weight

const NF4_CODES = array<f32, 16>(
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
  -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
  0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
);
// bitsandbytes' get_4bit_type('fp4'): sign, 2 exponent bits and 1 mantissa bit, divided by 12 in f32
// (its code 8 is +0).
const FP4_CODES = array<f32, 16>(
  0.0, 0.00520833349, 0.666666687, 1.0, 0.333333343, 0.5, 0.166666672, 0.25,
  0.0, -0.00520833349, -0.666666687, -1.0, -0.333333343, -0.5, -0.166666672, -0.25,
);
const NF4_THRESHOLDS = array<f32, 15>(
  -0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
  -0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
  0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
  0.5016634166240692, 0.6427869200706482, 0.8614784181118011,
);

// The code of a normalized value: how many thresholds it exceeds (bitsandbytes' decision tree; NaN, from
// an all-zero block, exceeds none).
fn nf4_code(x: f32) -> u32 {
  var code = 0u;
  for (var i = 0u; i < 15u; i++) { code += select(0u, 1u, x > NF4_THRESHOLDS[i]); }
  return code;
}

// One invocation per (row, block): it owns the block's 8 words and its absmax (with DOUBLE_QUANT, the
// absmax goes to Y, as f32 [N, NB], for double_quantize).
@compute @workgroup_size(WG)
fn quantize(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
            @builtin(local_invocation_index) lid: u32) {
  let nb = groups_per_row();
  let t = flat_index(wid, nwg, lid, WG);
  if (t >= p.N * nb) { return; }
  let n = t / nb;
  let b = t % nb;
  let k0 = b * BLOCK;
  let k1 = min(p.K, k0 + BLOCK);
  var amax = 0.0;
  for (var k = k0; k < k1; k++) { amax = max(amax, abs(W[n * p.K + k])); }
  if (DOUBLE_QUANT) { Y[t] = amax; } else { absmax[t] = bitcast<u32>(amax); }
  let inv = 1.0 / amax;
  let kw = words_per_row();
  for (var wd = k0 / 8u; wd < (k1 + 7u) / 8u; wd++) {
    var word = 0u;
    for (var j = 0u; j < 8u; j++) {
      let k = wd * 8u + j;
      if (k < k1) { word |= nf4_code(W[n * p.K + k] * inv) << (4u * j); }
    }
    qweight[n * kw + wd] = word;
  }
}

// Word offsets of the double-quantized absmax array: where the scales start, and the mean.
fn absmax_blocks() -> u32 {
  if (FLAT_BLOCKS) { return (p.N * p.K + BLOCK - 1u) / BLOCK; }
  return p.N * groups_per_row();
}
fn dq_scales_at() -> u32 { return (absmax_blocks() + 3u) / 4u; }
fn dq_mean_at() -> u32 { return dq_scales_at() + (absmax_blocks() + DQ_OFFSET + 255u) / 256u; }

// Double quantization, after quantize has left every block's absmax in Y: one workgroup of 256 takes
// the mean, then each invocation codes whole 256-block groups (64 words of codes and one scale).
var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256)
fn double_quantize(@builtin(local_invocation_index) lid: u32) {
  let total = p.N * groups_per_row();
  var sum = 0.0;
  for (var i = lid; i < total; i += 256u) { sum += Y[i]; }
  partial[lid] = sum;
  workgroupBarrier();
  for (var stride = 128u; stride > 0u; stride /= 2u) {
    if (lid < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  let mean = partial[0] / f32(total);
  for (var j = lid; j < (total + 255u) / 256u; j += 256u) {
    let i1 = min(total, j * 256u + 256u);
    var s = 0.0;
    for (var i = j * 256u; i < i1; i++) { s = max(s, abs(Y[i] - mean)); }
    absmax[dq_scales_at() + j] = bitcast<u32>(s);
    let inv = select(0.0, 127.0 / s, s > 0.0);
    for (var w = j * 64u; w < (i1 + 3u) / 4u; w++) {
      var word = 0u;
      for (var b = 0u; b < 4u; b++) {
        let i = w * 4u + b;
        if (i < i1) { word |= (u32(i32(clamp(round((Y[i] - mean) * inv), -127.0, 127.0))) & 255u) << (8u * b); }
      }
      absmax[w] = word;
    }
  }
  if (lid == 0u) { absmax[dq_mean_at()] = bitcast<u32>(mean); }
}

// The block's absmax, and the code values of a word (the decoder of lib/q4_matmul.wgsl).
fn q4_scale(n: u32, g: u32) -> f32 {
  var i = n * groups_per_row() + g;
  if (FLAT_BLOCKS) { i = (n * p.K + g * p.G) / BLOCK; }
  if (!DOUBLE_QUANT) { return bitcast<f32>(absmax[i]); }
  if (DQ_MAP) {
    let c = (absmax[i / 4u] >> (8u * (i % 4u))) & 255u;
    return bitcast<f32>(absmax[dq_mean_at() + 1u + c]) * bitcast<f32>(absmax[dq_scales_at() + (i + DQ_OFFSET) / 256u]) + bitcast<f32>(absmax[dq_mean_at()]);
  }
  let code = f32(i32(absmax[i / 4u] << (24u - 8u * (i % 4u))) >> 24u);
  return code / 127.0 * bitcast<f32>(absmax[dq_scales_at() + i / 256u]) + bitcast<f32>(absmax[dq_mean_at()]);
}
fn q4_offset(n: u32, g: u32) -> f32 { return 0.0; }
fn code_value(c: u32) -> f32 {
  if (FP4) { return FP4_CODES[c]; }
  return NF4_CODES[c];
}
fn q4_decode8(word: u32, offset: f32) -> array<vec4f, 2> {
  return array<vec4f, 2>(
    vec4f(code_value(word & 15u), code_value((word >> 4u) & 15u), code_value((word >> 8u) & 15u), code_value((word >> 12u) & 15u)),
    vec4f(code_value((word >> 16u) & 15u), code_value((word >> 20u) & 15u), code_value((word >> 24u) & 15u), code_value(word >> 28u)),
  );
}

// #include lib/q4_matmul.wgsl
