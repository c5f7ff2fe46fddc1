/**
 * The reference fixtures PyTorch, transformers and PEFT wrote (scripts/reference/make_fixtures.py), read
 * from test/fixtures/reference/ for the interop tests.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { bytesSource } from '../../src/io/bytes.js';
import { readHeader, readTensorF32 } from '../../src/io/safetensors.js';
import { memorySource, type ModelSource } from '../../src/io/sources.js';

export const REFERENCE = join(import.meta.dirname, '..', 'fixtures', 'reference');

export const read = (...path: string[]) => new Uint8Array(readFileSync(join(REFERENCE, ...path)));
export const readText = (...path: string[]) => readFileSync(join(REFERENCE, ...path), 'utf8');
export const readJson = <T = Record<string, unknown>>(...path: string[]) => JSON.parse(readText(...path)) as T;
export const list = (...path: string[]) => readdirSync(join(REFERENCE, ...path)).sort();

/** The config layouts each model case has: transformers 5's and the 4.x one. */
export const LAYOUTS = { 'transformers 5': 'config.json', 'transformers 4': 'config.transformers4.json' } as const;

export interface ModelCase {
  name: string;
  ids: number[][];
  family: string;
  /** How far transformers' logits move with each feature switched off. */
  features: Record<string, number>;
}

export function modelCase(name: string): ModelCase {
  return { name, ...readJson<Omit<ModelCase, 'name'>>('models', name, 'expected.json') };
}

/** A model case's checkpoint with the config of one layout. */
export function modelSource(name: string, configFile: string = LAYOUTS['transformers 5']): ModelSource {
  return memorySource({ 'config.json': readText('models', name, configFile), 'model.safetensors': read('models', name, 'model.safetensors') });
}

/** The logits a fixture holds, [B * S * vocab]. */
export async function logitsOf(...path: string[]): Promise<Float32Array> {
  const source = bytesSource(path.join('/'), read(...path));
  const header = await readHeader(source);
  return readTensorF32(source, header.byName.get('logits')!);
}

export const batchOf = (ids: number[][]) => ({ ids: ids.flat(), B: ids.length, S: ids[0].length });
