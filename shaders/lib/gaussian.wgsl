// Standard normal draws from a counter-based hash (the including shader includes lib/hash.wgsl): element e
// under a 32-bit key, by Box-Muller on two 24-bit uniforms drawn for the pair e / 2 (cosine for even e,
// sine for odd). Logarithm, sine and cosine are evaluated here by range reduction and short series, to
// about 1e-7, because WGSL lets implementations' own be far coarser (SwiftShader's log is off by 1e-4),
// and the host regenerates the same draws (src/kernels/zo.ts zoGaussian). The angle is 2 pi u - pi / 4,
// uniform like 2 pi u, so that each quadrant's reduced argument lies in [-pi / 4, pi / 4).

// ln(x) for x > 0 (normal f32): x = m 2^k with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh((m - 1) / (m + 1)).
fn precise_log(x: f32) -> f32 {
  let bits = bitcast<u32>(x);
  var k = i32((bits >> 23u) & 0xffu) - 127;
  var m = bitcast<f32>((bits & 0x007fffffu) | 0x3f800000u);
  if (m > 1.41421356) {
    m = m * 0.5;
    k = k + 1;
  }
  let s = (m - 1.0) / (m + 1.0);
  let s2 = s * s;
  let series = 1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0))));
  return 2.0 * s * series + f32(k) * 0.693147180559945;
}

// The two draws of pair `pair` under `key`: elements 2 pair (cosine) and 2 pair + 1 (sine).
fn gaussian_pair(key: u32, pair: u32) -> vec2f {
  let h1 = hash32(hash32(2u * pair) ^ key);
  let h2 = hash32(hash32(2u * pair + 1u) ^ key);
  let u1 = (f32(h1 >> 8u) + 0.5) / 16777216.0;
  let radius = sqrt(-2.0 * precise_log(u1));
  // Quadrant q = top two bits; r = (f - 1/2) pi / 2 with f the next 22 bits as a fraction.
  let q = h2 >> 30u;
  let r = (f32((h2 >> 8u) & 0x3fffffu) / 4194304.0 - 0.5) * 1.5707963267948966;
  let r2 = r * r;
  let sin_r = r * (1.0 - r2 / 6.0 * (1.0 - r2 / 20.0 * (1.0 - r2 / 42.0 * (1.0 - r2 / 72.0))));
  let cos_r = 1.0 - r2 / 2.0 * (1.0 - r2 / 12.0 * (1.0 - r2 / 30.0 * (1.0 - r2 / 56.0 * (1.0 - r2 / 90.0))));
  var c = cos_r;
  var s = sin_r;
  if (q == 1u) { c = -sin_r; s = cos_r; }
  else if (q == 2u) { c = -cos_r; s = -sin_r; }
  else if (q == 3u) { c = sin_r; s = -cos_r; }
  return radius * vec2f(c, s);
}

fn gaussian_draw(key: u32, e: u32) -> f32 {
  let z = gaussian_pair(key, e >> 1u);
  return select(z.x, z.y, (e & 1u) == 1u);
}
