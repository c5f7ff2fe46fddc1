// 16-bit weights packed two per u32 (element e in word e / 2, the low half first), read and written one
// element at a time in place. Writes go through atomics on the word, clearing then setting only the
// element's own half, so two invocations writing the two halves of one word never lose each other's.
// The including module declares `WH: array<atomic<u32>>` (read_write) and `override HALF: u32`.
const HALF_BF16 = 0u;
const HALF_F16 = 1u;

// The element's 16 bits: bf16 rounded to nearest even (a NaN stays a NaN), or f16.
fn half_bits(v: f32) -> u32 {
  if (HALF == HALF_F16) { return pack2x16float(vec2f(v, 0.0)) & 0xffffu; }
  let b = bitcast<u32>(v);
  if ((b & 0x7fffffffu) > 0x7f800000u) { return (b >> 16u) | 0x40u; }
  return (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;
}

fn load_half(e: u32) -> f32 {
  let h = (atomicLoad(&WH[e / 2u]) >> (16u * (e & 1u))) & 0xffffu;
  if (HALF == HALF_F16) { return unpack2x16float(h).x; }
  return bitcast<f32>(h << 16u);
}

fn store_half(e: u32, v: f32) {
  let shift = 16u * (e & 1u);
  atomicAnd(&WH[e / 2u], ~(0xffffu << shift));
  atomicOr(&WH[e / 2u], half_bits(v) << shift);
}
