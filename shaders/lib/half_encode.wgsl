// f32 to 16-bit bits, rounded to nearest even in integer arithmetic, so every device rounds alike and as
// the host does (src/io/safetensors.ts f32ToF16, f32ToBf16): WGSL leaves the rounding of an f32 to f16
// conversion to the implementation. A finite f32 past f16's range becomes an infinity; a NaN stays a
// NaN (quiet). `format` is HALF_BF16 or HALF_F16.
const HALF_BF16 = 0u;
const HALF_F16 = 1u;

fn bf16_bits(v: f32) -> u32 {
  let b = bitcast<u32>(v);
  if ((b & 0x7fffffffu) > 0x7f800000u) { return (b >> 16u) | 0x40u; }
  return (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;
}

fn f16_bits(v: f32) -> u32 {
  let x = bitcast<u32>(v);
  let sign = (x >> 16u) & 0x8000u;
  let exp = i32((x >> 23u) & 0xffu);
  var frac = x & 0x7fffffu;
  if (exp == 255) {
    if (frac != 0u) { return sign | 0x7e00u; }
    return sign | 0x7c00u;
  }
  let e = exp - 127 + 15;
  if (e >= 31) { return sign | 0x7c00u; }
  if (e <= 0) {
    // Subnormal (or zero): the implicit bit joins the fraction, shifted out by 14 - e.
    if (e < -10) { return sign; }
    frac = frac | 0x800000u;
    let shift = u32(14 - e);
    var half = frac >> shift;
    let rem = frac & ((1u << shift) - 1u);
    let mid = 1u << (shift - 1u);
    if (rem > mid || (rem == mid && (half & 1u) == 1u)) { half += 1u; }
    return sign | half;
  }
  // Normal: 10 fraction bits kept; a carry out of the fraction raises the exponent (to infinity at the top).
  var h = (u32(e) << 10u) | (frac >> 13u);
  let rem = frac & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u) == 1u)) { h += 1u; }
  return sign | h;
}

fn half_encode(v: f32, format: u32) -> u32 {
  if (format == HALF_F16) { return f16_bits(v); }
  return bf16_bits(v);
}
