/**
 * Buffer views and a pool for temporaries. Kernels take `BufferLike`: a whole buffer or a byte range of
 * one (parameters, gradients and activations are views carved out of a few large buffers).
 */
export interface TensorView {
  buffer: GPUBuffer;
  /** Byte offset into the buffer; a multiple of the device's minStorageBufferOffsetAlignment (256). */
  offset: number;
  /** Byte length of the view. */
  size: number;
  /**
   * Its elements are 16-bit, packed two per 4-byte word (mixed precision's f16 activations); absent: 4-byte
   * elements. Products read such a view as a 16-bit operand, and binding it where a kernel reads f32 is
   * refused (CommandRecorder.dispatch), so no kernel reads its words as floats.
   */
  format?: 'f16' | 'bf16';
}

export type BufferLike = GPUBuffer | TensorView;

export function asView(b: BufferLike): TensorView {
  if ('buffer' in b && 'offset' in b) return b;
  const buffer = b as GPUBuffer;
  return { buffer, offset: 0, size: buffer.size };
}

/** A byte range of a buffer, e.g. one tensor inside an arena. */
export function view(b: BufferLike, byteOffset: number, byteSize: number): TensorView {
  const v = asView(b);
  if (byteOffset < 0 || byteSize < 0 || byteOffset + byteSize > v.size) {
    throw new RangeError(`view [${byteOffset}, ${byteOffset + byteSize}) is outside a ${v.size}-byte buffer`);
  }
  return { buffer: v.buffer, offset: v.offset + byteOffset, size: byteSize, ...(v.format ? { format: v.format } : {}) };
}

export const STORAGE = 0x0080 | 0x0004 | 0x0008; // STORAGE | COPY_SRC | COPY_DST (numeric: GPUBufferUsage is a runtime global)
export const MAP_READ_DST = 0x0001 | 0x0008; // MAP_READ | COPY_DST
export const UNIFORM_DST = 0x0040 | 0x0008; // UNIFORM | COPY_DST

export function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

function bucketSize(size: number): number {
  // Power-of-two buckets keep reuse high for temporaries whose sizes vary slightly between calls.
  let b = 256;
  while (b < size) b *= 2;
  return b;
}

export interface BufferAllocator {
  createBuffer(size: number, usage: number, label: string): GPUBuffer;
  destroyBuffer(buffer: GPUBuffer): void;
}

/** Reuses buffers of the same usage and size bucket. Buffers handed out may be larger than asked for. */
export class BufferPool {
  private free = new Map<string, GPUBuffer[]>();
  constructor(private readonly allocator: BufferAllocator) {}

  acquire(size: number, usage: number, label: string): GPUBuffer {
    const bucket = bucketSize(size);
    const list = this.free.get(`${usage}:${bucket}`);
    return list?.pop() ?? this.allocator.createBuffer(bucket, usage, label);
  }

  release(buffer: GPUBuffer): void {
    const key = `${buffer.usage}:${buffer.size}`;
    let list = this.free.get(key);
    if (!list) this.free.set(key, (list = []));
    list.push(buffer);
  }

  /** Destroy every idle buffer. */
  trim(): void {
    for (const list of this.free.values()) for (const b of list) this.allocator.destroyBuffer(b);
    this.free.clear();
  }
}
