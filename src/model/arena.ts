/**
 * Named views carved out of a few large buffers: one layout, computed once, serves parameters, their
 * gradients and both AdamW moments (identical layouts, so the fused optimizer sweeps each buffer once).
 * Views start at 256-byte boundaries (minStorageBufferOffsetAlignment); buffers stay under the device's
 * maxBufferSize and maxStorageBufferBindingSize, spilling into more buffers for large models.
 */
import type { TensorView } from '../gpu/buffers.js';
import type { Gpu } from '../gpu/gpu.js';
import { ShapeError } from '../errors.js';

export interface ArenaSlot {
  name: string;
  /** Elements (f32). */
  length: number;
  /** Which buffer, and the byte offset inside it. */
  buffer: number;
  offset: number;
}

export interface ArenaLayout {
  slots: Map<string, ArenaSlot>;
  /** Byte size of each buffer. */
  bufferBytes: number[];
}

export function planArena(tensors: { name: string; length: number }[], maxBytes: number, align = 256): ArenaLayout {
  const slots = new Map<string, ArenaSlot>();
  const bufferBytes: number[] = [0];
  for (const t of tensors) {
    const bytes = Math.ceil((t.length * 4) / align) * align;
    if (bytes > maxBytes) throw new ShapeError(`tensor '${t.name}' (${t.length * 4} bytes) exceeds the ${maxBytes}-byte buffer limit`);
    if (bufferBytes[bufferBytes.length - 1] + bytes > maxBytes) bufferBytes.push(0);
    const buffer = bufferBytes.length - 1;
    slots.set(t.name, { name: t.name, length: t.length, buffer, offset: bufferBytes[buffer] });
    bufferBytes[buffer] += bytes;
  }
  return { slots, bufferBytes };
}

export class Arena {
  readonly buffers: GPUBuffer[];
  constructor(
    private readonly gpu: Gpu,
    readonly layout: ArenaLayout,
    label: string,
  ) {
    this.buffers = [];
    try {
      layout.bufferBytes.forEach((bytes, i) => this.buffers.push(gpu.createBuffer(Math.max(bytes, 256), undefined, `${label}[${i}]`)));
    } catch (e) {
      this.destroy(); // a failure part way releases the buffers already made
      throw e;
    }
  }

  view(name: string): TensorView {
    const s = this.layout.slots.get(name);
    if (!s) throw new Error(`no tensor '${name}' in this arena`);
    return { buffer: this.buffers[s.buffer], offset: s.offset, size: s.length * 4 };
  }

  has(name: string): boolean {
    return this.layout.slots.has(name);
  }

  /** Each buffer with the element count it holds (padding included), for whole-arena kernels. */
  spans(): { buffer: GPUBuffer; length: number }[] {
    return this.buffers.map((buffer, i) => ({ buffer, length: this.layout.bufferBytes[i] / 4 }));
  }

  destroy(): void {
    for (const b of this.buffers) this.gpu.destroyBuffer(b);
  }
}

/** The largest tensor one buffer and one storage binding can hold on this device, and the limit that sets it. */
export function bindingLimit(gpu: Gpu): { bytes: number; name: 'maxStorageBufferBindingSize' | 'maxBufferSize' } {
  const { maxBufferSize, maxStorageBufferBindingSize } = gpu.limits;
  return maxStorageBufferBindingSize <= maxBufferSize
    ? { bytes: maxStorageBufferBindingSize, name: 'maxStorageBufferBindingSize' }
    : { bytes: maxBufferSize, name: 'maxBufferSize' };
}
