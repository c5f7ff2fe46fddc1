/**
 * Cross-entropy fused with the LM head and chunked along the vocabulary (shaders/cross_entropy.wgsl):
 * only a [T, chunk] slice of logits exists at any time. Backward recomputes each slice, so the cost is
 * one extra logits matmul in exchange for never holding [T, V] floats; a vocabulary of one chunk
 * recorded right after its forward pass reuses the forward's slice (`forwardLogits`).
 */
import { ShapeError } from '../errors.js';
import { SHADER_INTERFACES } from './shaders.gen.js';
import { view, type BufferLike } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { launch1d, requireDims, requireElements, shaderConstant } from './common.js';
import { matmul, type WeightFormat } from './matmul.js';

const WG = 256;
/** Targets below zero (Hugging Face uses -100) contribute no loss and no gradient. */
export const IGNORE_INDEX = -100;

/**
 * Vocabulary columns per chunk: a multiple of 64 (so weight slices stay 256-byte aligned) whose
 * [T, chunk] f32 slice fits `budgetBytes`.
 */
export function crossEntropyChunk(T: number, V: number, budgetBytes = 64 << 20): number {
  const fit = Math.floor(budgetBytes / (4 * Math.max(T, 1)) / 64) * 64;
  return Math.max(64, Math.min(fit, Math.ceil(V / 64) * 64));
}

export interface CrossEntropyArgs {
  /** Final hidden states [T, H]. */
  hidden: BufferLike;
  /** LM head weight [V, H] (HF layout; the embedding matrix when tied): f32, or 16-bit packed (weightFormat). */
  weight: BufferLike;
  weightFormat?: WeightFormat;
  /** i32 [T]; negative = ignored. Already shifted: targets[t] is the token after position t. */
  targets: BufferLike;
  T: number;
  H: number;
  V: number;
  /** Vocabulary columns per chunk (crossEntropyChunk) and a [T, chunk] scratch buffer. */
  chunk: number;
  logits: BufferLike;
  /** [T, 3] running statistics, kept for the backward pass. */
  stats: BufferLike;
  /** [T] per-token losses (0 where ignored). */
  losses: BufferLike;
  /** Soft-capping of the logits, c * tanh(x / c) (Gemma 2's final_logit_softcapping); omit for none. */
  softcap?: number | null;
  /**
   * The LM head in row pieces, in vocabulary order, when it is larger than one binding: `weight` is then
   * unused. The chunks stay within a piece; the log-sum-exp runs across all of them as across chunks.
   */
  pieces?: { weight: BufferLike; rows: number }[];
}

/** The LM head's pieces with the vocabulary row each starts at: `pieces`, or the one `weight`. */
function headPieces(a: CrossEntropyArgs): { weight: BufferLike; rows: number; v0: number }[] {
  let v0 = 0;
  return (a.pieces ?? [{ weight: a.weight, rows: a.V }]).map((p) => ({ ...p, v0: (v0 += p.rows) - p.rows }));
}

function check(kernel: string, a: CrossEntropyArgs): void {
  requireDims(kernel, { T: a.T, H: a.H, V: a.V, chunk: a.chunk });
  if (a.chunk % 64 || a.chunk === 0) throw new ShapeError(`${kernel}: chunk ${a.chunk} must be a positive multiple of 64`);
  requireElements(kernel, 'hidden', a.hidden, a.T * a.H);
  const packed = (a.weightFormat ?? 'f32') !== 'f32';
  if (packed && a.H % 2) throw new ShapeError(`${kernel}: a 16-bit weight needs an even hidden size (rows of whole words), got ${a.H}`);
  const pieces = headPieces(a);
  if (pieces.reduce((n, p) => n + p.rows, 0) !== a.V) throw new ShapeError(`${kernel}: the LM head's pieces hold ${pieces.reduce((n, p) => n + p.rows, 0)} rows, not V = ${a.V}`);
  for (const p of pieces) requireElements(kernel, 'weight', p.weight, packed ? (p.rows * a.H) / 2 : p.rows * a.H);
  requireElements(kernel, 'targets', a.targets, a.T);
  requireElements(kernel, 'logits', a.logits, a.T * Math.min(a.chunk, a.V));
  requireElements(kernel, 'stats', a.stats, a.T * 3);
  requireElements(kernel, 'losses', a.losses, a.T);
  if (a.softcap != null && !(a.softcap > 0 && Number.isFinite(a.softcap))) throw new ShapeError(`${kernel}: softcap must be a positive number, got ${a.softcap}`);
}

/**
 * Each vocabulary chunk: [c0, c0 + width), within one piece of the head (`piece`, starting at its row
 * `local`, a multiple of the chunk so its weight rows stay 256-byte aligned).
 */
function chunks(a: CrossEntropyArgs): { c0: number; width: number; piece: number; local: number }[] {
  const out = [];
  for (const [piece, p] of headPieces(a).entries()) {
    for (let local = 0; local < p.rows; local += a.chunk) out.push({ c0: p.v0 + local, width: Math.min(a.chunk, p.rows - local), piece, local });
  }
  return out;
}

/** Rows [local, local + width) of a piece of the LM head, in its own format. */
function weightRows(a: CrossEntropyArgs, weight: BufferLike, local: number, width: number): BufferLike {
  const bytes = (a.weightFormat ?? 'f32') === 'f32' ? 4 : 2;
  return view(weight, local * a.H * bytes, width * a.H * bytes);
}

