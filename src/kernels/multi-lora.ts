/**
 * Many LoRA adapters in one batch (shaders/multi_lora.wgsl): y[t] += s (x[t] A^T) B^T where each row t
 * takes A, B and s from its own slot of an adapter pool. The pool's layout is the caller's
 * (src/serve/adapter-pool.ts): a slot is `slotStride` floats, and a module's A [rank, inDim] and B
 * [outDim, rank] sit at `offA` and `offB` inside it.
 */
import { ShapeError } from '../errors.js';
import type { BufferLike } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { launch1d, requireDims, requireElements } from './common.js';

const WG = 256;
/** rowSlots entry of a row with no adapter in this pool. */
export const NO_SLOT = 0xffffffff;

export interface MultiLoraArgs {
  /** Layer input [T, inDim]. */
  x: BufferLike;
  /** Layer output [T, outDim], added to. */
  y: BufferLike;
  /** Scratch [T, rank]: x A^T per row. */
  u: BufferLike;
  T: number;
  inDim: number;
  outDim: number;
  /** The pool's rank: every slot's A has this many rows (smaller adapters zero-padded). */
  rank: number;
  pool: BufferLike;
  /** Slots the pool holds (every slot index used must be below it). */
  slots: number;
  slotStride: number;
  offA: number;
  offB: number;
  /** One slot for every row, or a [T] u32 buffer of slots (NO_SLOT: the row has none here). */
  rows: { slot: number } | { rowSlots: BufferLike };
  /** The scale of module `scaleOffset` in slot s is scales[s * scaleStride + scaleOffset]. */
  scales: BufferLike;
  scaleStride: number;
  scaleOffset: number;
}

export function multiLora(rec: CommandRecorder, a: MultiLoraArgs): void {
  const { T, inDim, outDim, rank: R } = a;
  requireDims('multiLora', { T, inDim, outDim, rank: R, slots: a.slots, slotStride: a.slotStride, offA: a.offA, offB: a.offB, scaleStride: a.scaleStride, scaleOffset: a.scaleOffset });
  if (T === 0) return;
  if (R < 1) throw new ShapeError('multiLora: rank must be at least 1');
  if (a.offA + R * inDim > a.slotStride || a.offB + outDim * R > a.slotStride) throw new ShapeError(`multiLora: a module at A ${a.offA}, B ${a.offB} does not fit a slot of ${a.slotStride} floats`);
  if (a.scaleOffset >= a.scaleStride) throw new ShapeError(`multiLora: scale offset ${a.scaleOffset} is outside a stride of ${a.scaleStride}`);
  if (T * outDim >= 2 ** 32 || a.slots * a.slotStride > 2 ** 32) throw new ShapeError('multiLora: more than 2^32 elements; split the batch or the pool');
  requireElements('multiLora', 'x', a.x, T * inDim);
  requireElements('multiLora', 'y', a.y, T * outDim);
  requireElements('multiLora', 'u', a.u, T * R);
  requireElements('multiLora', 'pool', a.pool, a.slots * a.slotStride);
  requireElements('multiLora', 'scales', a.scales, a.slots * a.scaleStride);
  let fixedSlot = NO_SLOT;
  let rowSlots: BufferLike;
  if ('slot' in a.rows) {
    if (!Number.isInteger(a.rows.slot) || a.rows.slot < 0 || a.rows.slot >= a.slots) throw new ShapeError(`multiLora: slot ${a.rows.slot} is outside a pool of ${a.slots}`);
    fixedSlot = a.rows.slot;
    rowSlots = rec.gpu.placeholder();
  } else {
    requireElements('multiLora', 'rowSlots', a.rows.rowSlots, T);
    rowSlots = a.rows.rowSlots;
  }
  const uniforms = { T, inDim, outDim, R, slotStride: a.slotStride, offA: a.offA, offB: a.offB, fixedSlot, scaleStride: a.scaleStride, scaleOffset: a.scaleOffset };
  if (T * R >= 2 ** 32) throw new ShapeError('multiLora: T * rank exceeds 2^32 invocations; split the batch');
  if (rec.gpu.tuning.multiLoraShrink === 'cooperative') {
    rec.dispatch({
      shader: 'multi_lora', entryPoint: 'shrink_cooperative', constants: { WG: rec.gpu.tuning.reductionWorkgroupSize }, uniforms, storage: { x: a.x, pool: a.pool, rowSlot: rowSlots, u: a.u },
      // one workgroup per output, folded like a 1-D launch of workgroups of size 1
      workgroups: launch1d(rec.gpu, T * R, 1), label: `multi-lora shrink (cooperative) T=${T} r=${R}`,
    });
  } else {
    rec.dispatch({
      shader: 'multi_lora', entryPoint: 'shrink', constants: { WG }, uniforms, storage: { x: a.x, pool: a.pool, rowSlot: rowSlots, u: a.u },
      workgroups: launch1d(rec.gpu, T * R, WG), label: `multi-lora shrink T=${T} r=${R}`,
    });
  }
  rec.dispatch({
    shader: 'multi_lora', entryPoint: 'expand', constants: { WG }, uniforms, storage: { pool: a.pool, rowSlot: rowSlots, scales: a.scales, u: a.u, y: a.y },
    workgroups: launch1d(rec.gpu, T * outDim, WG), label: `multi-lora expand T=${T} n=${outDim}`,
  });
}
