/**
 * What identifies a loaded base model, so files made for one model (sparse masks, deltas) are refused
 * by another: its architecture and every interpreted config field with each parameter's shape, and a
 * hash of its weights' values as loaded (f32 bits, tensor by tensor in Hugging Face name order).
 */
import { Hasher } from '../util/hasher.js';
import type { ModelConfig } from './config.js';
import { paramSpecs } from './layout.js';

export interface ModelFingerprint {
  /** Digest of the interpreted configuration and the parameter shapes. */
  shapes: string;
  /** Digest of the weights as loaded. */
  weights: string;
}

export function shapesDigest(config: ModelConfig): string {
  const { raw: _raw, ...interpreted } = config;
  const h = new Hasher().text(JSON.stringify(interpreted, Object.keys(interpreted).sort()));
  for (const s of paramSpecs(config)) h.text(`${s.name}:${s.shape.join('x')}`);
  return h.digest();
}

/** Hashes weights as they stream in (one call per tensor, in load order). */
export class WeightsHasher {
  private readonly h = new Hasher();

  add(name: string, data: Float32Array | Uint32Array | Uint8Array): void {
    this.h.text(name);
    if (data instanceof Float32Array) this.h.floats(data);
    else if (data instanceof Uint32Array) this.h.words(data);
    else this.h.bytes(data);
  }

  digest(): string {
    return this.h.digest();
  }
}
