/**
 * Grouped matmul (shaders/matmul_grouped.wgsl): independent products in one dispatch, each a sum of
 * terms op(A) op(B) with its own shapes, transposes and offsets, and an epilogue of bias, residual,
 * accumulation and a GELU (its output beside C, or its derivative applied to C). A linear layer's
 * weight and bias gradients are one dispatch this way (the bias's is a term against a column of ones),
 * as are the q, k and v products that share their input.
 */
import { ShapeError } from '../errors.js';
import { alignUp, asView, type BufferLike, type TensorView } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { requireDims, shaderConstant } from './common.js';
import { geluForward, type GeluKind } from './activation.js';
import { elementwise } from './elementwise.js';
import { sumColumns } from './reduce.js';
import { matmul, operandFormat, type MatmulVariant, type WeightFormat } from './matmul.js';

/** One K range of a product: op(A) [M, K] times op(B) [K, N]. */
export interface GroupedTerm {
  /** Stored [M, K], or [K, M] when transA. */
  a: BufferLike;
  aFormat?: WeightFormat;
  transA?: boolean;
  /** Stored [K, N], or [N, K] when transB; 'ones' is a column of ones (N = 1): the row sums of op(A). */
  b: BufferLike | 'ones';
  bFormat?: WeightFormat;
  transB?: boolean;
  K: number;
  /** Default 1 (times the problem's alpha). */
  alpha?: number;
}

/** C [M, N] (= or +=) alpha * (sum of its terms, each times its own alpha) + bias [N] (every row) + residual [M, N]. */
export interface GroupedProblem {
  c: BufferLike;
  M: number;
  N: number;
  terms: GroupedTerm[];
  /** Default 1; scales the terms, not the bias or the residual. */
  alpha?: number;
  accumulate?: boolean;
  bias?: BufferLike;
  residual?: BufferLike;
  /** out [M, N] = gelu(C) as C is stored, C keeping the pre-activation (an MLP's up projection). */
  activation?: { kind: GeluKind; out: BufferLike };
  /**
   * C = (the terms) * gelu'(x), x [M, N] the pre-activation: the gradient through the activation in the
   * product that computes the gradient of its output. No bias, residual or accumulation with it.
   */
  activationGrad?: { kind: GeluKind; x: BufferLike };
}

/** A term with its operands resolved to views and formats. */
interface Operand {
  view: TensorView;
  format: WeightFormat;
}

interface Part {
  problem: GroupedProblem;
  terms: GroupedTerm[];
  a: Operand;
  b: Operand | null;
  accumulate: boolean;
  bias?: TensorView;
  residual?: TensorView;
  /** The activation epilogues, on a problem's last part: what ACT_OUT writes and what ACT_GRAD reads, both through R. */
  activationOut?: TensorView;
  activationInput?: TensorView;
  activationKind?: GeluKind;
}

const PROBLEM_WORDS = shaderConstant('matmul_grouped', 'PROBLEM_WORDS');
const TERM_WORDS = shaderConstant('matmul_grouped', 'TERM_WORDS');
const FLAG_ACCUMULATE = shaderConstant('matmul_grouped', 'FLAG_ACCUMULATE');
const FLAG_BIAS = shaderConstant('matmul_grouped', 'FLAG_BIAS');
const FLAG_RESIDUAL = shaderConstant('matmul_grouped', 'FLAG_RESIDUAL');
const FLAG_ACT_OUT = shaderConstant('matmul_grouped', 'FLAG_ACT_OUT');
const FLAG_ACT_GRAD = shaderConstant('matmul_grouped', 'FLAG_ACT_GRAD');

/**
 * Records the products in as few dispatches as their buffers allow: one where every A, every B, every C
 * (and bias, residual) lie in one buffer each, more where they do not. The problems must be independent:
 * none may read a buffer another writes. A problem whose terms read different buffers is split into
 * dispatches that accumulate in turn.
 */
export function matmulGrouped(rec: CommandRecorder, problems: GroupedProblem[], variant?: MatmulVariant): void {
  if (!rec.gpu.tuning.groupedProducts) {
    // Each product on its own (GpuTuning.groupedProducts): matmul.wgsl's, with the residual as its own pass.
    for (const p of problems) if (!recordSeparately(rec, p, variant)) groupProblems(rec, [p], variant);
    return;
  }
  groupProblems(rec, problems, variant);
}

/**
 * A problem as matmul.wgsl's products (one per term) and an axpy for the residual, or a bias's gradient
 * (dy^T against ones) as column sums; false where its views cannot be bound so.
 */
