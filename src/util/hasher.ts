/**
 * A fast 64-bit content hash (two independent 32-bit lanes of murmur3's mixing) for fingerprints: not
 * cryptographic, but any change to the hashed words changes the digest with overwhelming odds.
 */
export class Hasher {
  private a = 0x243f6a88;
  private b = 0x85a308d3;
  private count = 0;

  /** Hash 32-bit words (a Float32Array's bits are its bytes as u32). */
  words(data: Uint32Array): this {
    let a = this.a;
    let b = this.b;
    for (let i = 0; i < data.length; i++) {
      const k = data[i];
      a = mix(a, Math.imul(k, 0xcc9e2d51));
      b = mix(b, Math.imul(k ^ 0x5bd1e995, 0x1b873593));
    }
    this.a = a;
    this.b = b;
    this.count += data.length;
    return this;
  }

  floats(data: Float32Array): this {
    return this.words(new Uint32Array(data.buffer, data.byteOffset, data.length));
  }

  text(s: string): this {
    return this.bytes(new TextEncoder().encode(s));
  }

  /** Hash bytes as zero-padded words, then their count ('ab' and 'ab\0' differ). */
  bytes(bytes: Uint8Array): this {
    const whole = bytes.length >> 2;
    // Whole words are hashed in place where the bytes are aligned (a 4-bit weight's codes need no copy).
    if (bytes.byteOffset % 4 === 0) this.words(new Uint32Array(bytes.buffer, bytes.byteOffset, whole));
    else this.words(new Uint32Array(bytes.slice(0, whole * 4).buffer));
    const tail = new Uint32Array(bytes.length % 4 ? 2 : 1);
    new Uint8Array(tail.buffer).set(bytes.subarray(whole * 4));
    tail[tail.length - 1] = bytes.length;
    return this.words(tail);
  }

  /** 16 hex digits. */
  digest(): string {
    const fin = (h: number) => {
      h ^= this.count;
      h ^= h >>> 16;
      h = Math.imul(h, 0x85ebca6b);
      h ^= h >>> 13;
      h = Math.imul(h, 0xc2b2ae35);
      h ^= h >>> 16;
      return (h >>> 0).toString(16).padStart(8, '0');
    };
    return fin(this.a) + fin(this.b);
  }
}

function mix(h: number, k: number): number {
  k = (k << 15) | (k >>> 17);
  h ^= Math.imul(k, 0x1b873593);
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}
