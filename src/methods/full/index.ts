/**
 * Full fine-tuning: base parameters train directly (f32 masters, gradients in the model's arena, dense
 * AdamW). Nothing hooks the linear layers and nothing merges.
 */
import type { CommandRecorder } from '../../gpu/recorder.js';
import type { CausalLM } from '../../model/causal-lm.js';
import type { AdamWConfig, Optimizer, TrainableSet } from '../../optim/adamw.js';
import { checkOptionKeys, optionKeys } from '../../util/options.js';
import { denseAdamW, type Method, type MethodDefinition } from '../method.js';

export interface FullOptions {
  /** Which base parameters train, by engine name (e.g. freeze the embeddings). Default every one. */
  parameters?: (name: string) => boolean;
}

/** Base parameters training directly; a method that only brings another update rule extends it (GaLore). */
export class FullFineTuning implements Method {
  readonly name: string = 'full';
  readonly linear = null;
  readonly trainable: TrainableSet;

  constructor(protected readonly model: CausalLM) {
    if (!model.grads) throw new Error('full fine-tuning needs a model made with trainable parameters');
    this.trainable = { names: model.trainableNames, param: (n) => model.params.view(n), grads: model.grads };
  }

  createOptimizer(config: AdamWConfig): Optimizer {
    return denseAdamW(this.model.gpu, this.trainable, config);
  }

  zeroGrads(_rec: CommandRecorder): void {} // the base gradients are the model's, cleared by it

  interchangeName(): string | null {
    return null; // its tensors are base weights, named by the model's Hugging Face mappings
  }

  fromInterchangeName(): string | null {
    return null;
  }

  destroy(): void {}
}

export const full: MethodDefinition<FullOptions> = {
  name: 'full',
  summary: 'every weight trains (f32 masters, dense AdamW)',
  fields: [], // which parameters train is a function, set in code
  // The usual rate for full fine-tuning of a pretrained model (transformers' examples use 2e-5 to 5e-5).
  learningRate: 2e-5,
  check: (_config, options) => checkOptionKeys('full fine-tuning options', options, optionKeys<FullOptions>()(['parameters'])),
  baseTrainable: (options) => options?.parameters ?? (() => true),
  attach: (model) => new FullFineTuning(model),
};
