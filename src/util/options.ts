/**
 * Options objects are checked for keys they do not know, so that a misspelt or not-yet-supported option
 * (`{ rank: 4, adalora: true }`) fails with its name and the nearest known key instead of doing nothing.
 * Each options type lists its keys once at runtime, with the compiler holding the list to the type.
 */
import { ShapeError, UnknownOptionError } from '../errors.js';

/** Keys of T not in the list. */
type Missing<T, K extends readonly PropertyKey[]> = Exclude<keyof T, K[number]>;

/**
 * The keys of options type T, as a runtime list: `optionKeys<LoraOptions>()(['rank', 'alpha', ...])`.
 * A key of T left out of the list is a compile error (the call then wants a second argument).
 */
export function optionKeys<T>() {
  return <const K extends readonly (keyof T & string)[]>(keys: K, ..._everyKey: [Missing<T, K>] extends [never] ? [] : [missing: Missing<T, K>]): readonly string[] => keys;
}

/** Levenshtein distance, for suggestions. */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length];
}

/** The known key nearest to `key` (ignoring case and underscores: lora_alpha finds loraAlpha), or null. */
export function nearestKey(key: string, known: readonly string[]): string | null {
  const plain = (s: string) => s.toLowerCase().replace(/[_-]/g, '');
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const k of known) {
    const d = distance(plain(key), plain(k));
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  return bestDistance <= Math.max(2, Math.floor(key.length / 3)) ? best : null;
}

/**
 * Throws UnknownOptionError for a key of `options` outside `known`; `where` names the object in the
 * message ('LoRA options', 'FineTuner options'). Absent options (undefined, null) pass.
 */
export function checkOptionKeys(where: string, options: unknown, known: readonly string[]): void {
  if (options === undefined || options === null || typeof options !== 'object' || Array.isArray(options)) return;
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) throw new UnknownOptionError(where, key, nearestKey(key, known), known);
  }
}

/** A seed option: absent, or an integer from 0 to 2^32 - 1 (a ShapeError naming `what` otherwise). */
export function checkSeed(what: string, seed: unknown): void {
  if (seed !== undefined && !(Number.isInteger(seed) && (seed as number) >= 0 && (seed as number) < 2 ** 32)) throw new ShapeError(`${what} seed must be an integer from 0 to 2^32 - 1, got ${String(seed).slice(0, 40)}`);
}
