/**
 * The demo's method section, made from the registry: the method list with each method's summary, a form
 * field for every option field (shown for the methods that take it, starting at its default), and the
 * 4-bit base for the methods that can have one. The page names no method.
 */
import {
  allMethodFields, DEFAULT_METHOD, FieldValueError, fieldApplies, methodDefinition, methodNames, optionAt, parseField, quantizableMethods, shownDefault, withOption,
  type OptionField,
} from '../src/index.js';

type FormField = Exclude<OptionField, { kind: 'file' }>;

const label = (name: string) => name[0].toUpperCase() + name.slice(1).replace(/-/g, ' ');

/** The fields the page shows: a file field is the command line's. */
const inForm = (field: OptionField): field is FormField => field.kind !== 'file' && !field.commandLineOnly;

/** Fills the method list and adds the fields to `container`; `quantize` is the 4-bit base's label. */
export function buildMethodForm(methodSelect: HTMLSelectElement, container: HTMLElement, quantize: HTMLElement): void {
  for (const name of methodNames()) methodSelect.add(new Option(`${name}: ${methodDefinition(name).summary}`, name, name === DEFAULT_METHOD, name === DEFAULT_METHOD));
  for (const { field, methods } of allMethodFields()) {
    if (!inForm(field)) continue;
    const wrapper = document.createElement('label');
    wrapper.setAttribute('data-method', methods.join(' '));
    wrapper.title = field.help;
    wrapper.append(`${label(field.name)} `);
    wrapper.append(control(field));
    container.append(wrapper);
  }
  quantize.setAttribute('data-method', quantizableMethods().join(' '));
}

function control(field: FormField): HTMLInputElement | HTMLSelectElement {
  const shown = shownDefault(field);
  if (field.kind === 'choice' || field.kind === 'boolean') {
    const el = document.createElement('select');
    for (const c of field.kind === 'choice' ? field.choices : [false, true]) el.add(new Option(String(c), String(c), String(c) === shown, String(c) === shown));
    el.id = field.name;
    return el;
  }
  const el = document.createElement('input');
  el.id = field.name;
  el.spellcheck = false;
  if (field.kind === 'list') el.type = 'text';
  else {
    el.type = 'number';
    el.step = 'any';
    if (field.min !== undefined) el.min = String(field.min);
    if (field.max !== undefined) el.max = String(field.max);
  }
  if (field.default !== undefined) el.value = shown ?? '';
  else if (shown) el.placeholder = shown; // a derived default ('2 x rank'): empty means the method's
  return el;
}

/** The chosen method's options from its fields; an empty field takes the method's default. */
export function readMethodForm(method: string): Record<string, unknown> {
  let options: Record<string, unknown> = {};
  const fields = methodDefinition(method).fields;
  const textOf = (name: string) => (document.getElementById(name) as HTMLInputElement | HTMLSelectElement | null)?.value;
  for (const field of fields.filter(inForm)) {
    // A field that does not apply under the method's other choices (LoRA's rank when ZO trains the full model).
    if (!fieldApplies(field, fields, textOf)) continue;
    const text = textOf(field.name)!;
    if (text.trim() === '') continue;
    try {
      options = withOption(options, field.path, parseField(field, text));
    } catch (e) {
      if (e instanceof FieldValueError) throw new Error(e.message);
      throw e;
    }
  }
  return options;
}

/** Shows a saved run's options in the method's fields, so what is shown is what trains. */
export function showMethodOptions(method: string, options: unknown): void {
  for (const field of methodDefinition(method).fields.filter(inForm)) {
    const v = optionAt(options, field.path);
    const el = document.getElementById(field.name) as HTMLInputElement | HTMLSelectElement;
    el.value = v === undefined ? (field.default !== undefined ? shownDefault(field) ?? '' : '') : Array.isArray(v) ? v.join(',') : String(v);
  }
}
