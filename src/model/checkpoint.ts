/**
 * Opening a Hugging Face checkpoint from any source: config.json, then model.safetensors or the shards
 * named by model.safetensors.index.json. Every header is validated and every required tensor located
 * and shape-checked before anything is allocated; weights then stream to the GPU one tensor at a time,
 * so peak host memory stays near the largest tensor.
 */
import type { Gpu } from '../gpu/gpu.js';
import type { ByteSource } from '../io/bytes.js';
import { InvalidModelFileError, readHeader, readTensorF32, type TensorInfo } from '../io/safetensors.js';
import { ModelSourceError, readJson, readText, type ModelSource } from '../io/sources.js';
import { parseConfig, type ModelConfig } from './config.js';
import { expectedWeights, resolveWeights } from './weights.js';

export interface TensorLocation {
  file: ByteSource;
  info: TensorInfo;
}

export interface Checkpoint {
  source: ModelSource;
  config: ModelConfig;
  /** Canonical HF name (as expectedWeights lists it) -> where the tensor lives. */
  tensors: Map<string, TensorLocation>;
  /** The safetensors files used. */
  files: string[];
}

export interface LoadProgress {
  /** Canonical tensor name just loaded. */
  tensor: string;
  loaded: number;
  total: number;
  bytesLoaded: number;
  bytesTotal: number;
}

const INDEX = 'model.safetensors.index.json';

export async function openCheckpoint(source: ModelSource): Promise<Checkpoint> {
  const configText = await readText(source, 'config.json');
  if (configText === null) throw new ModelSourceError(`${source.description} has no config.json`);
  const config = parseConfig(configText);

  const index = await readJson<{ weight_map?: Record<string, string> }>(source, INDEX);
  let files: string[];
  if (index) {
    if (!index.weight_map || typeof index.weight_map !== 'object') throw new InvalidModelFileError(INDEX, 'has no weight_map');
    files = [...new Set(Object.values(index.weight_map))].sort();
  } else {
    files = ['model.safetensors'];
  }

  const available = new Map<string, TensorLocation>();
  for (const name of files) {
    const file = await source.open(name);
    if (!file) {
      if (!index && (await source.open('pytorch_model.bin'))) {
        throw new ModelSourceError(`${source.description} has only pytorch_model.bin; convert it to safetensors first`);
      }
      throw new ModelSourceError(`${source.description} has no ${name}${index ? ` (listed in ${INDEX})` : ''}`);
    }
    const header = await readHeader(file);
    for (const info of header.tensors) available.set(info.name, { file, info });
  }
  if (index) {
    for (const [tensor, file] of Object.entries(index.weight_map!)) {
      const at = available.get(tensor);
      if (!at || at.file.name.split('/').pop() !== file.split('/').pop()) {
        throw new InvalidModelFileError(INDEX, `lists '${tensor}' in ${file}, but that file does not hold it`);
      }
    }
  }

  const resolved = resolveWeights(config, new Map([...available].map(([n, l]) => [n, { shape: l.info.shape }])), source.description);
  const tensors = new Map<string, TensorLocation>();
  for (const [canonical, stored] of resolved) {
    const loc = available.get(stored)!;
    if (!['F32', 'F16', 'BF16'].includes(loc.info.dtype)) {
      throw new InvalidModelFileError(loc.file.name, `tensor '${stored}' is ${loc.info.dtype}; weights must be F32, F16 or BF16`);
    }
    tensors.set(canonical, loc);
  }
  return { source, config, tensors, files };
}

/**
 * Read the named tensors (canonical HF names) one at a time as f32, in order, reporting progress: the
 * streaming loop every loader shares, so host memory holds one tensor at a time.
 */
export async function forEachTensor(
  ckpt: Checkpoint,
  names: string[],
  use: (name: string, data: Float32Array) => void,
  onProgress?: (p: LoadProgress) => void,
): Promise<void> {
  const span = (n: string) => ckpt.tensors.get(n)!.info.end - ckpt.tensors.get(n)!.info.begin;
  const bytesTotal = names.reduce((s, n) => s + span(n), 0);
  let bytesLoaded = 0;
  for (const [i, name] of names.entries()) {
    const { file, info } = ckpt.tensors.get(name)!;
    use(name, await readTensorF32(file, info));
    bytesLoaded += span(name);
    onProgress?.({ tensor: name, loaded: i + 1, total: names.length, bytesLoaded, bytesTotal });
  }
}

/** Read every required weight as f32 into its own GPU buffer, in expectedWeights order. */
export async function uploadWeights(
  gpu: Gpu,
  ckpt: Checkpoint,
  onProgress?: (p: LoadProgress) => void,
): Promise<Map<string, GPUBuffer>> {
  const out = new Map<string, GPUBuffer>();
  try {
    await forEachTensor(ckpt, expectedWeights(ckpt.config).map((w) => w.name), (name, data) => out.set(name, gpu.upload(data, name)), onProgress);
  } catch (e) {
    for (const b of out.values()) gpu.destroyBuffer(b); // nothing half-loaded stays allocated
    throw e;
  }
  return out;
}
