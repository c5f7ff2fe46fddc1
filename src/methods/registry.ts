/**
 * Every fine-tuning method, by name: what FineTuner, the Trainer, the command line, the sessions, the
 * benchmarks and the demo offer, each reading a method's definition (its option fields, defaults,
 * preparation, formats) and naming none. A new method is a folder beside these and one line here, or,
 * from outside the package, one registerMethod call.
 */
import { ShapeError } from '../errors.js';
import { full } from './full/index.js';
import { lora } from './lora/index.js';
import { sparse } from './sparse/index.js';
import { sparseLora } from './sparse-lora/index.js';
import { zo } from './zo/index.js';
import { lisa } from './lisa/index.js';
import { galore } from './galore/index.js';
import type { MethodDefinition } from './method.js';
import type { OptionField } from './fields.js';

export const METHODS = {
  full,
  lora,
  sparse,
  'sparse+lora': sparseLora,
  zo,
  lisa,
  galore,
} as const;

/** A built-in method's name (typed options); methods registered later are named by any string. */
export type MethodName = keyof typeof METHODS;

/** The method a run uses when none is named: LoRA, the one that fits the most models in the least memory. */
export const DEFAULT_METHOD: MethodName = 'lora';

/** Each method's options under its own name: `{ method: 'lora', lora: { rank: 16 } }`. */
export type MethodOptions = {
  [K in MethodName]?: (typeof METHODS)[K] extends MethodDefinition<infer O> ? O : never;
};

const registry = new Map<string, MethodDefinition>(Object.entries(METHODS) as [string, MethodDefinition][]);

/**
 * Adds a method (a plugin's, a test's) beside the built-in ones: from then on FineTuner, the Trainer, the
 * command line's flags and help, and the demo's form offer it. Its options go under its name.
 */
export function registerMethod(definition: MethodDefinition<any>): void {
  const name = definition.name;
  if (!/^[a-z][a-z0-9+-]{0,39}$/.test(name)) throw new ShapeError(`a method's name is 1-40 lower-case letters, digits, '+' or '-', starting with a letter; got '${String(name).slice(0, 40)}'`);
  if (registry.has(name)) throw new ShapeError(`a method named '${name}' is registered already`);
  registry.set(name, definition as MethodDefinition);
}

export function methodNames(): MethodName[] {
  return [...registry.keys()] as MethodName[];
}

/** The definition of a method by name; a typed error lists the known ones. */
export function methodDefinition(name: string): MethodDefinition {
  const definition = registry.get(name);
  if (!definition) throw new ShapeError(`unknown fine-tuning method '${String(name).slice(0, 40)}' (${methodNames().join(', ')})`);
  return definition;
}

/** Every option field any method has, once per name, with the methods that take it (in registry order). */
export function allMethodFields(): { field: OptionField; methods: string[] }[] {
  const byName = new Map<string, { field: OptionField; methods: string[] }>();
  for (const [name, definition] of registry) {
    for (const field of definition.fields) {
      const entry = byName.get(field.name) ?? { field, methods: [] };
      entry.methods.push(name);
      byName.set(field.name, entry);
    }
  }
  return [...byName.values()];
}

/**
 * Why a method with these options cannot train over a 4-bit base (QLoRA's frozen NF4 or int4 weights),
 * or null when it can. `linearWeights`: the model's linear weights by engine name; before a model is
 * open, one stands for them all.
 */
export function quantizedBaseConflict(definition: MethodDefinition, options: unknown, linearWeights: readonly string[] = ['layers.0.q.weight']): string | null {
  const writes = typeof definition.writesBase === 'function' ? definition.writesBase(options as never) : definition.writesBase;
  if (writes) return `'${definition.name}' trains inside the base weights, which a 4-bit base cannot hold`;
  const trainable = definition.baseTrainable(options as never);
  if (linearWeights.every((w) => trainable(w))) return `'${definition.name}' trains every linear weight, which a 4-bit base keeps frozen`;
  return null;
}

/** The peak learning rate a method takes with these options when none is given. */
export function methodLearningRate<O>(definition: MethodDefinition<O>, options?: O): number {
  return typeof definition.learningRate === 'function' ? definition.learningRate(options) : definition.learningRate;
}

/** The methods that can train over a 4-bit base (with their default options). */
export function quantizableMethods(): string[] {
  return methodNames().filter((n) => quantizedBaseConflict(methodDefinition(n), undefined) === null);
}