function recordSeparately(rec: CommandRecorder, p: GroupedProblem, variant?: MatmulVariant): boolean {
  const align = rec.gpu.limits.minStorageBufferOffsetAlignment;
  const bindable = (v: BufferLike | 'ones' | undefined) => v === undefined || (v !== 'ones' && asView(v).offset % align === 0);
  const [t] = p.terms;
  if (p.terms.length === 1 && t.b === 'ones' && t.transA && operandFormat('A', t.a, t.aFormat) === 'f32' && !p.bias && !p.residual && !p.activation && !p.activationGrad && bindable(t.a) && bindable(p.c)) {
    validate(p);
    sumColumns(rec, { x: t.a, out: p.c, rows: t.K, cols: p.M, alpha: (p.alpha ?? 1) * (t.alpha ?? 1), accumulate: p.accumulate });
    return true;
  }
  // The activation's gradient has no pass of its own to fall back on; the grouped kernel records it.
  if (p.activationGrad || p.terms.length === 0 || !p.terms.every((t) => bindable(t.a) && bindable(t.b)) || ![p.c, p.bias, p.residual].every(bindable)) return false;
  validate(p);
  p.terms.forEach((t, i) => matmul(rec, {
    a: t.a, aFormat: t.aFormat, b: t.b as BufferLike, bFormat: t.bFormat, c: p.c, M: p.M, N: p.N, K: t.K, transA: t.transA, transB: t.transB,
    alpha: (p.alpha ?? 1) * (t.alpha ?? 1), accumulate: i > 0 || p.accumulate, bias: i === 0 ? p.bias : undefined, variant,
  }));
  if (p.residual) elementwise(rec, { op: 'axpy', y: p.c, x: p.residual, n: p.M * p.N, s0: 1 });
  if (p.activation) geluForward(rec, { x: p.c, y: p.activation.out, n: p.M * p.N, kind: p.activation.kind });
  return true;
}

function groupProblems(rec: CommandRecorder, problems: GroupedProblem[], variant?: MatmulVariant): void {
  const written = new Set(problems.flatMap((p) => [asView(p.c).buffer, ...(p.activation ? [asView(p.activation.out).buffer] : [])]));
  const waves: Part[][] = [];
  for (const p of problems) {
    validate(p);
    for (const read of [...p.terms.flatMap((t) => (t.b === 'ones' ? [t.a] : [t.a, t.b])), p.bias, p.residual, p.activationGrad?.x]) {
      if (read && written.has(asView(read).buffer)) throw new ShapeError('matmulGrouped: a problem reads a buffer that a problem of the same group writes; record them as separate groups');
    }
    if (p.M === 0 || p.N === 0) continue;
    // Terms reading the same buffers form one part; later parts accumulate onto the first.
    const parts: Part[] = [];
    for (const t of p.terms) {
      const a = { view: asView(t.a), format: operandFormat('A', t.a, t.aFormat) };
      const b = t.b === 'ones' ? null : { view: asView(t.b), format: operandFormat('B', t.b, t.bFormat) };
      const part = parts.find((x) => sameOperand(x.a, a) && (x.b === null || b === null || sameOperand(x.b, b)));
      if (part) {
        part.terms.push(t);
        part.b ??= b;
      } else parts.push({ problem: p, terms: [t], a, b, accumulate: true });
    }
    if (parts.length === 0) {
      // No terms: the epilogue alone (bias, residual).
      const placeholder = { view: asView(rec.gpu.placeholder()), format: 'f32' as const };
      parts.push({ problem: p, terms: [], a: placeholder, b: null, accumulate: true });
    }
    parts[0].accumulate = !!p.accumulate;
    if (p.bias) parts[0].bias = asView(p.bias);
    if (p.residual) parts[0].residual = asView(p.residual);
    // The activation sees the whole sum: the last part's store, after the others have accumulated.
    const last = parts[parts.length - 1];
    if (p.activation) Object.assign(last, { activationOut: asView(p.activation.out), activationKind: p.activation.kind });
    if (p.activationGrad) Object.assign(last, { activationInput: asView(p.activationGrad.x), activationKind: p.activationGrad.kind });
    parts.forEach((part, i) => (waves[i] ??= []).push(part));
  }
  const chosen = variant ?? rec.gpu.tuning.matmulVariant;
  for (const wave of waves) {
    const dispatches: Part[][] = [];
    for (const part of wave) {
      const group = dispatches.find((d) => d.every((q) => compatible(q, part)));
      if (group) group.push(part);
      else dispatches.push([part]);
    }
    for (const parts of dispatches) record(rec, parts, chosen);
  }
}