function chunkLogits(rec: CommandRecorder, a: CrossEntropyArgs, weight: BufferLike, local: number, width: number): void {
  matmul(rec, { a: a.hidden, b: weightRows(a, weight, local, width), bFormat: a.weightFormat, c: a.logits, M: a.T, N: width, K: a.H, transB: true });
}

type BufferArg = 'logits' | 'targets' | 'stats' | 'losses';

const FIRST_CHUNK = shaderConstant('cross_entropy', 'FIRST_CHUNK');
const LAST_CHUNK = shaderConstant('cross_entropy', 'LAST_CHUNK');

function ceDispatch(rec: CommandRecorder, entryPoint: string, a: CrossEntropyArgs, width: number, c0: number, scale: number, workgroups: [number, number?], edges = 0): void {
  rec.dispatch({
    shader: 'cross_entropy',
    entryPoint,
    constants: { WG: entryPoint === 'ce_chunk_stats' ? rec.gpu.tuning.reductionWorkgroupSize : WG },
    uniforms: { T: a.T, VC: width, c0, scale, softcap: a.softcap ?? 0, edges },
    // Each entry point binds exactly the buffers its WGSL uses, as the generated interface lists them.
    storage: Object.fromEntries(SHADER_INTERFACES.cross_entropy.entryPoints[entryPoint].storage.map((name) => [name, a[name as BufferArg]])),
    workgroups,
    label: `${entryPoint} T=${a.T} c0=${c0}`,
  });
}

/**
 * Per-token losses into `losses` and the statistics the backward pass needs into `stats`: each chunk's
 * logits, then their statistics merged into the running ones (the first starts them, the last writes
 * the losses).
 */
export function crossEntropyForward(rec: CommandRecorder, a: CrossEntropyArgs): void {
  check('crossEntropyForward', a);
  const pieces = headPieces(a);
  const all = chunks(a);
  all.forEach(({ c0, width, piece, local }, i) => {
    chunkLogits(rec, a, pieces[piece].weight, local, width);
    const edges = (i === 0 ? FIRST_CHUNK : 0) | (i === all.length - 1 ? LAST_CHUNK : 0);
    ceDispatch(rec, 'ce_chunk_stats', a, width, c0, 0, launch1d(rec.gpu, a.T, 1), edges);
  });
}

/** Whether the vocabulary is one chunk: the forward pass leaves its whole logits in `logits`. */
export function crossEntropyOneChunk(a: Pick<CrossEntropyArgs, 'V' | 'chunk' | 'pieces'>): boolean {
  return !a.pieces && a.V <= a.chunk;
}

export interface CrossEntropyBackwardArgs extends CrossEntropyArgs {
  /** d loss / d hidden [T, H], overwritten. */
  dHidden: BufferLike;
  /** d loss / d weight [V, H], accumulated (+=); omit when the head is frozen. */
  dWeight?: BufferLike;
  /** With `pieces`: each piece's gradient, in the same order (instead of dWeight). */
  dWeightPieces?: BufferLike[];
  /** Gradient of the objective per token loss, e.g. 1 / (number of target tokens) for a mean. */
  gradScale: number;
  /**
   * `logits` still holds what crossEntropyForward left there on these inputs (one chunk, nothing written
   * there since): the backward pass uses it instead of recomputing it.
   */
  forwardLogits?: boolean;
}

/** Needs `stats` from crossEntropyForward on the same inputs. */
export function crossEntropyBackward(rec: CommandRecorder, a: CrossEntropyBackwardArgs): void {
  check('crossEntropyBackward', a);
  requireElements('crossEntropyBackward', 'dHidden', a.dHidden, a.T * a.H);
  const pieces = headPieces(a);
  const dWeights = a.pieces ? a.dWeightPieces : a.dWeight ? [a.dWeight] : undefined;
  if (a.pieces && a.dWeight) throw new ShapeError('crossEntropyBackward: a head in pieces takes dWeightPieces');
  if (dWeights && dWeights.length !== pieces.length) throw new ShapeError(`crossEntropyBackward: ${dWeights.length} weight gradients for ${pieces.length} pieces`);
  dWeights?.forEach((d, i) => requireElements('crossEntropyBackward', 'dWeight', d, pieces[i].rows * a.H));
  if (dWeights && (a.weightFormat ?? 'f32') !== 'f32') throw new ShapeError('crossEntropyBackward: a trained LM head is f32');
  if (a.forwardLogits && !crossEntropyOneChunk(a)) throw new ShapeError('crossEntropyBackward: forwardLogits needs a vocabulary of one chunk');
  chunks(a).forEach(({ c0, width, piece, local }, i) => {
    if (!a.forwardLogits) chunkLogits(rec, a, pieces[piece].weight, local, width);
    ceDispatch(rec, 'ce_chunk_grad', a, width, c0, a.gradScale, launch1d(rec.gpu, a.T * width, WG));
    // dHidden (+)= dLogits [T, width] @ W_chunk [width, H]
    matmul(rec, { a: a.logits, b: weightRows(a, pieces[piece].weight, local, width), bFormat: a.weightFormat, c: a.dHidden, M: a.T, N: a.H, K: width, accumulate: i > 0 });
    // dW_chunk += dLogits^T [width, T] @ hidden [T, H]
    if (dWeights) {
      matmul(rec, { a: a.logits, b: a.hidden, c: view(dWeights[piece], local * a.H * 4, width * a.H * 4), M: width, N: a.H, K: a.T, transA: true, accumulate: true });
    }
  });
}
