/** Embedding lookup and its deterministic gradient (shaders/embedding.wgsl). */
import { ShapeError } from '../errors.js';
import type { BufferLike } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { launch1d, requireDims, requireElements } from './common.js';
import type { WeightFormat } from './matmul.js';

const WG = 256;

/** Token ids grouped by id, for the segmented-sum backward: unique ids, offsets into order, token order. */
export interface EmbeddingGradPlan {
  unique: Uint32Array;
  offsets: Uint32Array;
  order: Uint32Array;
}

export function embeddingGradPlan(ids: ArrayLike<number>, rows: number): EmbeddingGradPlan {
  const order = Uint32Array.from({ length: ids.length }, (_, t) => t);
  for (let t = 0; t < ids.length; t++) {
    if (!Number.isInteger(ids[t]) || ids[t] < 0 || ids[t] >= rows) throw new ShapeError(`embedding: id ${ids[t]} at ${t} is outside [0, ${rows})`);
  }
  order.sort((a, b) => ids[a] - ids[b] || a - b);
  const unique: number[] = [];
  const offsets: number[] = [];
  order.forEach((t, k) => {
    if (k === 0 || ids[t] !== ids[order[k - 1]]) {
      unique.push(ids[t]);
      offsets.push(k);
    }
  });
  offsets.push(order.length);
  return { unique: Uint32Array.from(unique), offsets: Uint32Array.from(offsets), order };
}

export interface EmbeddingForwardArgs {
  /** u32 [T]. */
  ids: BufferLike;
  /** [rows, C]: f32, or 16-bit packed two per u32 (tableFormat). */
  table: BufferLike;
  tableFormat?: WeightFormat;
  /** [T, C]. */
  out: BufferLike;
  T: number;
  C: number;
  rows: number;
  /** out += lookup. */
  accumulate?: boolean;
  /** Learned absolute positions (GPT-2), added in the same pass: row positions[t] of `table` [rows, C], f32. */
  positions?: { ids: BufferLike; table: BufferLike; rows: number };
  /** Multiplies each looked-up row (Gemma's sqrt(hidden size), as an f32); default 1. */
  scale?: number;
  /**
   * The table is rows [rowOffset, rowOffset + rows) of a vocabulary split into pieces that each fit a
   * binding: only tokens with ids in that range are written (each piece writes its own).
   */
  rowOffset?: number;
}

export function embeddingForward(rec: CommandRecorder, a: EmbeddingForwardArgs): void {
  requireDims('embeddingForward', { T: a.T, C: a.C, rows: a.rows });
  requireElements('embeddingForward', 'ids', a.ids, a.T);
  const format = a.tableFormat ?? 'f32';
  requireElements('embeddingForward', 'table', a.table, format === 'f32' ? a.rows * a.C : Math.ceil((a.rows * a.C) / 2));
  requireElements('embeddingForward', 'out', a.out, a.T * a.C);
  const pos = a.positions;
  if (pos) {
    requireDims('embeddingForward', { positionRows: pos.rows });
    requireElements('embeddingForward', 'positions', pos.ids, a.T);
    requireElements('embeddingForward', 'position table', pos.table, pos.rows * a.C);
  }
  const unused = rec.gpu.placeholder();
  rec.dispatch({
    shader: 'embedding',
    entryPoint: 'embedding_forward',
    constants: { WG, ACCUMULATE: !!a.accumulate, TABLE_FORMAT: { f32: 0, bf16: 1, f16: 2 }[format], PIECE: a.rowOffset !== undefined, POSITIONS: !!pos },
    uniforms: { T: a.T, C: a.C, rows: a.rows, U: 0, scale: a.scale ?? 1, r0: a.rowOffset ?? 0, posRows: pos?.rows ?? 0 },
    storage: {
      ids: a.ids, table: format === 'f32' ? a.table : unused, table_h: format === 'f32' ? unused : a.table, out: a.out,
      positions: pos?.ids ?? unused, posTable: pos?.table ?? unused,
    },
    workgroups: launch1d(rec.gpu, a.T * a.C, WG),
    label: `embedding forward ${a.T}x${a.C}`,
  });
}

export interface EmbeddingBackwardArgs {
  /** The plan's arrays uploaded as u32 buffers. */
  unique: BufferLike;
  offsets: BufferLike;
  order: BufferLike;
  /** Number of unique ids. */
  U: number;
  dOut: BufferLike;
  /** [rows, C], accumulated (+=). */
  dTable: BufferLike;
  T: number;
  C: number;
  rows: number;
  /** The forward pass's scale; default 1. */
  scale?: number;
  /** As the forward pass's: dTable holds rows [rowOffset, rowOffset + rows), other ids are skipped. */
  rowOffset?: number;
}

export function embeddingBackward(rec: CommandRecorder, a: EmbeddingBackwardArgs): void {
  requireDims('embeddingBackward', { T: a.T, C: a.C, rows: a.rows, U: a.U });
  requireElements('embeddingBackward', 'unique', a.unique, a.U);
  requireElements('embeddingBackward', 'offsets', a.offsets, a.U + 1);
  requireElements('embeddingBackward', 'order', a.order, a.T);
  requireElements('embeddingBackward', 'dOut', a.dOut, a.T * a.C);
  requireElements('embeddingBackward', 'dTable', a.dTable, a.rows * a.C);
  rec.dispatch({
    shader: 'embedding',
    entryPoint: 'embedding_backward',
    constants: { WG, PIECE: a.rowOffset !== undefined },
    uniforms: { T: a.T, C: a.C, rows: a.rows, U: a.U, scale: a.scale ?? 1, r0: a.rowOffset ?? 0, posRows: 0 },
    storage: { ids: a.unique, offsets: a.offsets, order: a.order, dout: a.dOut, dtable: a.dTable },
    workgroups: launch1d(rec.gpu, a.U * a.C, WG),
    label: `embedding backward ${a.U}x${a.C}`,
  });
}
