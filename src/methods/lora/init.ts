/**
 * How an adapter starts (PEFT's init_lora_weights, peft/tuners/lora/layer.py): B = 0 with A
 * kaiming-uniform (PEFT's default, `true`) or Gaussian with std 1 / r (`"gaussian"`), leaving the model
 * unchanged; or from a decomposition of the base weight, which is replaced by the residual so the model
 * starts unchanged to rounding:
 *   - PiSSA (`"pissa"`, `"pissa_niter_K"`): W ≈ U S V^T on its top r singular triplets, A = sqrt(S / s) V^T,
 *     B = U sqrt(S / s), exactly (SVD) or by K iterations of randomized subspace iteration (svd_lowrank);
 *   - OLoRA (`"olora"`): W = Q R, A = R[:r], B = Q[:, :r].
 * Then W ← W - s B A (pissa_init, olora_init). The decomposition runs in float64 on the host.
 */
import { ShapeError } from '../../errors.js';
import { householderQr, topSingular } from '../../util/linalg.js';
import { randn, rng } from '../../util/random.js';

export const LORA_INITS = ['kaiming', 'gaussian', 'pissa', 'olora'] as const;
export type LoraInit = (typeof LORA_INITS)[number];

/** Whether an initialization rewrites the base weight (to the residual W - s B0 A0). */
export function initMutatesBase(init: LoraInit | undefined): boolean {
  return init === 'pissa' || init === 'olora';
}

/** PEFT's init_lora_weights for an initialization. */
export function peftInitName(init: LoraInit | undefined, pissaNiter?: number): boolean | string {
  if (init === undefined || init === 'kaiming') return true;
  return init === 'pissa' && pissaNiter !== undefined ? `pissa_niter_${pissaNiter}` : init;
}

export function checkLoraInit(init: unknown, pissaNiter: unknown): void {
  if (init !== undefined && !LORA_INITS.includes(init as LoraInit)) throw new ShapeError(`LoRA init must be one of ${LORA_INITS.join(', ')}, got '${String(init).slice(0, 40)}'`);
  if (pissaNiter !== undefined) {
    if (init !== 'pissa') throw new ShapeError('LoRA pissaNiter applies to init \'pissa\'');
    if (!(Number.isInteger(pissaNiter) && (pissaNiter as number) >= 0 && (pissaNiter as number) <= 1000)) throw new ShapeError(`LoRA pissaNiter must be an integer from 0 to 1000, got ${String(pissaNiter)}`);
  }
}

export interface Decomposed {
  A: Float32Array;
  B: Float32Array;
  /** W - s B A, with A and B as rounded to f32: W_res + s B A is W to one f32 rounding. */
  residual: Float32Array;
}

/**
 * A and B from the base weight w [out, in] and the residual the base becomes. `seed` draws the random
 * start of PiSSA's randomized iteration.
 */
export function decomposeWeight(w: Float32Array, d: { out: number; in: number; rank: number; scale: number }, init: 'pissa' | 'olora', options: { pissaNiter?: number; seed?: number } = {}): Decomposed {
  const { out: m, in: n, rank: r, scale: s } = d;
  let A64: Float64Array;
  let B64: Float64Array;
  if (init === 'olora') {
    const { Q, R } = householderQr(w, m, n);
    const k = Math.min(m, n);
    A64 = R.slice(0, r * n);
    B64 = new Float64Array(m * r);
    for (let i = 0; i < m; i++) for (let j = 0; j < r; j++) B64[i * r + j] = Q[i * k + j];
  } else {
    const rand = rng(options.seed ?? 0);
    const { U, S, Vt } = topSingular(w, m, n, r, { niter: options.pissaNiter, gaussian: () => randn(1, rand)[0] });
    const root = S.map((v) => Math.sqrt(v / s));
    A64 = Vt.map((v, i) => v * root[Math.floor(i / n)]);
    B64 = U.map((v, i) => v * root[i % r]);
  }
  const A = Float32Array.from(A64);
  const B = Float32Array.from(B64);
  const residual = new Float32Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let ba = 0;
      for (let k = 0; k < r; k++) ba += B[i * r + k] * A[k * n + j];
      residual[i * n + j] = w[i * n + j] - s * ba;
    }
  }
  return { A, B, residual };
}
