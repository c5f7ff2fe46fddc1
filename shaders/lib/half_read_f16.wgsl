// lib/half_read.wgsl with native f16 loads (the shader embedder adds `enable f16;`): Bh is the same
// bytes seen as binary16 values. bfloat16 has no WGSL type, so its pair of halves is reassembled into the
// u32 word the packed reader would load, bit for bit.
@group(0) @binding(7) var<storage, read> Bh: array<f16>;

fn half_at(i: u32, bf16: bool) -> f32 {
  if (bf16) {
    let word = bitcast<u32>(vec2<f16>(Bh[i & ~1u], Bh[i | 1u]));
    return bitcast<f32>(((word >> ((i & 1u) * 16u)) & 0xffffu) << 16u);
  }
  return f32(Bh[i]);
}
