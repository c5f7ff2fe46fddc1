/**
 * Attention over a KV cache, for generation: each layer's new keys and values are copied into their
 * sequence's rows of the cache, then the new queries attend over every cached row up to their position.
 * Plugged into the transformer's forward pass as its AttentionStep.
 */
import { view } from '../gpu/buffers.js';
import { attentionForward } from '../kernels/attention.js';
import type { ModelConfig } from '../model/config.js';
import { layerAttention, type AttentionStep } from '../model/transformer.js';

/** Keys and values of every layer for `batch` sequences: [batch * rows, nKV * headDim] per layer. */
export interface KvCache {
  k: GPUBuffer[];
  v: GPUBuffer[];
  /** Rows (positions) per sequence. */
  rows: number;
  batch: number;
}

/**
 * A decoding step: sequence b's S new tokens sit at positions starts[b].., and the same starts are in
 * `startsBuffer` (u32 [B]) for the attention kernel.
 */
export interface KvStep {
  cache: KvCache;
  starts: number[];
  startsBuffer: GPUBuffer;
}

export function cachedAttention(c: ModelConfig, kv: KvStep): AttentionStep {
  const kvd = c.numKvHeads * c.headDim;
  return (rec, acts, i, l) => {
    const rowBytes = kvd * 4;
    const bytes = acts.S * rowBytes;
    for (let b = 0; b < acts.B; b++) {
      const at = (b * kv.cache.rows + kv.starts[b]) * rowBytes;
      rec.copy(view(l.k, b * bytes, bytes), { buffer: kv.cache.k[i], offset: at, size: bytes }, bytes);
      rec.copy(view(l.v, b * bytes, bytes), { buffer: kv.cache.v[i], offset: at, size: bytes }, bytes);
    }
    attentionForward(rec, {
      B: acts.B, S: acts.S, ...layerAttention(c, i), q: l.q, k: kv.cache.k[i], v: kv.cache.v[i],
      o: l.att, stats: l.ast, cache: { kvRows: kv.cache.rows, qOffset: kv.starts, offsets: kv.startsBuffer },
    });
  };
}
