/**
 * A pool of LoRA adapters of one rank class over one set of modules: GPU buffers of fixed-size slots,
 * each slot one adapter. A slot holds, module by module, A [R, in] then B [out, R], R the class rank
 * (the power of two at or above the adapter's largest module rank; smaller ranks are zero-padded, which
 * adds exact zeros), and a buffer beside it holds each module's scale. A batch reads any slots at once
 * (src/kernels/multi-lora.ts). Buffers hold up to `maxSlotsPerBuffer` slots (within the binding size
 * limit; the last one made may hold fewer, to end at the cache's budget) and are added as the pool grows;
 * slots are reused after eviction, so the buffers never move.
 */
import type { Gpu } from '../gpu/gpu.js';
import { view } from '../gpu/buffers.js';
import type { LinearShape } from '../methods/targets.js';
import type { LoraAdapter } from './adapters.js';

export interface PoolModule extends LinearShape {
  /** Position among the pool's modules (its scale's offset). */
  index: number;
  /** Float offsets of A and B inside a slot. */
  offA: number;
  offB: number;
}

/** The pool rank an adapter of this (largest) rank goes to. */
export function rankClass(rank: number): number {
  return 2 ** Math.ceil(Math.log2(Math.max(rank, 1)));
}

/** Floats of one slot: every module's A and B at rank R. */
export function slotFloats(rank: number, shapes: Iterable<LinearShape>): number {
  let n = 0;
  for (const s of shapes) n += rank * (s.in + s.out);
  return n;
}

/** Slots of `slotFloats` floats one buffer may hold: within the device's buffer and binding limits, and at most `most`. */
export function slotsPerBuffer(floats: number, limits: Pick<GPUSupportedLimits, 'maxBufferSize' | 'maxStorageBufferBindingSize'>, most: number): number {
  return Math.min(most, Math.floor(Math.min(limits.maxBufferSize, limits.maxStorageBufferBindingSize) / (floats * 4)));
}

export class AdapterPool {
  readonly modules = new Map<string, PoolModule>();
  readonly slotStride: number;
  /** GPU bytes per slot, scales included. */
  readonly slotBytes: number;
  /** Each buffer with its first slot's number and its slot count. */
  readonly buffers: { pool: GPUBuffer; scales: GPUBuffer; first: number; slots: number }[] = [];
  private readonly free: number[] = [];

  constructor(
    private readonly gpu: Gpu,
    /** The class rank R. */
    readonly rank: number,
    shapes: [string, LinearShape][],
    readonly maxSlotsPerBuffer: number,
  ) {
    let at = 0;
    shapes.forEach(([name, s], index) => {
      this.modules.set(name, { ...s, index, offA: at, offB: at + rank * s.in });
      at += rank * (s.in + s.out);
    });
    this.slotStride = at;
    this.slotBytes = (at + this.modules.size) * 4;
  }

  static key(rank: number, modules: Iterable<string>): string {
    return `${rank}:${[...modules].join(',')}`;
  }

  get capacity(): number {
    const last = this.buffers[this.buffers.length - 1];
    return last ? last.first + last.slots : 0;
  }

  get gpuBytes(): number {
    return this.capacity * this.slotBytes;
  }

  /** Add a buffer of `slots` slots (the caller has checked the budget). */
  grow(slots = this.maxSlotsPerBuffer): void {
    if (!Number.isInteger(slots) || slots < 1 || slots > this.maxSlotsPerBuffer) throw new RangeError(`a pool buffer holds 1 to ${this.maxSlotsPerBuffer} slots, not ${slots}`);
    const pool = this.gpu.createBuffer(slots * this.slotStride * 4, undefined, `adapter pool r${this.rank}[${this.buffers.length}]`);
    let scales: GPUBuffer;
    try {
      scales = this.gpu.createBuffer(slots * this.modules.size * 4, undefined, `adapter scales r${this.rank}[${this.buffers.length}]`);
    } catch (e) {
      this.gpu.destroyBuffer(pool);
      throw e;
    }
    const first = this.capacity;
    this.buffers.push({ pool, scales, first, slots });
    for (let slot = first + slots - 1; slot >= first; slot--) this.free.push(slot);
  }

  /** A free slot, or null when every slot is taken. */
  take(): number | null {
    return this.free.pop() ?? null;
  }

  release(slot: number): void {
    this.free.push(slot);
  }

  /** The buffer a slot is in and its index there. */
  locate(slot: number): { buffer: number; local: number } {
    // A pool has a few buffers; all but the last are full-size, so the division lands on or just past it.
    let buffer = Math.min(Math.floor(slot / this.maxSlotsPerBuffer), this.buffers.length - 1);
    while (slot < this.buffers[buffer].first) buffer--;
    return { buffer, local: slot - this.buffers[buffer].first };
  }

  /** Write an adapter into a slot (two queue writes): A and B zero-padded to the class rank, and the scales. */
  write(slot: number, adapter: LoraAdapter): void {
    const R = this.rank;
    const data = new Float32Array(this.slotStride);
    const scales = new Float32Array(this.modules.size);
    for (const [name, m] of this.modules) {
      const w = adapter.modules.get(name)!;
      data.set(w.A, m.offA); // rows past the adapter's rank stay zero
      for (let n = 0; n < m.out; n++) data.set(w.B.subarray(n * w.rank, (n + 1) * w.rank), m.offB + n * R);
      scales[m.index] = w.scale;
    }
    const { buffer, local } = this.locate(slot);
    const b = this.buffers[buffer];
    this.gpu.write(view(b.pool, local * this.slotStride * 4, data.byteLength), data);
    this.gpu.write(view(b.scales, local * scales.byteLength, scales.byteLength), scales);
  }

  destroy(): void {
    for (const b of this.buffers) {
      this.gpu.destroyBuffer(b.pool);
      this.gpu.destroyBuffer(b.scales);
    }
    this.buffers.length = 0;
    this.free.length = 0;
  }
}
