/** The tiny models the project ships in public/models/ (regenerate with `npm run make:models`). */
import type { TinyModelOptions } from './tiny.js';

export const SHIPPED_MODELS: Record<string, TinyModelOptions> = {
  'tiny-llama': { architecture: 'llama', seed: 42, hiddenSize: 64, intermediateSize: 172, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositions: 128 },
  'tiny-gpt2': { architecture: 'gpt2', seed: 43, hiddenSize: 64, numLayers: 2, numHeads: 4, maxPositions: 128 },
};
