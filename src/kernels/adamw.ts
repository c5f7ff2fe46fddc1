/**
 * Fused AdamW (shaders/adamw.wgsl; over many tensors at once, shaders/adamw_multi.wgsl; at a mask,
 * shaders/sparse_adamw.wgsl) and the global gradient-norm reduction that
 * feeds its clipping factor (shaders/gradnorm.wgsl).
 */
import { ShapeError } from '../errors.js';
import type { BufferLike, TensorView } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { halfConstant, launch1d, requireDims, requireElements } from './common.js';
import type { WeightFormat } from './matmul.js';
import { weightBinding } from './sparse.js';

export interface AdamWOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
}

/** PyTorch's AdamW defaults except weight decay, which is off unless asked for (as in the Hugging Face Trainer). */
export const ADAMW_DEFAULTS = { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 };
const WG = 256;

/** The AdamParams uniform: bias corrections for step `step` (1-based), decay and 1 - beta computed here in float64. */
export function adamwUniforms(n: number, step: number, opts: AdamWOptions, gradScale = 1): Record<string, number> {
  if (!Number.isInteger(step) || step < 1) throw new ShapeError(`AdamW step must be an integer >= 1, got ${step}`);
  const { beta1, beta2, eps, weightDecay } = { ...ADAMW_DEFAULTS, ...opts };
  const bc1 = 1 - beta1 ** step;
  const bc2 = 1 - beta2 ** step;
  return {
    n,
    beta1,
    oneMinusBeta1: 1 - beta1,
    beta2,
    oneMinusBeta2: 1 - beta2,
    eps,
    decay: 1 - opts.lr * weightDecay,
    stepSize: opts.lr / bc1,
    bc2Sqrt: Math.sqrt(bc2),
    gradScale,
  };
}

export interface AdamWStepArgs extends AdamWOptions {
  params: BufferLike;
  grads: BufferLike;
  m: BufferLike;
  v: BufferLike;
  /** clip[0]: global clipping factor (from gradNorm, or 1.0); below 0 the step changes nothing. */
  clip: BufferLike;
  n: number;
  step: number;
  /** Multiplies the gradient before the update, e.g. 1 / accumulation steps. Default 1. */
  gradScale?: number;
}

export function adamwStep(rec: CommandRecorder, a: AdamWStepArgs): void {
  requireDims('adamw', { n: a.n });
  for (const [name, b] of [['params', a.params], ['grads', a.grads], ['m', a.m], ['v', a.v]] as const) {
    requireElements('adamw', name, b, a.n);
  }
  requireElements('adamw', 'clip', a.clip, 1);
  const per = rec.gpu.tuning.elementsPerInvocation;
  rec.dispatch({
    shader: 'adamw',
    entryPoint: 'adamw_step',
    constants: { WG, PER: per },
    uniforms: adamwUniforms(a.n, a.step, a, a.gradScale),
    storage: { params: a.params, grads: a.grads, m: a.m, v: a.v, clip: a.clip },
    workgroups: launch1d(rec.gpu, Math.ceil(a.n / per), WG),
    label: `adamw ${a.n}`,
  });
}

/** One f32 tensor of a multi-tensor AdamW step: its views, elements, and its own step and rates. */
export interface AdamWTensor {
  params: TensorView;
  grads: TensorView;
  /** The moments; v at the same offset as m (arenas of one layout). */
  m: TensorView;
  v: TensorView;
  n: number;
  /** Its bias-correction step (1-based), learning rate and weight decay. */
  step: number;
  lr: number;
  weightDecay: number;
}

export interface AdamWMultiArgs {
  tensors: AdamWTensor[];
  /** clip[0]: global clipping factor (from gradNorm, or 1.0); below 0 the step changes nothing. */
  clip: BufferLike;
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Multiplies every gradient before the update. Default 1. */
  gradScale?: number;
}

const SEGMENT_WORDS = 8;

/**
 * AdamW over many f32 tensors (shaders/adamw_multi.wgsl): one dispatch per set of buffers they live in
 * (an arena has few), each tensor a segment of it with its own offsets, bias corrections and decay in a
 * table uploaded with the submission. The arithmetic of adamwStep, in one dispatch instead of one per
 * tensor.
 */
