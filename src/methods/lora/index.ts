/** LoRA as a registered method: options in ./config.ts, the adapter and its layer hooks in ./layer.ts. */
import type { MethodDefinition } from '../method.js';
import { LORA_FIELDS, loraModules, type LoraOptions } from './config.js';
import { Lora, loraBase, type LoraBase } from './layer.js';
import { initMutatesBase } from './init.js';
import { peftAdapterFiles } from './peft.js';

export const lora: MethodDefinition<LoraOptions> = {
  name: 'lora',
  summary: 'low-rank adapters on chosen linear layers; the base stays frozen (PEFT-compatible)',
  fields: LORA_FIELDS,
  // QLoRA's and most recipes' rate for adapters: about 10x full fine-tuning's.
  learningRate: 2e-4,
  check: (config, options) => void loraModules(config, options),
  baseTrainable: () => () => false,
  // PiSSA and OLoRA replace the base weight by the residual W - s B0 A0.
  writesBase: (options) => initMutatesBase(options?.init),
  attach: (model, options) => new Lora(model.gpu, model.config, options ?? {}, loraBase(model)),
  exportFiles: (method, _config, o) => peftAdapterFiles(method as Lora, o),
};

export { Lora, loraBase, loraModules, type LoraOptions, type LoraBase };
export { defaultLoraAlpha, LORA_DEFAULT_RANK, LORA_DEFAULT_TARGETS, LORA_FIELDS } from './config.js';
export { peftAdapterFiles, readPeftAdapter, type PeftAdapter } from './peft.js';
