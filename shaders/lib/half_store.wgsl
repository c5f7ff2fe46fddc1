// 16-bit weights packed two per u32 (element e in word e / 2, the low half first), read and written one
// element at a time in place. Writes go through atomics on the word, clearing then setting only the
// element's own half, so two invocations writing the two halves of one word never lose each other's.
// The including module declares `WH: array<atomic<u32>>` (read_write) and `override HALF: u32`.
// #include lib/half_encode.wgsl

fn load_half(e: u32) -> f32 {
  let h = (atomicLoad(&WH[e / 2u]) >> (16u * (e & 1u))) & 0xffffu;
  if (HALF == HALF_F16) { return unpack2x16float(h).x; }
  return bitcast<f32>(h << 16u);
}

fn store_half(e: u32, v: f32) {
  let shift = 16u * (e & 1u);
  atomicAnd(&WH[e / 2u], ~(0xffffu << shift));
  atomicOr(&WH[e / 2u], half_encode(v, HALF) << shift);
}
