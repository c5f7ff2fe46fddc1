/** The tiny models the project ships in public/models/ (regenerate with `npm run make:models`). */
import type { TinyModelOptions } from './tiny.js';

/** Seeded random-init models: the fixtures of tests and benchmarks. */
export const SHIPPED_MODELS: Record<string, TinyModelOptions> = {
  'tiny-llama': { architecture: 'llama', seed: 42, hiddenSize: 64, intermediateSize: 172, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositions: 128 },
  'tiny-gpt2': { architecture: 'gpt2', seed: 43, hiddenSize: 64, numLayers: 2, numHeads: 4, maxPositions: 128 },
};

/**
 * The pretrained base: a Llama pre-trained by scripts/pretrain-tiny-base.ts on the synthetic skills
 * corpus (src/data/skills.ts) from this random init; the default model of the main job and the demo.
 */
export const PRETRAINED_BASE = {
  name: 'tiny-llama-skills',
  init: { architecture: 'llama', seed: 7, hiddenSize: 96, intermediateSize: 256, numLayers: 3, numHeads: 4, numKvHeads: 2, maxPositions: 128 } satisfies TinyModelOptions,
};