export function adamwMultiStep(rec: CommandRecorder, a: AdamWMultiArgs): void {
  requireElements('adamwMulti', 'clip', a.clip, 1);
  const sets: { buffers: GPUBuffer[]; tensors: AdamWTensor[] }[] = [];
  for (const t of a.tensors) {
    requireDims('adamwMulti', { n: t.n });
    for (const [name, view] of [['params', t.params], ['grads', t.grads], ['m', t.m], ['v', t.v]] as const) {
      requireElements('adamwMulti', name, view, t.n);
      if (view.offset % 4 !== 0) throw new ShapeError(`adamwMulti: ${name} offset ${view.offset} is not a whole number of f32 elements`);
    }
    if (t.m.offset !== t.v.offset) throw new ShapeError(`adamwMulti: the moments of a tensor must share their offset (m ${t.m.offset}, v ${t.v.offset})`);
    const buffers = [t.params.buffer, t.grads.buffer, t.m.buffer, t.v.buffer];
    if (new Set(buffers).size < 4) throw new ShapeError('adamwMulti: parameters, gradients and both moments must be four different buffers');
    const set = sets.find((x) => x.buffers.every((b, i) => b === buffers[i]));
    if (set) set.tensors.push(t);
    else sets.push({ buffers, tensors: [t] });
  }
  const beta1 = a.beta1 ?? ADAMW_DEFAULTS.beta1;
  const beta2 = a.beta2 ?? ADAMW_DEFAULTS.beta2;
  const eps = a.eps ?? ADAMW_DEFAULTS.eps;
  const per = rec.gpu.tuning.elementsPerInvocation;
  for (const { buffers, tensors } of sets) {
    const words = new Uint32Array(tensors.length * SEGMENT_WORDS);
    const floats = new Float32Array(words.buffer);
    let total = 0;
    tensors.forEach((t, s) => {
      const u = adamwUniforms(t.n, t.step, { lr: t.lr, weightDecay: t.weightDecay, beta1, beta2, eps });
      const at = s * SEGMENT_WORDS;
      words.set([total, t.n, t.params.offset / 4, t.grads.offset / 4, t.m.offset / 4], at);
      floats.set([u.stepSize, u.bc2Sqrt, u.decay], at + 5);
      total += t.n;
    });
    if (total >= 2 ** 32) throw new ShapeError(`adamwMulti: ${total} elements in one set of buffers exceed the u32 index space`);
    const [params, grads, m, v] = buffers.map((buffer) => ({ buffer, offset: 0, size: buffer.size }));
    const u = adamwUniforms(total, 1, { lr: 0, beta1, beta2, eps });
    rec.dispatch({
      shader: 'adamw_multi',
      entryPoint: 'adamw_multi',
      constants: { WG, PER: per },
      uniforms: { total, segments: tensors.length, beta1, oneMinusBeta1: u.oneMinusBeta1, beta2, oneMinusBeta2: u.oneMinusBeta2, eps, gradScale: a.gradScale ?? 1 },
      storage: { params, grads, m, v, clip: a.clip, segs: rec.table(words) },
      workgroups: launch1d(rec.gpu, Math.ceil(total / per), WG),
      label: `adamw ${tensors.length} tensors, ${total} elements`,
    });
  }
}

export interface SparseAdamWStepArgs extends AdamWStepArgs {
  /** Sorted flat indices into `weight` (u32), one per value. */
  indices: BufferLike;
  /** The dense weight the values live in; each updated value is written to weight[indices[i]]. */
  weight: BufferLike;
  /** Elements of the dense weight (for bounds checking). */
  weightSize: number;
  /** How the weight is stored: f32 (default), or bf16 / f16 packed in pairs, holding the values rounded. */
  weightFormat?: WeightFormat;
}

