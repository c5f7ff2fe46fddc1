/**
 * The options a method offers a user, described once: each field's name (the command line's flag and
 * the demo's form field), where its value goes in the method's options, its kind and bounds, its help,
 * and its default, the very value the method applies when the option is absent. The command line's
 * flags and their parsing, the demo's form and the help texts are all made from these.
 */
import type { ModelConfig } from '../model/config.js';

/** Another field of the method having one of some values. */
export interface FieldCondition {
  field: string;
  is: readonly (string | number)[];
}

interface FieldBase {
  /** The flag (`--rank`) and the demo's field id: lower case with dashes. */
  name: string;
  /** Where the value goes in the method's options: ['rank'], or ['lora', 'rank'] in a composed method. */
  path: readonly string[];
  help: string;
  /** How help and the demo show a default that is not a plain value ('2 x rank'). */
  shownDefault?: string;
  /** Left out of the demo's form (a file the page does not offer). */
  commandLineOnly?: boolean;
  /** Fields this one decides when given (a mask decides the density): giving both is refused. */
  decides?: readonly string[];
  /**
   * Applies only while other fields of the method have one of these values each (their defaults when not
   * given): zeroth-order's LoRA fields while it trains LoRA; PiSSA's iterations under init pissa. A form
   * leaves it out otherwise; a flag is refused.
   */
  appliesWhen?: readonly FieldCondition[];
}

export interface NumberField extends FieldBase {
  kind: 'number' | 'integer';
  default?: number;
  /** Inclusive bounds; `above` excludes its value (a density above 0). */
  min?: number;
  above?: number;
  max?: number;
}

export interface ChoiceField extends FieldBase {
  kind: 'choice';
  /** The values; numbers are written and parsed as their decimal text (block sizes 16, 32, 64). */
  choices: readonly (string | number)[];
  default?: string | number;
}

/** On or off: a bare flag (`--dora`) on the command line, true or false in a form. */
export interface BooleanField extends FieldBase {
  kind: 'boolean';
  default?: boolean;
}

export interface ListField extends FieldBase {
  kind: 'list';
  default?: readonly string[];
}

/** A file read before anything loads and parsed against the model once it is open (a saved sparse mask). */
export interface FileField extends FieldBase {
  kind: 'file';
  load(file: { name: string; bytes: Uint8Array }, config: ModelConfig): Promise<unknown>;
}

export type OptionField = NumberField | ChoiceField | BooleanField | ListField | FileField;

/** A value a field was given that it cannot take; the message names the field. */
export class FieldValueError extends Error {}

/** A field's default as text (help, flag tables, the demo's form), or undefined when it has none to show. */
export function shownDefault(field: OptionField): string | undefined {
  if (field.shownDefault !== undefined) return field.shownDefault;
  if (field.kind === 'file' || field.default === undefined) return undefined;
  return Array.isArray(field.default) ? field.default.join(',') : String(field.default);
}

/** Bounds of a number: `above` excludes its value (a density above 0), `min` and `max` include theirs. */
export interface NumberBounds {
  integer?: boolean;
  min?: number;
  above?: number;
  max?: number;
}

/** What a number within bounds is, in words: 'an integer >= 1 and <= 65536'. */
export function describeBounds(b: NumberBounds): string {
  const range = [b.min !== undefined ? `>= ${b.min}` : '', b.above !== undefined ? `> ${b.above}` : '', b.max !== undefined ? `<= ${b.max}` : ''].filter(Boolean).join(' and ');
  return `${b.integer ? 'an integer' : 'a number'}${range ? ` ${range}` : ''}`;
}

/** The number a text writes when it is finite, an integer where asked and within the bounds; else null. */
export function numberWithin(text: string, b: NumberBounds): number | null {
  const v = Number(text);
  const ok = text.trim() !== '' && Number.isFinite(v) && (!b.integer || Number.isInteger(v)) && v >= (b.min ?? -Infinity) && v > (b.above ?? -Infinity) && v <= (b.max ?? Infinity);
  return ok ? v : null;
}

/** A field's value from its text (a flag's or a form field's); a FieldValueError says what it takes. */
export function parseField(field: Exclude<OptionField, FileField>, text: string): number | string | boolean | string[] {
  if (field.kind === 'list') {
    const items = text.split(',').map((t) => t.trim()).filter(Boolean);
    if (!items.length) throw new FieldValueError(`${field.name} names nothing`);
    return items;
  }
  if (field.kind === 'boolean') {
    const t = text.trim();
    if (t !== 'true' && t !== 'false') throw new FieldValueError(`${field.name} must be true or false, got '${text}'`);
    return t === 'true';
  }
  if (field.kind === 'choice') {
    const choice = field.choices.find((c) => String(c) === text.trim());
    if (choice === undefined) throw new FieldValueError(`${field.name} must be one of ${field.choices.join(', ')}, got '${text}'`);
    return choice;
  }
  const bounds = { ...field, integer: field.kind === 'integer' };
  const v = numberWithin(text, bounds);
  if (v === null) throw new FieldValueError(`${field.name} must be ${describeBounds(bounds)}, got '${text}'`);
  return v;
}

/** `options` with `value` set at `path`, copying each object on the way (the caller's stays as it was). */
export function withOption(options: Record<string, unknown> | undefined, path: readonly string[], value: unknown): Record<string, unknown> {
  const [key, ...rest] = path;
  const out = { ...options };
  out[key] = rest.length ? withOption(out[key] as Record<string, unknown> | undefined, rest, value) : value;
  return out;
}

/** The value at `path` in options, or undefined. */
export function optionAt(options: unknown, path: readonly string[]): unknown {
  let v = options;
  for (const key of path) v = v && typeof v === 'object' ? (v as Record<string, unknown>)[key] : undefined;
  return v;
}

/**
 * The first of a field's conditions that the text of the method's fields does not meet (absent or empty:
 * the default), or null when it applies. `text(name)` reads a field's text, from a form or flags.
 */
export function unmetCondition(field: OptionField, fields: readonly OptionField[], text: (name: string) => string | undefined): FieldCondition | null {
  for (const condition of field.appliesWhen ?? []) {
    const on = fields.find((f) => f.name === condition.field);
    const given = text(condition.field)?.trim();
    const value = given ? given : on && on.kind !== 'file' && on.default !== undefined ? String(on.default) : undefined;
    if (!condition.is.some((v) => String(v) === value)) return condition;
  }
  return null;
}

/** Whether a field applies given the text of each of the method's fields (see unmetCondition). */
export function fieldApplies(field: OptionField, fields: readonly OptionField[], text: (name: string) => string | undefined): boolean {
  return unmetCondition(field, fields, text) === null;
}

/** A method's fields placed under a part of a composed method's options: `nested('lora', loraFields)`. */
export function nestedFields(part: string, fields: readonly OptionField[]): OptionField[] {
  return fields.map((f) => ({ ...f, path: [part, ...f.path] }));
}
