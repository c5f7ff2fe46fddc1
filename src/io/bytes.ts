/**
 * Random-access byte sources: what safetensors streaming needs from a file wherever it lives. Reads are
 * by range, so a model is never held whole in host memory.
 */
export interface ByteSource {
  /** Shown in errors. */
  readonly name: string;
  readonly size: number;
  /** Exactly `length` bytes at `offset`; rejects if the source is shorter. */
  read(offset: number, length: number): Promise<Uint8Array>;
}

export function bytesSource(name: string, bytes: Uint8Array): ByteSource {
  return {
    name,
    size: bytes.byteLength,
    async read(offset, length) {
      if (offset + length > bytes.byteLength) throw new RangeError(`${name}: read past the end`);
      return bytes.subarray(offset, offset + length);
    },
  };
}

/** A browser File or Blob. */
export function blobSource(name: string, blob: Blob): ByteSource {
  return {
    name,
    size: blob.size,
    async read(offset, length) {
      if (offset + length > blob.size) throw new RangeError(`${name}: read past the end`);
      return new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer());
    },
  };
}