export function sparseAdamwStep(rec: CommandRecorder, a: SparseAdamWStepArgs): void {
  requireDims('sparseAdamw', { n: a.n, weightSize: a.weightSize });
  for (const [name, b] of [['values', a.params], ['grads', a.grads], ['m', a.m], ['v', a.v], ['indices', a.indices]] as const) {
    requireElements('sparseAdamw', name, b, a.n);
  }
  requireElements('sparseAdamw', 'clip', a.clip, 1);
  const format = a.weightFormat ?? 'f32';
  rec.dispatch({
    shader: 'sparse_adamw',
    entryPoint: format === 'f32' ? 'sparse_adamw' : 'sparse_adamw_half',
    constants: format === 'f32' ? { WG } : { WG, HALF: halfConstant('sparse_adamw', format) },
    uniforms: adamwUniforms(a.n, a.step, a, a.gradScale),
    storage: { values: a.params, grads: a.grads, m: a.m, v: a.v, clip: a.clip, idx: a.indices, ...weightBinding('sparseAdamw', a.weight, a.weightSize, format) },
    workgroups: launch1d(rec.gpu, a.n, WG),
    label: `sparse_adamw ${a.n}`,
  });
}

/** At most this many workgroups (partial sums) per tensor in the first stage of the norm. */
export const MAX_NORM_PARTIALS = 256;

/** Partial sums for a tensor of n elements: one per 256 elements up to the cap, whatever the workgroup size. */
export function normPartials(n: number): number {
  return Math.max(1, Math.min(MAX_NORM_PARTIALS, Math.ceil(n / 256)));
}

/** Floats needed for the partials buffer of gradNorm over tensors of these sizes. */
export function gradNormScratchSize(sizes: number[]): number {
  return sizes.reduce((s, n) => s + normPartials(n), 0);
}

export interface GradNormArgs {
  /** Gradient tensors (flat f32) whose global L2 norm is wanted. */
  tensors: { buffer: BufferLike; n: number }[];
  /** Scratch of gradNormScratchSize(sizes) floats. */
  partials: BufferLike;
  /**
   * out[0] = clipping factor min(1, maxNorm / (norm + 1e-6)), out[1] = norm; with `skipNonFinite`, out[0] =
   * -1 when the norm is not finite (the optimizer kernels then skip the step) and out[2] counts such steps.
   */
  out: BufferLike;
  /** No clipping (factor 1) when <= 0 or infinite. */
  maxNorm: number;
  /** The norm is of gradScale * gradients: pass the optimizer's gradScale. Default 1. */
  gradScale?: number;
  /** Skip the step when the norm is not finite (an overflow), as PyTorch's GradScaler does. Default false. */
  skipNonFinite?: boolean;
}

export function gradNorm(rec: CommandRecorder, { tensors, partials, out, maxNorm, gradScale = 1, skipNonFinite = false }: GradNormArgs): void {
  const total = gradNormScratchSize(tensors.map((t) => t.n));
  requireElements('gradNorm', 'partials', partials, total);
  requireElements('gradNorm', 'out', out, skipNonFinite ? 3 : 2);
  const skip = skipNonFinite ? 1 : 0;
  const max = Number.isFinite(maxNorm) ? maxNorm : 0;
  let offset = 0;
  for (const t of tensors) {
    requireDims('gradNorm', { n: t.n });
    requireElements('gradNorm', 'tensor', t.buffer, t.n);
    const groups = normPartials(t.n);
    rec.dispatch({
      shader: 'gradnorm',
      entryPoint: 'sumsq_partials',
      constants: { WG: rec.gpu.tuning.reductionWorkgroupSize },
      uniforms: { n: t.n, offset, numPartials: total, maxNorm: max, scale: gradScale, skip },
      storage: { x: t.buffer, partials },
      workgroups: [groups],
      label: `gradnorm partials ${t.n}`,
    });
    offset += groups;
  }
  rec.dispatch({
    shader: 'gradnorm',
    entryPoint: 'clip_factor',
    constants: { WG: rec.gpu.tuning.reductionWorkgroupSize },
    uniforms: { n: 0, offset: 0, numPartials: total, maxNorm: max, scale: Math.abs(gradScale), skip },
    storage: { partials, out },
    workgroups: [1],
    label: 'gradnorm clip factor',
  });
}
