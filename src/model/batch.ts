/**
 * A training or evaluation batch as the engine needs it: B rows of S token ids, optionally packed with
 * several documents per row (segment ids), with per-document positions and next-token targets derived
 * the way Hugging Face does for causal LMs (labels shifted by one, -100 where there is no next token or
 * the loss is masked), or taken from explicit `labels` or already-shifted `targets`.
 */
import { ShapeError } from '../errors.js';
import { embeddingGradPlan, type EmbeddingGradPlan } from '../kernels/embedding.js';
import { IGNORE_INDEX } from '../kernels/cross-entropy.js';

export interface BatchInput {
  /** Token ids, [B * S] row-major (or nested rows of equal length). */
  ids: ArrayLike<number> | number[][];
  B?: number;
  S?: number;
  /** 1 where the token should be predicted (e.g. the completion), 0 to exclude it from the loss. */
  lossMask?: ArrayLike<number>;
  /**
   * Hugging Face's `labels`: one per token, shifted by the model (token t is trained to predict
   * labels[t + 1]); -100 excludes a position. Default: the ids themselves.
   */
  labels?: ArrayLike<number>;
  /**
   * Targets already aligned with the tokens (HF's `shift_labels`): token t is trained to predict
   * targets[t], -100 for none; used as given (segments and lossMask do not apply). Not with `labels`.
   */
  targets?: ArrayLike<number>;
  /** Document id per token for packed rows; attention and positions stay inside a document. */
  segments?: ArrayLike<number>;
}

export interface PreparedBatch {
  B: number;
  S: number;
  ids: Uint32Array;
  targets: Int32Array;
  positions: Uint32Array;
  segments: Uint32Array | null;
  /** Tokens that carry a target. */
  targetCount: number;
  embedPlan: EmbeddingGradPlan;
  /** The same grouping for positions (learned position embeddings). */
  positionPlan: EmbeddingGradPlan;
}

export function prepareBatch(input: BatchInput, vocabSize: number, maxPositions: number): PreparedBatch {
  let flat: ArrayLike<number>;
  let B = input.B;
  let S = input.S;
  if (Array.isArray(input.ids) && Array.isArray(input.ids[0])) {
    const rows = input.ids as number[][];
    B = rows.length;
    S = rows[0].length;
    if (rows.some((r) => r.length !== S)) throw new ShapeError('batch: rows have different lengths; pad or pack them first');
    flat = rows.flat();
  } else {
    flat = input.ids as ArrayLike<number>;
    B ??= 1;
    S ??= flat.length / B;
  }
  if (!Number.isInteger(S) || B * S !== flat.length || B * S === 0) throw new ShapeError(`batch: ${flat.length} ids do not form ${B} rows`);
  if (S > maxPositions) throw new ShapeError(`batch: sequence length ${S} exceeds the model's ${maxPositions} positions`);
  const ids = Uint32Array.from(flat);
  for (let t = 0; t < ids.length; t++) {
    if (!Number.isInteger(flat[t]) || flat[t] < 0 || flat[t] >= vocabSize) throw new ShapeError(`batch: token id ${flat[t]} at ${t} is outside the vocabulary (${vocabSize})`);
  }
  for (const [name, arr] of [['lossMask', input.lossMask], ['segments', input.segments], ['labels', input.labels], ['targets', input.targets]] as const) {
    if (arr && arr.length !== ids.length) throw new ShapeError(`batch: ${name} has ${arr.length} entries for ${ids.length} tokens`);
  }
  if (input.labels && input.targets) throw new ShapeError('batch: give labels (shifted by the model) or targets (already shifted), not both');
  for (const [name, arr] of [['labels', input.labels], ['targets', input.targets]] as const) {
    if (!arr) continue;
    for (let t = 0; t < arr.length; t++) {
      const v = arr[t];
      if (v !== IGNORE_INDEX && !(Number.isInteger(v) && v >= 0 && v < vocabSize)) {
        throw new ShapeError(`batch: ${name}[${t}] = ${v} is neither ${IGNORE_INDEX} nor a token id of the vocabulary (${vocabSize})`);
      }
    }
  }
  const next = input.labels ?? ids; // what token t + 1 contributes as the target of token t
  const segments = input.segments ? Uint32Array.from(input.segments) : null;
  const positions = new Uint32Array(ids.length);
  const targets = new Int32Array(ids.length).fill(IGNORE_INDEX);
  let targetCount = 0;
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < S; i++) {
      const t = b * S + i;
      const sameDoc = (u: number) => !segments || segments[u] === segments[t];
      positions[t] = i > 0 && sameDoc(t - 1) ? positions[t - 1] + 1 : 0;
      if (input.targets) {
        targets[t] = input.targets[t];
      } else if (i + 1 < S && sameDoc(t + 1) && (!input.lossMask || input.lossMask[t + 1])) {
        // Token t predicts token t + 1 when it exists in the same document and is not masked out.
        targets[t] = next[t + 1];
      }
      if (targets[t] !== IGNORE_INDEX) targetCount++;
    }
  }
  return {
    B, S, ids, targets, positions, segments, targetCount,
    embedPlan: embeddingGradPlan(ids, vocabSize),
    positionPlan: embeddingGradPlan(positions, maxPositions),
  };
}
