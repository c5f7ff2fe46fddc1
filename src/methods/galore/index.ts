/**
 * GaLore (Zhao et al. 2024) as a registered method: full-parameter training whose Adam state for each
 * projected linear weight lives in a rank-r projection of its gradient (./optimizer.ts; options in
 * ./config.ts). The weights train directly, as in full fine-tuning; nothing hooks the layers. Gradients are
 * kept whole for every weight until the step, as full fine-tuning keeps them (galore_torch's layer-wise
 * mode updates each weight during the backward pass instead, which excludes gradient accumulation).
 */
import type { CausalLM } from '../../model/causal-lm.js';
import type { AdamWConfig, Optimizer } from '../../optim/adamw.js';
import { FullFineTuning } from '../full/index.js';
import type { MethodDefinition } from '../method.js';
import { GALORE_FIELDS, galoreWeights, type GaloreOptions } from './config.js';
import { GaloreAdamW } from './optimizer.js';

/** Full fine-tuning's parameters and gradients, with GaLore's AdamW as the update. */
class Galore extends FullFineTuning {
  override readonly name = 'galore';

  constructor(
    model: CausalLM,
    private readonly options: GaloreOptions,
  ) {
    super(model);
  }

  override createOptimizer(config: AdamWConfig): Optimizer {
    return new GaloreAdamW(this.model.gpu, this.model, galoreWeights(this.model.config, this.options), this.options, config);
  }
}

export const galore: MethodDefinition<GaloreOptions> = {
  name: 'galore',
  summary: 'every weight trains, with Adam\'s state in a low-rank projection of each linear weight\'s gradient',
  fields: GALORE_FIELDS,
  // Full fine-tuning's rate: it updates the model's own weights (the projected update is scaled by α).
  learningRate: 2e-5,
  check: (config, options) => void galoreWeights(config, options),
  baseTrainable: () => () => true,
  attach: (model, options) => new Galore(model, options ?? {}),
};

export { GaloreAdamW, GALORE_FIELDS, type GaloreOptions };