function validate(p: GroupedProblem): void {
  requireDims('matmulGrouped', { M: p.M, N: p.N });
  const halfWords = (format: WeightFormat, n: number) => (format === 'f32' ? n : Math.ceil(n / 2));
  const need = (name: string, b: BufferLike, format: WeightFormat, elements: number) => {
    if (asView(b).size < halfWords(format, elements) * 4) throw new ShapeError(`matmulGrouped: ${name} needs ${elements} ${format} elements, and its view has ${asView(b).size} bytes`);
  };
  for (const t of p.terms) {
    requireDims('matmulGrouped', { K: t.K });
    if (t.b === 'ones' && p.N !== 1) throw new ShapeError(`matmulGrouped: a term against a column of ones needs N = 1, got ${p.N}`);
    need('A', t.a, operandFormat('A', t.a, t.aFormat), p.M * t.K);
    if (t.b !== 'ones') need('B', t.b, operandFormat('B', t.b, t.bFormat), t.K * p.N);
  }
  need('C', p.c, 'f32', p.M * p.N);
  if ((asView(p.c) as TensorView).format) throw new ShapeError('matmulGrouped: C must hold f32 values');
  if (p.bias) need('bias', p.bias, 'f32', p.N);
  if (p.residual) need('residual', p.residual, 'f32', p.M * p.N);
  if (p.activation) {
    if (p.residual) throw new ShapeError('matmulGrouped: a problem has a residual or an activation output, not both');
    need('activation output', p.activation.out, 'f32', p.M * p.N);
    if ((asView(p.activation.out) as TensorView).format) throw new ShapeError('matmulGrouped: the activation output must hold f32 values');
    if (asView(p.activation.out).buffer === asView(p.c).buffer) throw new ShapeError('matmulGrouped: the activation output must not share C\'s buffer');
  }
  if (p.activationGrad) {
    if (p.activation || p.bias || p.residual || p.accumulate) throw new ShapeError('matmulGrouped: an activation\'s gradient takes no bias, residual, accumulation or activation output');
    need('activation input', p.activationGrad.x, 'f32', p.M * p.N);
  }
}

function sameOperand(x: Operand, y: Operand): boolean {
  return x.view.buffer === y.view.buffer && x.format === y.format;
}

/** What a part binds to R: its residual, or its activation's output or input (one at most). */
function rOf(p: Part): TensorView | undefined {
  return p.residual ?? p.activationOut ?? p.activationInput;
}

/** Whether two parts can share one dispatch's bindings. */
function compatible(x: Part, y: Part): boolean {
  const same = (u: Operand | TensorView | null | undefined, v: Operand | TensorView | null | undefined) => {
    if (!u || !v) return true;
    const bu = 'view' in u ? u.view.buffer : u.buffer;
    const bv = 'view' in v ? v.view.buffer : v.buffer;
    return bu === bv && ('format' in u ? u.format : undefined) === ('format' in v ? v.format : undefined);
  };
  return (
    sameOperand(x.a, y.a) && same(x.b, y.b) && asView(x.problem.c).buffer === asView(y.problem.c).buffer && same(x.bias, y.bias) &&
    same(rOf(x), rOf(y)) &&
    (!x.activationKind || !y.activationKind || x.activationKind === y.activationKind)
  );
}

/** One range of a buffer covering every view bound to a slot, and each view's element offset in it. */
function cover(rec: CommandRecorder, views: TensorView[], format: WeightFormat): { binding: TensorView; offset: (v: TensorView) => number } {
  const align = rec.gpu.limits.minStorageBufferOffsetAlignment;
  const start = Math.floor(Math.min(...views.map((v) => v.offset)) / align) * align;
  const end = Math.max(...views.map((v) => v.offset + v.size));
  const binding = { buffer: views[0].buffer, offset: start, size: alignUp(end - start, 4) };
  if (binding.size > rec.gpu.limits.maxStorageBufferBindingSize) throw new ShapeError(`matmulGrouped: the operands of one group span ${binding.size} bytes of a buffer, past maxStorageBufferBindingSize`);
  const bytesPerElement = format === 'f32' ? 4 : 2;
  return { binding, offset: (v) => (v.offset - start) / bytesPerElement };
}

