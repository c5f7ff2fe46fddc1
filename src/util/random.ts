/** Seeded randomness for reproducible initialization, data and tests (mulberry32 + Box-Muller). */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** n draws from N(0, std^2). */
export function randn(n: number, rand: () => number, std = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(rand(), 1e-12);
    out[i] = std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
  }
  return out;
}

/** The integer hash the dropout kernel uses (shaders/elementwise.wgsl hash32), for host-side masks. */
export function hash32(x: number): number {
  let h = x >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d) >>> 0;
  h ^= h >>> 15;
  h = Math.imul(h, 0x846ca68b) >>> 0;
  h ^= h >>> 16;
  return h >>> 0;
}

/** The u32 a hash must reach for dropout probability p to keep an element: p * 2^32, within u32. */
export function dropoutThreshold(p: number): number {
  return Math.min(Math.floor(p * 2 ** 32), 2 ** 32 - 1);
}

/** The dropout kernels' mask: element i is kept when hash32(i ^ hash32(seed)) >= dropoutThreshold(p). */
export function dropoutKeep(i: number, seed: number, p: number): boolean {
  return hash32((i ^ hash32(seed)) >>> 0) >= dropoutThreshold(p);
}
