/** LoRA as a registered method: options in ./config.ts, the adapter and its layer hooks in ./layer.ts. */
import type { MethodDefinition } from '../method.js';
import { loraModules, type LoraOptions } from './config.js';
import { Lora } from './layer.js';
import { peftAdapterFiles } from './peft.js';

export const lora: MethodDefinition<LoraOptions> = {
  name: 'lora',
  summary: 'low-rank adapters on chosen linear layers; the base stays frozen (PEFT-compatible)',
  check: (config, options) => void loraModules(config, options),
  baseTrainable: () => () => false,
  attach: (model, options) => new Lora(model.gpu, model.config, options ?? {}, (name) => model.f32Param(name)),
  exportFiles: (method, _config, o) => peftAdapterFiles(method as Lora, o),
};

export { Lora, loraModules, type LoraOptions };
export { peftAdapterFiles, readPeftAdapter, type PeftAdapter } from './peft.js';
