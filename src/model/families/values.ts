/** Reading numbers from config.json: present, of the right kind, and within bounds no real model exceeds. */
import { InvalidConfigError } from '../hf-config.js';
import { describeValue } from '../../io/strict-json.js';

export type Json = Record<string, unknown>;

/**
 * Upper bounds far beyond any real model (the largest have ~130 layers, 2^14-wide hidden states and
 * 2^18-token vocabularies), so absurd configs fail here instead of exhausting memory later.
 */
const MAX: Record<string, number> = {
  num_hidden_layers: 1024, n_layer: 1024,
  num_attention_heads: 4096, num_key_value_heads: 4096, n_head: 4096, head_dim: 4096,
  hidden_size: 1 << 20, n_embd: 1 << 20, intermediate_size: 1 << 22, n_inner: 1 << 22,
  vocab_size: 1 << 24,
};
const MAX_INT = 1 << 30;

export function configInt(raw: Json, key: string, fallback?: number): number {
  const v = raw[key] ?? fallback;
  const max = MAX[key] ?? MAX_INT;
  if (!Number.isSafeInteger(v) || (v as number) <= 0 || (v as number) > max) {
    throw new InvalidConfigError(`'${key}' must be a positive integer up to ${max}, got ${describeValue(raw[key])}`);
  }
  return v as number;
}

export function configNumber(raw: Json, key: string, fallback: number): number {
  const v = raw[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new InvalidConfigError(`'${key}' must be a positive number, got ${describeValue(v)}`);
  return v;
}

export function tokenIds(v: unknown): number[] {
  if (v === undefined || v === null) return [];
  return (Array.isArray(v) ? v : [v]).filter((x): x is number => Number.isInteger(x));
}
