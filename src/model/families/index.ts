/** The families whose configs the engine reads, by the architecture name config.json gives. */
import type { ModelConfig } from '../config.js';
import type { FamilyConfig } from './family.js';
import { gemma2 } from './gemma2.js';
import { gemma3 } from './gemma3.js';
import { gpt2 } from './gpt2.js';
import { llama } from './llama.js';
import { phi3 } from './phi3.js';
import { mistral } from './mistral.js';
import { qwen2 } from './qwen2.js';
import { qwen3 } from './qwen3.js';

export type { DecoderOps, FamilyConfig, FamilyParts } from './family.js';

export const FAMILIES: readonly FamilyConfig[] = [llama, qwen2, qwen3, mistral, gemma2, gemma3, phi3, gpt2];

/** The family module of a parsed config. */
export function familyOf(config: Pick<ModelConfig, 'architecture'>): FamilyConfig {
  const family = FAMILIES.find((f) => f.architecture === config.architecture);
  if (!family) throw new Error(`no family module for ${config.architecture}`);
  return family;
}
