/**
 * Sample packing: examples placed into fixed rows of S tokens, several per row, each its own segment
 * (the engine keeps segments apart in attention and restarts their positions), so short rows do not
 * pay for a whole row of padding. Placement is first-fit decreasing (longest first, each into the first
 * row with room), found in O(log rows) by a max-tree over the rows' free space. Without packing, each
 * example has a row of its own, padded.
 */
import type { BatchInput } from '../model/batch.js';
import type { Example } from './examples.js';

export interface PackingStats {
  examples: number;
  rows: number;
  /** Tokens of the examples, and the row slots they fill (rows x S). */
  tokens: number;
  slots: number;
  /** Padding's share of the slots. */
  waste: number;
  /** The waste with one example per row, for comparison. */
  unpackedWaste: number;
}

/** Rows of S tokens: ids, the loss mask (1 = a trained token) and segment ids, row-major. */
export class PackedRows {
  readonly ids: Uint32Array;
  readonly lossMask: Uint8Array;
  readonly segments: Uint32Array;
  /** The examples in each row, in order (indices into the examples given). */
  readonly members: number[][];
  readonly stats: PackingStats;

  constructor(
    /** The examples packed, as given. */
    readonly examples: Example[],
    readonly S: number,
    o: { pack: boolean; padId: number },
  ) {
    for (const e of examples) if (e.ids.length > S) throw new RangeError(`an example of ${e.ids.length} tokens does not fit rows of ${S}`);
    this.members = o.pack ? firstFitDecreasing(examples.map((e) => e.ids.length), S) : examples.map((_, i) => [i]);
    const rows = this.members.length;
    this.ids = new Uint32Array(rows * S).fill(o.padId);
    this.lossMask = new Uint8Array(rows * S);
    this.segments = new Uint32Array(rows * S);
    let tokens = 0;
    this.members.forEach((row, r) => {
      let at = r * S;
      row.forEach((i, k) => {
        const e = examples[i];
        this.ids.set(e.ids, at);
        this.lossMask.set(e.trained, at);
        this.segments.fill(k, at, at + e.ids.length);
        at += e.ids.length;
        tokens += e.ids.length;
      });
      this.segments.fill(row.length, at, (r + 1) * S); // padding: a segment of its own, never trained
    });
    const slots = rows * S;
    this.stats = {
      examples: examples.length, rows, tokens, slots,
      waste: slots === 0 ? 0 : 1 - tokens / slots,
      unpackedWaste: examples.length === 0 ? 0 : 1 - tokens / (examples.length * S),
    };
  }

  get rows(): number {
    return this.members.length;
  }

  /** Consecutive batches of up to `rowsPerBatch` rows, over the first `limit` rows (default all). */
  *batches(rowsPerBatch: number, limit = this.rows): Generator<BatchInput & { ids: Uint32Array }> {
    const end = Math.min(limit, this.rows);
    for (let r = 0; r < end; r += rowsPerBatch) yield this.batch(Array.from({ length: Math.min(rowsPerBatch, end - r) }, (_, i) => r + i));
  }

  /** A batch of the given rows, in that order. */
  batch(rows: readonly number[]): BatchInput & { ids: Uint32Array } {
    const S = this.S;
    const ids = new Uint32Array(rows.length * S);
    const lossMask = new Uint8Array(rows.length * S);
    const segments = new Uint32Array(rows.length * S);
    rows.forEach((r, b) => {
      ids.set(this.ids.subarray(r * S, (r + 1) * S), b * S);
      lossMask.set(this.lossMask.subarray(r * S, (r + 1) * S), b * S);
      segments.set(this.segments.subarray(r * S, (r + 1) * S), b * S);
    });
    return { ids, lossMask, segments, B: rows.length, S };
  }
}

/** Bins of capacity S for items of the given sizes: longest first, each into the first bin with room. */
export function firstFitDecreasing(sizes: number[], S: number): number[][] {
  const order = sizes.map((_, i) => i).sort((a, b) => sizes[b] - sizes[a] || a - b);
  let leaves = 1;
  while (leaves < sizes.length) leaves *= 2;
  // free[leaves + b] is bin b's free space (every bin starts empty); inner nodes hold their subtree's max.
  const free = new Int32Array(2 * leaves).fill(S);
  const bins: number[][] = [];
  for (const i of order) {
    let node = 1;
    while (node < leaves) node = free[2 * node] >= sizes[i] ? 2 * node : 2 * node + 1;
    const b = node - leaves;
    if (b === bins.length) bins.push([]);
    bins[b].push(i);
    free[node] -= sizes[i];
    for (node >>= 1; node >= 1; node >>= 1) free[node] = Math.max(free[2 * node], free[2 * node + 1]);
  }
  // Within a bin, examples keep their dataset order.
  for (const bin of bins) bin.sort((a, b) => a - b);
  return bins;
}
