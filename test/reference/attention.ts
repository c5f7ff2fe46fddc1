/**
 * float64 naive attention: the full score matrix per (sequence, head), causal, segment and sliding-window
 * masks, softmax, and the textbook backward through the explicit probability matrix. Flash attention must
 * equal it.
 * Layout as shaders/attention.wgsl: q [B*S, nH, D], k and v [B*S, nKV, D].
 */
type Arr = ArrayLike<number>;

export interface AttnShape {
  B: number;
  S: number;
  nH: number;
  nKV: number;
  D: number;
  segments?: Arr;
  /** Sliding window: query i sees keys j with i - j < window. */
  window?: number | null;
  /** Score scale; default 1 / sqrt(D). */
  scale?: number;
  /** Soft-capping of the scaled scores: c * tanh(s / c). */
  softcap?: number | null;
}

/** The scaled, possibly soft-capped score, and its derivative in the raw dot product. */
function score(s: AttnShape, dot: number): [number, number] {
  const scale = s.scale ?? 1 / Math.sqrt(s.D);
  if (!s.softcap) return [dot * scale, scale];
  const t = Math.tanh((dot * scale) / s.softcap);
  return [s.softcap * t, (1 - t * t) * scale];
}

function visible(s: AttnShape, b: number, i: number, j: number): boolean {
  if (s.window && i - j >= s.window) return false;
  return !s.segments || s.segments[b * s.S + i] === s.segments[b * s.S + j];
}

function probs(s: AttnShape, q: Arr, k: Arr, b: number, h: number): Float64Array {
  const { S, nH, nKV, D } = s;
  const g = Math.floor(h / (nH / nKV));
  const P = new Float64Array(S * S);
  for (let i = 0; i < S; i++) {
    let max = -Infinity;
    const row = b * S + i;
    for (let j = 0; j <= i; j++) {
      const col = b * S + j;
      if (!visible(s, b, i, j)) continue;
      let dot = 0;
      for (let d = 0; d < D; d++) dot += q[(row * nH + h) * D + d] * k[(col * nKV + g) * D + d];
      P[i * S + j] = score(s, dot)[0];
      max = Math.max(max, P[i * S + j]);
    }
    let sum = 0;
    for (let j = 0; j <= i; j++) {
      P[i * S + j] = visible(s, b, i, j) ? Math.exp(P[i * S + j] - max) : 0;
      sum += P[i * S + j];
    }
    for (let j = 0; j <= i; j++) P[i * S + j] /= sum;
  }
  return P;
}

// o (B*S, nH, D)
export function attentionForwardRef(s: AttnShape, q: Arr, k: Arr, v: Arr): Float64Array {
  const { B, S, nH, nKV, D } = s;
  const o = new Float64Array(B * S * nH * D);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < nH; h++) {
      const g = Math.floor(h / (nH / nKV));
      const P = probs(s, q, k, b, h);
      for (let i = 0; i < S; i++) {
        for (let j = 0; j <= i; j++) {
          const pij = P[i * S + j];
          if (!pij) continue;
          for (let d = 0; d < D; d++) o[((b * S + i) * nH + h) * D + d] += pij * v[((b * S + j) * nKV + g) * D + d];
        }
      }
    }
  }
  return o;
}

// dq (like q), dk and dv (like k) for upstream dO (like o)
export function attentionBackwardRef(s: AttnShape, q: Arr, k: Arr, v: Arr, dO: Arr) {
  const { B, S, nH, nKV, D } = s;
  const dq = new Float64Array(q.length);
  const dk = new Float64Array(k.length);
  const dv = new Float64Array(v.length);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < nH; h++) {
      const g = Math.floor(h / (nH / nKV));
      const P = probs(s, q, k, b, h);
      const qi = (i: number) => ((b * S + i) * nH + h) * D;
      const kj = (j: number) => ((b * S + j) * nKV + g) * D;
      for (let i = 0; i < S; i++) {
        // dP_ij = dO_i . v_j; dS_ij = P_ij (dP_ij - sum_j' P_ij' dP_ij')
        const dP = new Float64Array(i + 1);
        let rowDot = 0;
        for (let j = 0; j <= i; j++) {
          for (let d = 0; d < D; d++) dP[j] += dO[qi(i) + d] * v[kj(j) + d];
          rowDot += P[i * S + j] * dP[j];
        }
        for (let j = 0; j <= i; j++) {
          const pij = P[i * S + j];
          if (!pij) continue;
          let dot = 0;
          for (let d = 0; d < D; d++) dot += q[qi(i) + d] * k[kj(j) + d];
          const ds = pij * (dP[j] - rowDot) * score(s, dot)[1];
          for (let d = 0; d < D; d++) {
            dv[kj(j) + d] += pij * dO[qi(i) + d];
            dq[qi(i) + d] += ds * k[kj(j) + d];
            dk[kj(j) + d] += ds * q[qi(i) + d];
          }
        }
      }
    }
  }
  return { dq, dk, dv };
}
