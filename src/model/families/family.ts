/** A model family's config: its architecture name, the fields its transformers config class has, its parser. */
import type { ModelConfig } from '../config.js';
import type { FieldTable } from '../hf-config.js';
import type { Json } from '../hf-config.js';

/** What a family's parser decides of a ModelConfig: everything but what every family reads the same way. */
export type FamilyPart = Omit<ModelConfig, 'architecture' | 'raw' | 'bosTokenId' | 'eosTokenIds' | 'quantization' | 'warnings'>;

export interface FamilyConfig {
  readonly architecture: ModelConfig['architecture'];
  /** The model_type transformers gives the family. */
  readonly modelType: string;
  /** Every field of the family's transformers config class (4.x and 5.x) and how the engine treats it. */
  readonly fields: FieldTable;
  /** The family's part of ModelConfig; notes where the engine departs from transformers go to `warnings`. */
  parse(raw: Json, warnings: string[]): FamilyPart;
}
