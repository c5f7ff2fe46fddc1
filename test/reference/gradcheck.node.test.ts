/** The reference backward passes against finite differences of the reference forward passes. */
import { describe, expect, it } from 'vitest';
import { randn, rng } from '../../src/util/random.js';
import { numericGradient, relError } from './gradcheck.js';
import { normBackwardRef, normForwardRef } from './layers.js';

const f64 = (a: Float32Array) => Float64Array.from(a);

describe.each(['rmsnorm', 'layernorm'] as const)('%s reference backward', (kind) => {
  it('matches finite differences for x, weight and bias', () => {
    const rand = rng(7);
    const [rows, cols, eps] = [3, 7, 1e-5];
    const x = f64(randn(rows * cols, rand));
    const w = f64(randn(cols, rand));
    const b = f64(randn(cols, rand));
    const dy = randn(rows * cols, rand);
    const fwd = () => normForwardRef(kind, x, w, kind === 'layernorm' ? b : null, rows, cols, eps).y;
    const { dx, dw, db } = normBackwardRef(kind, x, w, dy, rows, cols, eps);
    expect(relError(dx, numericGradient(x, fwd, dy))).toBeLessThan(1e-6);
    expect(relError(dw, numericGradient(w, fwd, dy))).toBeLessThan(1e-6);
    if (kind === 'layernorm') expect(relError(db, numericGradient(b, fwd, dy))).toBeLessThan(1e-6);
  });
});