function record(rec: CommandRecorder, parts: Part[], variant: MatmulVariant): void {
  // One product alone is matmul.wgsl's, whose loops are specialized by its overrides: the grouped kernel
  // reads shapes and strides from its table, and SwiftShader ran it 1.3 to 1.5x slower at K = 128.
  // The epilogues matmul.wgsl lacks (residual, activation) keep a lone product here: one dispatch, not two.
  const only = parts.length === 1 && parts[0].terms.length === 1 && !rOf(parts[0]) ? parts[0] : null;
  if (only && recordSeparately(rec, { ...only.problem, terms: only.terms, accumulate: only.accumulate, bias: only.bias, residual: undefined, activation: undefined, activationGrad: undefined }, variant)) return;
  const unused = rec.gpu.placeholder();
  const first = <T>(f: (p: Part) => T | null | undefined) => parts.map(f).find((x) => x) ?? null;
  const aFormat = parts[0].a.format;
  const bFormat = first((p) => p.b)?.format ?? 'f32';
  // Every term's operands, not only each part's first.
  const a = cover(rec, parts.flatMap((p) => (p.terms.length ? p.terms.map((t) => asView(t.a)) : [p.a.view])), aFormat);
  const bViews = parts.flatMap((p) => p.terms.flatMap((t) => (t.b === 'ones' ? [] : [asView(t.b)])));
  const b = bViews.length ? cover(rec, bViews, bFormat) : null;
  const c = cover(rec, parts.map((p) => asView(p.problem.c)), 'f32');
  const biasViews = parts.flatMap((p) => (p.bias ? [p.bias] : []));
  const bias = biasViews.length ? cover(rec, biasViews, 'f32') : null;
  // R: residuals, or an activation's output or input.
  const residualViews = parts.flatMap((p) => rOf(p) ?? []);
  const residual = residualViews.length ? cover(rec, residualViews, 'f32') : null;
  const activationKind = first((p) => p.activationKind) ?? 'gelu_new';
  // C ranges must not overlap: each workgroup writes its problem's C alone.
  const ranges = parts.map(({ problem: p }) => [asView(p.c).offset, asView(p.c).offset + p.M * p.N * 4] as const).sort((x, y) => x[0] - y[0]);
  for (let i = 1; i < ranges.length; i++) {
    if (ranges[i][0] < ranges[i - 1][1]) throw new ShapeError('matmulGrouped: two problems of one group write overlapping ranges of C');
  }
  const termCount = parts.reduce((s, p) => s + p.terms.length, 0);
  const words = new Uint32Array(parts.length * PROBLEM_WORDS + termCount * TERM_WORDS);
  const floats = new Float32Array(words.buffer);
  let next = parts.length * PROBLEM_WORDS;
  parts.forEach((part, z) => {
    const p = part.problem;
    const flags =
      (part.accumulate ? FLAG_ACCUMULATE : 0) | (part.bias ? FLAG_BIAS : 0) | (part.residual ? FLAG_RESIDUAL : 0) |
      (part.activationOut ? FLAG_ACT_OUT : 0) | (part.activationInput ? FLAG_ACT_GRAD : 0);
    const r = rOf(part);
    words.set([p.M, p.N, flags, part.terms.length, next, c.offset(asView(p.c)), part.bias ? bias!.offset(part.bias) : 0, r ? residual!.offset(r) : 0], z * PROBLEM_WORDS);
    for (const t of part.terms) {
      const av = asView(t.a);
      const aOff = a.offset(av);
      // op(A)[m, k] = A[a + m * am + k * ak]; op(B)[k, n] = B[b + k * bk + n * bn].
      const [am, ak] = t.transA ? [1, p.M] : [t.K, 1];
      const ones = t.b === 'ones';
      const [bk, bn] = ones ? [0, 0] : t.transB ? [1, t.K] : [p.N, 1];
      const bOff = ones ? 0 : b!.offset(asView(t.b as BufferLike));
      words.set([aOff, am, ak, bOff, bk, bn, t.K, ones ? 1 : 0], next);
      floats[next + 8] = (p.alpha ?? 1) * (t.alpha ?? 1);
      next += TERM_WORDS;
    }
  });
  const [tileM, tileN] = variant === 'tiled' ? [shaderConstant('matmul_grouped', 'BM'), shaderConstant('matmul_grouped', 'BN')] : [shaderConstant('matmul_grouped', 'DWG') * shaderConstant('matmul_grouped', 'TM'), shaderConstant('matmul_grouped', 'DWG') * shaderConstant('matmul_grouped', 'TN')];
  const x = Math.max(...parts.map((p) => Math.ceil(p.problem.N / tileN)));
  const y = Math.max(...parts.map((p) => Math.ceil(p.problem.M / tileM)));
  const half = (format: WeightFormat) => format !== 'f32';
  rec.dispatch({
    shader: 'matmul_grouped',
    entryPoint: variant === 'tiled' ? 'grouped_tiled' : 'grouped_direct',
    constants: { A_FORMAT: formatConstant(aFormat), B_FORMAT: formatConstant(bFormat), GELU_TANH: activationKind === 'gelu_new' },
    storage: {
      A: half(aFormat) ? unused : a.binding, Ah: half(aFormat) ? a.binding : unused,
      B: !b || half(bFormat) ? unused : b.binding, Bh: b && half(bFormat) ? b.binding : unused,
      C: c.binding, bias: bias?.binding ?? unused, R: residual?.binding ?? rec.gpu.placeholder('write'), table: rec.table(words),
    },
    workgroups: [x, y, parts.length],
    label: `matmul_grouped ${parts.map((p) => `${p.problem.M}x${p.problem.N}`).join(',')}`,
  });
}

function formatConstant(format: WeightFormat): number {
  return shaderConstant('matmul_grouped', `FORMAT_${format.toUpperCase()}`);
}
