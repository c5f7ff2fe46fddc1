/**
 * Opening a Hugging Face checkpoint from any source: config.json, then model.safetensors or the shards
 * named by model.safetensors.index.json. Every header is validated and every required tensor located
 * and shape-checked before anything is allocated; weights then stream to the GPU one tensor at a time,
 * so peak host memory stays near the largest tensor.
 */
import type { Gpu } from '../gpu/gpu.js';
import type { ByteSource } from '../io/bytes.js';
import { InvalidModelFileError, readBytes, readHeader, readTensorF32, readWords, SHARD_INDEX as INDEX, type TensorInfo } from '../io/safetensors.js';
import { checkFileName, missingFileMessage, ModelSourceError, readJson, readText, type ModelSource } from '../io/sources.js';
import { brief } from '../io/strict-json.js';
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

/** The shard names of an index, checked: a map of tensor names to safe relative file names. */
function indexWeightMap(index: unknown, where: string): Map<string, string> {
  const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
  if (typeof index !== 'object' || index === null || typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new InvalidModelFileError(INDEX, 'has no weight_map object', 'structure');
  }
  const out = new Map<string, string>();
  for (const [tensor, file] of Object.entries(weightMap)) {
    if (typeof file !== 'string') throw new InvalidModelFileError(INDEX, `weight_map['${brief(tensor)}'] is not a file name`, 'structure');
    checkFileName(file, `${where}: ${INDEX}`);
    out.set(tensor, file);
  }
  return out;
}

/** Whether two stored copies of a tensor are the same: dtype, shape and bytes, compared a chunk at a time. */
async function sameTensor(a: TensorLocation, b: TensorLocation): Promise<boolean> {
  if (a.info.dtype !== b.info.dtype || a.info.shape.join() !== b.info.shape.join()) return false;
  const size = a.info.end - a.info.begin;
  const CHUNK = 1 << 24;
  for (let at = 0; at < size; at += CHUNK) {
    const n = Math.min(CHUNK, size - at);
    const [x, y] = await Promise.all([a.file.read(a.info.begin + at, n), b.file.read(b.info.begin + at, n)]);
    for (let i = 0; i < n; i++) if (x[i] !== y[i]) return false;
  }
  return true;
}

/**
 * Configs claim sizes; weights prove them. Before per-layer names are expanded (a config claiming 10^9
 * layers would otherwise exhaust memory listing them), the layer count must be one the checkpoint's
 * tensor names can hold.
 */
function checkPlausible(config: ModelConfig, names: Iterable<string>, where: string): void {
  let count = 0;
  let layers = 0;
  for (const n of names) {
    count++;
    const m = /(?:^|\.)(?:layers|h)\.(\d{1,9})\./.exec(n);
    if (m) layers = Math.max(layers, Number(m[1]) + 1);
  }
  // The fewest tensors a layer of the family has (Phi-3 fuses q, k, v and gate, up into two).
  const perLayer = config.family === 'gpt2' ? 12 : config.fusedProjections ? 6 : 9;
  // More layers in the weights than the config says is no model transformers builds whole: it would
  // drop the rest with a warning, and a run on the first layers alone would be silently another model.
  if (layers > config.numLayers) {
    const field = config.family === 'gpt2' ? 'n_layer' : 'num_hidden_layers';
    throw new InvalidModelFileError(where, `config.json ${field} is ${config.numLayers}, but the weights hold ${layers} layers: set ${field} to ${layers}, or remove the extra layers' tensors`);
  }
  if (config.numLayers > layers || config.numLayers * perLayer > count) {
    throw new InvalidModelFileError(
      where,
      `config.json claims ${config.numLayers} layers, but the weights hold ${layers} layer(s) in ${count} tensors (config and weights disagree)`,
    );
  }
}

