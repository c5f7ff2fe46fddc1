/**
 * Every fine-tuning method, by name: what FineTuner, the command line, the benchmarks and the demo
 * offer. A new method is a folder beside these and one line here.
 */
import { ShapeError } from '../errors.js';
import { full } from './full/index.js';
import { lora } from './lora/index.js';
import { sparse } from './sparse/index.js';
import { sparseLora } from './sparse-lora/index.js';
import type { MethodDefinition } from './method.js';

export const METHODS = {
  full,
  lora,
  sparse,
  'sparse+lora': sparseLora,
} as const;

export type MethodName = keyof typeof METHODS;

/** Each method's options under its own name: `{ method: 'lora', lora: { rank: 16 } }`. */
export type MethodOptions = {
  [K in MethodName]?: (typeof METHODS)[K] extends MethodDefinition<infer O> ? O : never;
};

export function methodNames(): MethodName[] {
  return Object.keys(METHODS) as MethodName[];
}

/** The definition of a method by name; a typed error lists the known ones. */
export function methodDefinition(name: string): MethodDefinition {
  if (!Object.hasOwn(METHODS, name)) throw new ShapeError(`unknown fine-tuning method '${String(name).slice(0, 40)}' (${methodNames().join(', ')})`);
  return METHODS[name as MethodName] as MethodDefinition;
}
