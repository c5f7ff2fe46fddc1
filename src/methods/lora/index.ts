/** LoRA as a registered method: options in ./config.ts, the adapter and its layer hooks in ./layer.ts. */
import type { MethodDefinition } from '../method.js';
import { LORA_FIELDS, loraModules, type LoraOptions } from './config.js';
import { Lora } from './layer.js';
import { peftAdapterFiles } from './peft.js';

export const lora: MethodDefinition<LoraOptions> = {
  name: 'lora',
  summary: 'low-rank adapters on chosen linear layers; the base stays frozen (PEFT-compatible)',
  fields: LORA_FIELDS,
  // QLoRA's and most recipes' rate for adapters: about 10x full fine-tuning's.
  learningRate: 2e-4,
  check: (config, options) => void loraModules(config, options),
  baseTrainable: () => () => false,
  attach: (model, options) => new Lora(model.gpu, model.config, options ?? {}, (name) => model.f32Param(name)),
  exportFiles: (method, _config, o) => peftAdapterFiles(method as Lora, o),
};

export { Lora, loraModules, type LoraOptions };
export { defaultLoraAlpha, LORA_DEFAULT_RANK, LORA_DEFAULT_TARGETS, LORA_FIELDS } from './config.js';
export { peftAdapterFiles, readPeftAdapter, type PeftAdapter } from './peft.js';
