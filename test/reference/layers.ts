/**
 * float64 references for the layer kernels (norm, rope, activation, embedding shaders), forward and
 * backward, in the conventions of Hugging Face's PyTorch code. Backward passes return fresh gradients;
 * they are checked against finite differences in gradcheck.node.test.ts.
 */
import type { RopeScaling } from '../../src/kernels/rope.js';

type Arr = ArrayLike<number>;

// y (rows, cols), stats (rows, 2) = mean, rstd
export function normForwardRef(kind: 'rmsnorm' | 'layernorm', x: Arr, w: Arr, b: Arr | null, rows: number, cols: number, eps: number) {
  const y = new Float64Array(rows * cols);
  const stats = new Float64Array(rows * 2);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    if (kind === 'layernorm') {
      for (let c = 0; c < cols; c++) mean += x[r * cols + c];
      mean /= cols;
    }
    let ss = 0;
    for (let c = 0; c < cols; c++) ss += (x[r * cols + c] - mean) ** 2;
    const rstd = 1 / Math.sqrt(ss / cols + eps);
    for (let c = 0; c < cols; c++) y[r * cols + c] = (x[r * cols + c] - mean) * rstd * w[c] + (b ? b[c] : 0);
    stats[2 * r] = mean;
    stats[2 * r + 1] = rstd;
  }
  return { y, stats };
}

// dx (rows, cols), dw (cols), db (cols) for upstream dy (rows, cols)
export function normBackwardRef(kind: 'rmsnorm' | 'layernorm', x: Arr, w: Arr, dy: Arr, rows: number, cols: number, eps: number) {
  const { stats } = normForwardRef(kind, x, w, null, rows, cols, eps);
  const dx = new Float64Array(rows * cols);
  const dw = new Float64Array(cols);
  const db = new Float64Array(cols);
  for (let r = 0; r < rows; r++) {
    const mean = stats[2 * r];
    const rstd = stats[2 * r + 1];
    let meanG = 0;
    let meanGx = 0;
    for (let c = 0; c < cols; c++) {
      const g = dy[r * cols + c] * w[c];
      const xhat = (x[r * cols + c] - mean) * rstd;
      meanG += g / cols;
      meanGx += (g * xhat) / cols;
      dw[c] += dy[r * cols + c] * xhat;
      db[c] += dy[r * cols + c];
    }
    if (kind === 'rmsnorm') meanG = 0;
    for (let c = 0; c < cols; c++) {
      const g = dy[r * cols + c] * w[c];
      const xhat = (x[r * cols + c] - mean) * rstd;
      dx[r * cols + c] = rstd * (g - meanG - xhat * meanGx);
    }
  }
  return { dx, dw, db };
}

// x (T, rowStride) rotated in place on a copy; heads of size D from colOffset; angle in float64
/**
 * RoPE's inverse frequencies: theta^(-2j/D), rescaled linearly (divided by the factor) or as Llama 3.1
 * does (Meta's reference apply_scaling: low frequencies divided by the factor, high ones kept, a linear
 * blend in 1/wavelength between).
 */
export function ropeInvFreqRef(D: number, theta: number, scaling: RopeScaling | null = null, range: 'short' | 'long' = 'short'): Float64Array {
  const out = new Float64Array(D / 2);
  for (let j = 0; j < D / 2; j++) {
    const f = 1 / theta ** ((2 * j) / D);
    // Dynamic NTK scaling changes nothing up to max_position_embeddings, past which no test runs.
    if (!scaling || scaling.type === 'dynamic') out[j] = f;
    else if (scaling.type === 'linear') out[j] = f / scaling.factor;
    // LongRoPE: each frequency divided by its own factor, the short set or (past the pre-training context) the long.
    else if (scaling.type === 'longrope') out[j] = f / (range === 'long' ? scaling.longFactor : scaling.shortFactor)[j];
    else {
      const lowWavelength = scaling.originalMaxPositions / scaling.lowFreqFactor;
      const highWavelength = scaling.originalMaxPositions / scaling.highFreqFactor;
      const wavelength = (2 * Math.PI) / f;
      if (wavelength < highWavelength) out[j] = f;
      else if (wavelength > lowWavelength) out[j] = f / scaling.factor;
      else {
        const t = (scaling.originalMaxPositions / wavelength - scaling.lowFreqFactor) / (scaling.highFreqFactor - scaling.lowFreqFactor);
        out[j] = (1 - t) * (f / scaling.factor) + t * f;
      }
    }
  }
  return out;
}

