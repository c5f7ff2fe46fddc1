/**
 * Field tables for configuration files written by other libraries (a model's config.json, a PEFT
 * adapter_config.json): every field the engine knows, and what it does with each, so that a setting that
 * would change the math is either implemented or refused by name, never silently ignored.
 */
import { brief, JsonNumber, type StrictJson } from './strict-json.js';

/**
 * How the engine treats one field:
 * - 'read': parsed into what the engine builds;
 * - 'inert': it does not change what the model computes or how it trains (ids, names, versions,
 *   generation defaults, heads for other tasks, settings of other runtimes);
 * - `{ supported, ok }`: it changes the math, and only the values `ok` accepts are implemented; any other
 *   value is refused with an error naming the field and the value;
 * - `{ warning }`: the engine departs from the other library in a way it states (a warning, not an
 *   error): `warning(value)` returns the message, or null when the value needs none.
 */
export type FieldRule<V = unknown> = 'read' | 'inert' | { supported: string; ok: (v: V) => boolean } | { warning: (v: V) => string | null };

export type FieldTable<V = unknown> = Readonly<Record<string, FieldRule<V>>>;

export interface FieldCheck {
  /** The file, for messages ('config.json'). */
  file: string;
  /** Who defines the fields, for the message about an unknown one ("transformers 5.18's LlamaForCausalLM"). */
  definedBy: string;
  /** The error for a value the engine does not implement. */
  refuse(field: string, value: unknown, supported: string): Error;
}

/**
 * Checks every field against the table: throws for a value the engine does not implement, and returns
 * the warnings to show, with the fields it has never heard of among them.
 */
export function checkFields<V>(fields: Iterable<[string, V]>, table: FieldTable<V>, o: FieldCheck): string[] {
  const warnings: string[] = [];
  for (const [key, value] of fields) {
    const rule = Object.hasOwn(table, key) ? table[key] : undefined;
    if (rule === undefined) {
      warnings.push(`${o.file} field '${brief(key)}' is unknown to this engine and ignored (${o.definedBy} has no such field)`);
    } else if (rule === 'read' || rule === 'inert') {
      continue;
    } else if ('supported' in rule) {
      if (!rule.ok(value)) throw o.refuse(key, value, rule.supported);
    } else {
      const message = rule.warning(value);
      if (message) warnings.push(`${o.file} ${key}: ${message}`);
    }
  }
  return warnings;
}

/** Unset in PEFT's sense: absent, null, false, an empty list or object (a strictly parsed value). */
export const unset = (v: StrictJson | undefined) => v === undefined || v === null || v === false || (v instanceof Map && v.size === 0) || (Array.isArray(v) && v.length === 0);

/** A strictly parsed value for a message: strings quoted, numbers as written, containers by kind. */
export function describeJson(v: StrictJson | undefined): string {
  if (v === undefined) return 'nothing';
  if (v instanceof JsonNumber) return v.text;
  if (typeof v === 'string') return `'${brief(v, 40)}'`;
  if (v instanceof Map) return 'an object';
  if (Array.isArray(v)) return `a list of ${v.length}`;
  return String(v);
}
