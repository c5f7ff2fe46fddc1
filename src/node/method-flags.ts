/**
 * The method flags, made from the registry: `--method`, every option field of every method as a flag
 * (its help says which methods take it), and the 4-bit base. Reading them checks each value, that each
 * given flag belongs to the chosen method, and that the base fits it, all before anything loads.
 */
import { FieldValueError, parseField, unmetCondition, shownDefault, withOption, type FileField, type OptionField } from '../methods/fields.js';
import { allMethodFields, DEFAULT_METHOD, methodDefinition, methodNames, quantizableMethods, quantizedBaseConflict, type MethodName } from '../methods/registry.js';
import { QUANT_FORMATS, type QuantizeOption } from '../model/quantized-weights.js';
import { PRECISIONS, type Precision } from '../model/causal-lm.js';
import type { DatasetFile } from '../data/records.js';
import { choiceFlag, UsageError, type Flag, type FlagTable, type FlagValues } from './flags.js';
import { fileBytes, type OpenedModel } from './setup.js';

/** What a field's flag takes, as help shows it. */
function placeholder(field: OptionField): string {
  if (field.kind === 'choice') return field.choices.join('|');
  return { list: 'LIST', file: 'FILE', integer: 'N', number: 'X', boolean: '' }[field.kind];
}

/** A field as a flag. No default is applied by the parser: an absent option takes the method's own. */
export function fieldFlag(field: OptionField, methods: readonly string[] = []): Flag {
  const which = methods.length && methods.length < methodNames().length ? ` [${methods.join(', ')}]` : '';
  if (field.kind === 'boolean') return { type: 'boolean', help: `${field.help}${which}` };
  return { type: 'string', value: placeholder(field), shownDefault: shownDefault(field), help: `${field.help}${which}` };
}

/** `--method`, each method's fields and the 4-bit base, as flags (built when asked: a registered method is in). */
export function methodFlagTable(): FlagTable {
  const table: FlagTable = {
    method: { type: 'string', value: methodNames().join('|'), default: DEFAULT_METHOD, help: 'what trains (each method\'s flags are marked with the methods that take them)' },
  };
  for (const { field, methods } of allMethodFields()) table[field.name] = fieldFlag(field, methods);
  table.quantize = { type: 'string', value: QUANT_FORMATS.join('|'), help: `store the frozen base 4-bit (QLoRA) [${quantizableMethods().join(', ')}]` };
  table['double-quant'] = { type: 'boolean', help: 'nf4: store the absmax 8-bit too' };
  table.precision = { type: 'string', value: PRECISIONS.join('|'), default: 'f32', help: "'mixed': f16 operands in every linear product, f32 master weights and gradients (needs shader-f16)" };
  return table;
}

/** The method flags, checked: the method, its options (files read, not yet parsed) and the base's format. */
export interface MethodFlags {
  method: MethodName;
  /** The options the flags give, at their fields' paths; absent ones take the method's defaults. */
  options: Record<string, unknown>;
  /** File fields given (a sparse mask): parsed against the model once it is open. */
  files: { field: FileField; file: DatasetFile }[];
  quantize?: QuantizeOption;
  precision: Precision;
}

/** A field's value from its flag, a usage error naming the flag when it is not one it takes. */
export function readFieldFlag(field: Exclude<OptionField, FileField>, values: FlagValues): unknown {
  try {
    return parseField(field, String(values[field.name]));
  } catch (e) {
    if (e instanceof FieldValueError) throw new UsageError(`--${e.message}`);
    throw e;
  }
}

export async function readMethodFlags(values: FlagValues): Promise<MethodFlags> {
  const method = choiceFlag(values, 'method', methodNames());
  const definition = methodDefinition(method);
  const own = new Set(definition.fields.map((f) => f.name));
  for (const { field, methods } of allMethodFields()) {
    if (values[field.name] !== undefined && !own.has(field.name)) throw new UsageError(`--${field.name} applies to ${methods.length > 1 ? `the methods ${methods.join(', ')}` : `--method ${methods[0]}`}, not '${method}'`);
  }
  let options: Record<string, unknown> = {};
  const files: MethodFlags['files'] = [];
  for (const field of definition.fields) {
    if (values[field.name] === undefined) continue;
    const when = unmetCondition(field, definition.fields, (name) => (values[name] === undefined ? undefined : String(values[name])));
    if (when) throw new UsageError(`--${field.name} applies to --${when.field} ${when.is.join(' or ')}`);
    const decided = (field.decides ?? []).find((other) => values[other] !== undefined);
    if (decided) throw new UsageError(`--${field.name} decides --${decided}: give one of them`);
    if (field.kind === 'file') files.push({ field, file: { ...(await fileBytes(String(values[field.name]), field.name)), name: String(values[field.name]) } });
    else options = withOption(options, field.path, readFieldFlag(field, values));
  }
  if (values['double-quant'] && values.quantize !== 'nf4') throw new UsageError('--double-quant quantizes the absmax of NF4: use it with --quantize nf4');
  let quantize: QuantizeOption | undefined;
  if (values.quantize !== undefined) {
    const format = choiceFlag(values, 'quantize', QUANT_FORMATS);
    const conflict = quantizedBaseConflict(definition, options);
    if (conflict) throw new UsageError(`--quantize makes the frozen base 4-bit, and ${conflict}: use --method ${quantizableMethods().join(' or ')}`);
    quantize = values['double-quant'] ? { format, doubleQuant: true } : format;
  }
  const precision = choiceFlag(values, 'precision', PRECISIONS);
  if (precision === 'mixed' && quantize) throw new UsageError('--precision mixed makes the linear products read f16 operands, and a --quantize base is read by its own f32 products: give one of them');
  return { method, options, files, quantize, precision };
}

/** The method's options for the opened model: files parsed against it, the options checked against its layers. */
export async function methodFromFlags(flags: MethodFlags, m: OpenedModel): Promise<Record<string, unknown>> {
  let options = flags.options;
  for (const { field, file } of flags.files) options = withOption(options, field.path, await field.load(file, m.ckpt.config));
  methodDefinition(flags.method).check(m.ckpt.config, options as never); // a bad rank or target fails before any weight loads
  return options;
}