/**
 * RoPE on [T, rowStride] rows; `theta` a base, or the inverse frequencies themselves (ropeInvFreqRef).
 * The first D values of each head (heads `headStride` apart) rotate, and the rotated values are scaled by
 * `scale` (LongRoPE's attention factor on cos and sin).
 */
export function ropeRef(x: Arr, pos: Arr, T: number, heads: number, D: number, theta: number | Float64Array, rowStride: number, colOffset = 0, backward = false, headStride = D, scale = 1) {
  const out = Float64Array.from(x);
  const half = D / 2;
  const inv = typeof theta === 'number' ? ropeInvFreqRef(D, theta) : theta;
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < heads; h++) {
      for (let j = 0; j < half; j++) {
        const angle = pos[t] * inv[j];
        const c = scale * Math.cos(angle);
        const s = scale * (backward ? -Math.sin(angle) : Math.sin(angle));
        const at = t * rowStride + colOffset + h * headStride + j;
        const a = x[at];
        const b = x[at + half];
        out[at] = a * c - b * s;
        out[at + half] = b * c + a * s;
      }
    }
  }
  return out;
}

const sigmoid = (x: number) => 1 / (1 + Math.exp(-x));

type Gate = 'silu' | 'gelu_new' | 'gelu';
const gateAct = (g: number, gate: Gate) => (gate === 'silu' ? g * sigmoid(g) : geluRef(g, gate));
const gateGrad = (g: number, gate: Gate) => (gate === 'silu' ? sigmoid(g) * (1 + g * (1 - sigmoid(g))) : geluGradRef(g, gate));

/** h = act(gate) * up: SwiGLU (silu), or GeGLU with a GELU gate. */
export function swigluForwardRef(gate: Arr, up: Arr, act: Gate = 'silu'): Float64Array {
  return Float64Array.from(gate, (g, i) => gateAct(g, act) * up[i]);
}

export function swigluBackwardRef(gate: Arr, up: Arr, dh: Arr, act: Gate = 'silu') {
  const dGate = Float64Array.from(gate, (g, i) => dh[i] * up[i] * gateGrad(g, act));
  const dUp = Float64Array.from(gate, (g, i) => dh[i] * gateAct(g, act));
  return { dGate, dUp };
}

/** erf in float64: Taylor series below 3, continued fraction for erfc above. */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 3) {
    let term = ax;
    let sum = ax;
    for (let n = 1; n < 60; n++) {
      term *= (-ax * ax) / n;
      sum += term / (2 * n + 1);
    }
    return Math.sign(x) * sum * (2 / Math.sqrt(Math.PI));
  }
  // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))), evaluated from the tail.
  let f = ax;
  for (let n = 60; n >= 1; n--) f = ax + n / 2 / f;
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

const K = Math.sqrt(2 / Math.PI);

export function geluRef(x: number, kind: 'gelu_new' | 'gelu'): number {
  return kind === 'gelu_new' ? 0.5 * x * (1 + Math.tanh(K * (x + 0.044715 * x ** 3))) : 0.5 * x * (1 + erf(x / Math.SQRT2));
}

export function geluGradRef(x: number, kind: 'gelu_new' | 'gelu'): number {
  if (kind === 'gelu') return 0.5 * (1 + erf(x / Math.SQRT2)) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI);
  const t = Math.tanh(K * (x + 0.044715 * x ** 3));
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * K * (1 + 3 * 0.044715 * x * x);
}

// out (T, C) = table (rows, C)[ids]
export function embeddingForwardRef(ids: Arr, table: Arr, T: number, C: number): Float64Array {
  const out = new Float64Array(T * C);
  for (let t = 0; t < T; t++) for (let c = 0; c < C; c++) out[t * C + c] = table[ids[t] * C + c];
  return out;
}

// dtable (rows, C): sum of dout rows by id
export function embeddingBackwardRef(ids: Arr, dout: Arr, T: number, C: number, rows: number): Float64Array {
  const d = new Float64Array(rows * C);
  for (let t = 0; t < T; t++) for (let c = 0; c < C; c++) d[ids[t] * C + c] += dout[t * C + c];
  return d;
}
