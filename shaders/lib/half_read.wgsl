// Reads 16-bit weights (bfloat16 or IEEE binary16, two per 4 bytes, element 2i in the low half) as f32
// from the binding Bh, packed in u32 words: needs no feature. Devices with shader-f16 compile
// lib/half_read_f16.wgsl in its place (the shader embedder's 'f16' variant).
@group(0) @binding(7) var<storage, read> Bh: array<u32>;

fn half_at(i: u32, bf16: bool) -> f32 {
  let bits = (Bh[i >> 1u] >> ((i & 1u) * 16u)) & 0xffffu;
  if (bf16) { return bitcast<f32>(bits << 16u); }
  return unpack2x16float(bits).x;
}
