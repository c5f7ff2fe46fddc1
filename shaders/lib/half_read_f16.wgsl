// lib/half_read.wgsl with native f16 loads (the shader embedder adds `enable f16;`): Ah and Bh are the
// same bytes seen as binary16 values. bfloat16 has no WGSL type, so its pair of halves is reassembled into the
// u32 word the packed reader would load, bit for bit.
@group(0) @binding(7) var<storage, read> Bh: array<f16>;
@group(0) @binding(8) var<storage, read> Ah: array<f16>;

fn bf16_of(pair: vec2<f16>, i: u32) -> f32 {
  return bitcast<f32>(((bitcast<u32>(pair) >> ((i & 1u) * 16u)) & 0xffffu) << 16u);
}

fn half_a(i: u32, bf16: bool) -> f32 {
  if (bf16) { return bf16_of(vec2<f16>(Ah[i & ~1u], Ah[i | 1u]), i); }
  return f32(Ah[i]);
}

fn half_b(i: u32, bf16: bool) -> f32 {
  if (bf16) { return bf16_of(vec2<f16>(Bh[i & ~1u], Bh[i | 1u]), i); }
  return f32(Bh[i]);
}
