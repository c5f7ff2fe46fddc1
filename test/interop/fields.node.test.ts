/**
 * Every field of the installed libraries' config classes (listed by scripts/reference/make_fixtures.py
 * into fields.json) is known to the engine: read, inert, refused unless set to what is implemented, or
 * reported. A release that adds a field fails this test when the fixtures are regenerated
 * (`npm run test:reference`), until the field is classified.
 */
import { describe, expect, it } from 'vitest';
import { LORA_CONFIG_FIELDS } from '../../src/methods/lora/peft-config.js';
import { SHIRA_CONFIG_FIELDS } from '../../src/methods/sparse/interchange.js';
import { SUPERTUNING_CONFIG_FIELDS } from '../../src/methods/sparse/supertuning.js';
import { FAMILIES } from '../../src/model/families/index.js';
import { ROPE_PARAMETER_KEYS } from '../../src/model/hf-config.js';
import { readJson } from './fixtures.js';

interface Fields {
  transformers: string;
  transformers4: string;
  peft: string;
  config: Record<string, string[]>;
  config4: Record<string, string[]>;
  rope_parameters: string[];
  LoraConfig: string[];
  ShiraConfig: string[];
}

const fields = readJson<Fields>('fields.json');
const unclassified = (names: string[], table: object) => names.filter((n) => !Object.hasOwn(table, n));

describe('config fields of the reference libraries', () => {
  it.each(FAMILIES.map((f) => [f.modelType, f] as const))('%s: every field transformers 5 and 4 define is classified', (type, family) => {
    expect(fields.config[type], `no ${type} fields in fields.json`).toBeDefined();
    expect(unclassified(fields.config[type], family.fields), `transformers ${fields.transformers}`).toEqual([]);
    expect(unclassified(fields.config4[type], family.fields), `transformers ${fields.transformers4}`).toEqual([]);
    // Written by transformers 4 before 4.56 renamed it to dtype.
    expect(family.fields.torch_dtype).toBe('read');
  });

  it('every RoPE parameter transformers defines is known', () => {
    expect([...ROPE_PARAMETER_KEYS].sort()).toEqual(fields.rope_parameters);
  });

  it("every field of PEFT's LoraConfig and ShiraConfig is classified", () => {
    expect(unclassified(fields.LoraConfig, LORA_CONFIG_FIELDS), `peft ${fields.peft}`).toEqual([]);
    expect(unclassified(fields.ShiraConfig, SHIRA_CONFIG_FIELDS), `peft ${fields.peft}`).toEqual([]);
    // Super-Tuning's, from PEFT's main branch (scripts/reference/make_supertuning_fixtures.py).
    const supertuning = readJson<{ peft: string; SupertuningConfig: string[] }>('supertuning-fields.json');
    expect(unclassified(supertuning.SupertuningConfig, SUPERTUNING_CONFIG_FIELDS), `peft ${supertuning.peft}`).toEqual([]);
  });
});
