/** The tiny models the project ships in public/models/ (regenerate with `npm run make:models`). */
import { folderSource, urlSource, type ModelSource } from '../io/sources.js';
import type { TinyModelOptions } from './tiny.js';

/** Seeded random-init models: the fixtures of tests and benchmarks. */
export const SHIPPED_MODELS: Record<string, TinyModelOptions> = {
  'tiny-llama': { architecture: 'llama', seed: 42, hiddenSize: 64, intermediateSize: 172, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositions: 128 },
  'tiny-gpt2': { architecture: 'gpt2', seed: 43, hiddenSize: 64, numLayers: 2, numHeads: 4, maxPositions: 128 },
  // The structure of each newer family's real configs, scaled down: Llama 3.2's tied embeddings and
  // llama3 RoPE scaling; Qwen3's q/k norms and explicit head_dim; Gemma 2's soft caps and alternating
  // windows; Gemma 3's q/k norms, local RoPE base and a window on all but every other layer; Phi-4-mini's
  // fused qkv_proj and gate_up_proj (with GQA), 3/4 of each head rotating, LongRoPE and tied embeddings.
  'tiny-llama3': {
    architecture: 'llama', seed: 44, hiddenSize: 64, intermediateSize: 172, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositions: 128, tieWordEmbeddings: true,
    ropeTheta: 500000, ropeScaling: { rope_type: 'llama3', factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 32 },
  },
  'tiny-qwen3': { architecture: 'qwen3', seed: 45, hiddenSize: 64, intermediateSize: 172, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 32, maxPositions: 128, tieWordEmbeddings: true, ropeTheta: 1e6 },
  'tiny-gemma2': { architecture: 'gemma2', seed: 46, hiddenSize: 64, intermediateSize: 172, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16, maxPositions: 128, slidingWindow: 32 },
  'tiny-phi3': {
    architecture: 'phi3', seed: 48, hiddenSize: 64, intermediateSize: 172, numLayers: 2, numHeads: 4, numKvHeads: 2, maxPositions: 128, slidingWindow: 127, tieWordEmbeddings: true,
    partialRotaryFactor: 0.75, originalMaxPositions: 64,
    ropeScaling: { type: 'longrope', short_factor: [1, 1.1, 1.3, 1.8, 2.6, 4], long_factor: [1, 1.4, 2.5, 4.8, 9, 17] },
  },
  'tiny-gemma3': { architecture: 'gemma3', seed: 47, hiddenSize: 64, intermediateSize: 172, numLayers: 2, numHeads: 4, numKvHeads: 1, headDim: 16, maxPositions: 128, slidingWindow: 32, slidingWindowPattern: 2 },
};

/**
 * The pretrained base: a Llama pre-trained by scripts/pretrain-tiny-base.ts on the synthetic skills
 * corpus (src/data/skills.ts) from this random init; the default model of the main job and the demo.
 */
export const PRETRAINED_BASE = {
  name: 'tiny-llama-skills',
  init: { architecture: 'llama', seed: 7, hiddenSize: 96, intermediateSize: 256, numLayers: 3, numHeads: 4, numKvHeads: 2, maxPositions: 128 } satisfies TinyModelOptions,
};

/** The sample datasets the project ships in public/datasets/ (regenerate with `npm run make:datasets`). */
export const SHIPPED_DATASETS = ['next-letter.jsonl', 'next-letter-chat.jsonl', 'next-letter.txt'] as const;

/**
 * Where the package's shipped files are: public/ beside dist/ (or src/). Resolved from this module's own
 * URL, so it is a file: URL in Node and the package's URL where the package is served as files (a CDN,
 * a dev server of unbundled modules). A bundled app copies public/models and public/datasets into what it
 * serves and passes that URL as `base` instead. The path is a variable, not a literal, so bundlers leave it be.
 */
function shippedUrl(path: string, base?: string | URL): URL {
  if (base !== undefined) return new URL(path.replace(/^(models|datasets)\//, ''), new URL(String(base).replace(/\/*$/, '/'), globalThis.location?.href));
  const fromPackage = `../../public/${path}`;
  return new URL(fromPackage, import.meta.url);
}

/** The URL of a shipped model's folder (default: the pretrained base), ending in '/'. */
export function shippedModelUrl(name: string = PRETRAINED_BASE.name, o: { base?: string | URL } = {}): URL {
  if (!(name === PRETRAINED_BASE.name || Object.hasOwn(SHIPPED_MODELS, name))) {
    throw new RangeError(`no shipped model '${name}': the shipped models are ${[PRETRAINED_BASE.name, ...Object.keys(SHIPPED_MODELS)].join(', ')}`);
  }
  return shippedUrl(`models/${name}/`, o.base);
}

/** The URL of a shipped sample dataset (default: next-letter.jsonl). */
export function shippedDatasetUrl(name: (typeof SHIPPED_DATASETS)[number] = 'next-letter.jsonl', o: { base?: string | URL } = {}): URL {
  if (!SHIPPED_DATASETS.includes(name)) throw new RangeError(`no shipped dataset '${name}': the shipped datasets are ${SHIPPED_DATASETS.join(', ')}`);
  return shippedUrl(`datasets/${name}`, o.base);
}

/** A file: URL as a local path (a drive letter's leading slash dropped on Windows). */
export function fileUrlPath(url: URL): string {
  const path = decodeURIComponent(url.pathname);
  return /^\/[A-Za-z]:\//.test(path) ? path.slice(1) : path;
}

/**
 * A shipped model as a source: `await FineTuner.fromPretrained(shippedModel(), { method: 'lora' })`.
 * In Node it is the package's folder; elsewhere the files at shippedModelUrl(name, o).
 */
export function shippedModel(name: string = PRETRAINED_BASE.name, o: { base?: string | URL } = {}): ModelSource {
  const url = shippedModelUrl(name, o);
  return url.protocol === 'file:' ? folderSource(fileUrlPath(url).replace(/\/$/, '')) : urlSource(url.href);
}
