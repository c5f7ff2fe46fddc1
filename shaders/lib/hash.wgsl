// A stateless integer hash (the "lowbias32" finalizer); src/util/random.ts has the same function.
fn hash32(x: u32) -> u32 {
  var h = x;
  h ^= h >> 16u;
  h *= 0x7feb352du;
  h ^= h >> 15u;
  h *= 0x846ca68bu;
  h ^= h >> 16u;
  return h;
}

// Whether dropout keeps element i of a mask: hash(i ^ hash(seed)) >= threshold, threshold = p * 2^32.
fn dropout_keeps(i: u32, seed: u32, threshold: u32) -> bool {
  return hash32(i ^ hash32(seed)) >= threshold;
}