export async function openCheckpoint(source: ModelSource): Promise<Checkpoint> {
  const configText = await readText(source, 'config.json');
  if (configText === null) throw new ModelSourceError(missingFileMessage(source, 'config.json'));
  const config = parseConfig(configText);

  const index = await readJson<unknown>(source, INDEX);
  const weightMap = index === null ? null : indexWeightMap(index, source.description);
  const files = weightMap ? [...new Set(weightMap.values())].sort() : ['model.safetensors'];

  // Every tensor of every file, with each file holding it: a tensor may (wrongly) sit in two shards.
  const holders = new Map<string, (TensorLocation & { shard: string })[]>();
  for (const name of files) {
    const file = await source.open(name);
    if (!file) {
      if (!weightMap && (await source.open('pytorch_model.bin'))) {
        throw new ModelSourceError(`${source.description} has only pytorch_model.bin; convert it to safetensors first`);
      }
      throw new ModelSourceError(missingFileMessage(source, name, weightMap ? ` (listed in ${INDEX})` : ''));
    }
    const header = await readHeader(file);
    for (const info of header.tensors) {
      const list = holders.get(info.name);
      if (list) list.push({ file, info, shard: name });
      else holders.set(info.name, [{ file, info, shard: name }]);
    }
  }
  // The index says where each tensor is, as transformers reads it; a tensor in two shards is taken from
  // the one the index names, and is an error only when the index names neither.
  const available = new Map<string, TensorLocation>();
  if (weightMap) {
    for (const [tensor, file] of weightMap) {
      const found = holders.get(tensor) ?? [];
      const at = found.find((l) => l.shard === file);
      if (!at) {
        const elsewhere = found.map((l) => brief(l.shard)).join(', ');
        throw new InvalidModelFileError(INDEX, `lists '${brief(tensor)}' in ${brief(file)}, but that file does not hold it${elsewhere ? ` (${elsewhere} does)` : ''}`);
      }
      available.set(tensor, at);
      for (const other of found) {
        if (other !== at && !(await sameTensor(at, other))) {
          config.warnings.push(`tensor '${brief(tensor)}' is in ${brief(at.shard)} and, with other values, in ${brief(other.shard)}: ${INDEX} names ${brief(at.shard)}, whose copy is loaded (as transformers loads it)`);
        }
      }
    }
  }
  for (const [tensor, found] of holders) {
    if (available.has(tensor)) continue;
    if (found.length > 1) {
      throw new InvalidModelFileError(found[1].file.name, `tensor '${brief(tensor)}' is also in ${brief(found[0].shard)}${weightMap ? `, and ${INDEX} names neither` : ''}`);
    }
    available.set(tensor, found[0]);
  }

  checkPlausible(config, available.keys(), source.description);
  const resolved = resolveWeights(config, new Map([...available].map(([n, l]) => [n, { shape: l.info.shape }])), source.description);
  const tensors = new Map<string, TensorLocation>();
  const dtypes = new Map(expectedWeights(config).map((w) => [w.name, w.dtype]));
  const allowed = { U32: ['U32', 'I32'], U8: ['U8'], F16: ['F16'], F32: ['F32', 'F16', 'BF16'] };
  const rule = { U32: 'packed 4-bit words must be U32 or I32', U8: 'it must be U8', F16: 'it must be F16', F32: 'weights must be F32, F16 or BF16' };
  for (const [canonical, stored] of resolved) {
    const loc = available.get(stored)!;
    const want = dtypes.get(canonical) ?? 'F32';
    if (!allowed[want].includes(loc.info.dtype)) throw new InvalidModelFileError(loc.file.name, `tensor '${stored}' is ${loc.info.dtype}; ${rule[want]}`, 'dtype');
    tensors.set(canonical, loc);
  }
  return { source, config, tensors, files };
}

/**
 * Read the named tensors (canonical HF names) one at a time as f32 (a 4-bit checkpoint's packed words as
 * u32 bit patterns), in order, reporting progress: the
 * streaming loop every loader shares, so host memory holds one tensor at a time.
 */
export async function forEachTensor(
  ckpt: Checkpoint,
  names: string[],
  use: (name: string, data: Float32Array | Uint32Array | Uint8Array) => void,
  onProgress?: (p: LoadProgress) => void,
): Promise<void> {
  const span = (n: string) => ckpt.tensors.get(n)!.info.end - ckpt.tensors.get(n)!.info.begin;
  const bytesTotal = names.reduce((s, n) => s + span(n), 0);
  let bytesLoaded = 0;
  for (const [i, name] of names.entries()) {
    const { file, info } = ckpt.tensors.get(name)!;
    // U32 or I32: the packed words of a 4-bit checkpoint, bit for bit; U8 bytes as they are; everything
    // else as f32 values.
    use(name, info.dtype === 'U32' || info.dtype === 'I32' ? await readWords(file, info) : info.dtype === 'U8' ? await readBytes(file, info) : await readTensorF32(file, info));
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
