// Reads 16-bit values (bfloat16 or IEEE binary16, two per 4 bytes, element 2i in the low half) as f32
// from the bindings Ah and Bh, packed in u32 words: needs no feature. Devices with shader-f16 compile
// lib/half_read_f16.wgsl in its place (the shader embedder's 'f16' variant).
@group(0) @binding(7) var<storage, read> Bh: array<u32>;
@group(0) @binding(8) var<storage, read> Ah: array<u32>;

fn widen_half(word: u32, i: u32, bf16: bool) -> f32 {
  let bits = (word >> ((i & 1u) * 16u)) & 0xffffu;
  if (bf16) { return bitcast<f32>(bits << 16u); }
  return unpack2x16float(bits).x;
}

fn half_a(i: u32, bf16: bool) -> f32 { return widen_half(Ah[i >> 1u], i, bf16); }
fn half_b(i: u32, bf16: bool) -> f32 { return widen_half(Bh[i >> 1u], i, bf16); }
