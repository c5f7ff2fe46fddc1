/**
 * A trained sparse change in files other tools read:
 *
 * - The sparse delta file (safetensors): per Hugging Face weight, `<name>.indices` (U32, sorted flat
 *   indices in that tensor's layout) and `<name>.delta` (F32, values - originals in the same order), with
 *   the mask's metadata and the base model's fingerprint. It applies only to that base.
 * - PEFT's SHiRA adapter (adapter_config.json with peft_type "SHIRA", and adapter_model.safetensors with
 *   `base_model.model.<module>.shira_weight` F32 [nnz] and `...shira_indices` I32 [2, nnz], rows then
 *   columns, row-major): PEFT adds the weights to the base weight at the indices. SHiRA's budget rule is
 *   r * (in + out) elements in every adapted layer (select with `loraRank: r`), and it adapts whole
 *   nn.Linear modules, so GPT-2's Conv1D and fused c_attn have no SHiRA form. `mask_type` is written
 *   "random": PEFT then builds a placeholder mask that the saved indices replace.
 *
 * Reading either gives a SparseDelta: attach the sparse method with its mask, then applyDeltas.
 */
import { ModelMismatchError, ShapeError, UnsupportedAdapterError } from '../../errors.js';
import { checkFields, describeJson, unset, type FieldTable } from '../../io/config-fields.js';
import { bytesSource } from '../../io/bytes.js';
import { InvalidModelFileError, readHeader, readIndexTensor, readTensorF32, writeSafetensors, type TensorToWrite } from '../../io/safetensors.js';
import { brief, parseStrictJson, type StrictJson } from '../../io/strict-json.js';
import type { ModelConfig } from '../../model/config.js';
import { shapesDigest } from '../../model/fingerprint.js';
import { hfMappings } from '../../model/layout.js';
import { hfModulePaths } from '../targets.js';
import type { SparseFineTuning } from './layer.js';
import { hfElements, maskMetadata, readHfIndices, SparseMask, type HfElements, type HfIndexTensor } from './mask.js';

/** A mask and the change at it: per module, values - originals in the mask's value order. */
export interface SparseDelta {
  mask: SparseMask;
  deltas: Map<string, Float32Array>;
  /** Fields of an adapter file the engine does not know (a newer PEFT's), each named in a sentence. */
  warnings?: string[];
}

const DELTA_FORMAT = 'webgpu-finetune-sparse-delta';

/** File-order values of one Hugging Face tensor's elements, from per-module value-order deltas. */
export function fileOrder(mask: SparseMask, e: HfElements, deltas: Map<string, Float32Array>): Float32Array {
  const position = new Map<string, Map<number, number>>();
  const at = (module: string) => {
    let p = position.get(module);
    if (!p) position.set(module, (p = new Map(Array.from(mask.valueIndices(module), (f, i) => [f, i]))));
    return p;
  };
  return Float32Array.from(e.flat, (f, i) => deltas.get(e.module[i])![at(e.module[i]).get(f)!]);
}

/** Per-module value-order deltas from file-order values per Hugging Face tensor. */
export function valueOrder(mask: SparseMask, elements: Map<string, HfElements>, values: Map<string, Float32Array>): Map<string, Float32Array> {
  const byFlat = new Map<string, Map<number, number>>();
  for (const [hfName, e] of elements) {
    const v = values.get(hfName)!;
    e.flat.forEach((f, i) => {
      let m = byFlat.get(e.module[i]);
      if (!m) byFlat.set(e.module[i], (m = new Map()));
      m.set(f, v[i]);
    });
  }
  return new Map([...mask.entries.keys()].map((m) => [m, Float32Array.from(mask.valueIndices(m), (f) => byFlat.get(m)!.get(f)!)]));
}

/** The sparse delta file of a trained method (see the module comment). */
export async function sparseDeltaFile(method: SparseFineTuning, config: ModelConfig): Promise<Uint8Array> {
  const deltas = await method.deltas();
  const mask = new SparseMask(method.mask.granularity, method.mask.entries, { ...method.mask.info, fingerprint: method.base });
  const tensors: Record<string, TensorToWrite> = {};
  for (const [hfName, e] of hfElements(mask, config)) {
    tensors[`${hfName}.indices`] = { dtype: 'U32', shape: [e.hf.length], data: e.hf };
    tensors[`${hfName}.delta`] = { dtype: 'F32', shape: [e.hf.length], data: fileOrder(mask, e, deltas) };
  }
  return writeSafetensors(tensors, mask.metadata(DELTA_FORMAT));
}

/** Read a sparse delta file for a model of this config; malformed files and other bases are errors. */
export async function readSparseDelta(bytes: Uint8Array, config: ModelConfig, name = 'sparse delta'): Promise<SparseDelta> {
  const source = bytesSource(name, bytes);
  const header = await readHeader(source);
  if (header.metadata.format !== DELTA_FORMAT) throw new InvalidModelFileError(name, `is not a sparse delta file (metadata format '${brief(String(header.metadata.format))}')`, 'metadata');
  const { granularity, info } = maskMetadata(name, header.metadata, config);
  const indexTensors: HfIndexTensor[] = [];
  for (const t of header.tensors) {
    if (t.name.endsWith('.delta')) {
      if (!header.byName.has(`${t.name.slice(0, -'.delta'.length)}.indices`)) throw new InvalidModelFileError(name, `'${brief(t.name)}' has no indices beside it`);
      continue;
    }
    if (!t.name.endsWith('.indices')) throw new InvalidModelFileError(name, `unexpected tensor '${brief(t.name)}' (want <weight>.indices and <weight>.delta)`);
    const delta = header.byName.get(`${t.name.slice(0, -'.indices'.length)}.delta`);
    if (!delta || delta.shape.length !== 1 || delta.shape[0] !== t.shape[0]) throw new InvalidModelFileError(name, `'${brief(t.name)}' needs a 1-D .delta of the same length beside it`);
    indexTensors.push({ hfName: t.name.slice(0, -'.indices'.length), shape: t.shape, read: () => readIndexTensor(source, t) });
  }
  const { entries, elements } = await readHfIndices(name, config, indexTensors, granularity);
  const mask = new SparseMask(granularity, entries, info);
  const values = new Map<string, Float32Array>();
  for (const hfName of elements.keys()) values.set(hfName, await readTensorF32(source, header.byName.get(`${hfName}.delta`)!));
  return { mask, deltas: valueOrder(mask, elements, values) };
}

/**
 * A trained sparse method as a PEFT SHiRA adapter (see the module comment): the files by name. The
 * mask must hold r * (in + out) elements in every layer for one r (select with `loraRank`).
 */
export async function shiraAdapterFiles(method: SparseFineTuning, config: ModelConfig, options: { baseModel?: string } = {}): Promise<Record<string, Uint8Array>> {
  const mask = method.mask;
  if (mask.granularity !== 'element') throw new ShapeError('SHiRA adapters hold single elements: a block mask has no SHiRA form');
  const paths = hfModulePaths(config, { untransposed: true });
  let r: number | null = null;
  for (const [m, e] of mask.entries) {
    if (!paths.has(m)) throw new ShapeError(`SHiRA adapts whole nn.Linear modules: '${m}' of ${config.architecture} (a Conv1D or fused weight) has no SHiRA form`);
    const rank = e.indices.length / (e.rows + e.cols);
    if (!Number.isInteger(rank) || (r !== null && rank !== r)) {
      throw new ShapeError(`SHiRA's budget is r * (in + out) elements in every layer for one r; '${m}' holds ${e.indices.length} (${e.rows}x${e.cols}): select the mask with loraRank`);
    }
    r = rank;
  }
  if (r === null) throw new ShapeError('the mask is empty');
  const deltas = await method.deltas();
  const tensors: Record<string, TensorToWrite> = {};
  const targets = new Set<string>();
  for (const [hfName, e] of hfElements(mask, config)) {
    const module = hfName.slice(0, -'.weight'.length);
    const cols = mask.entries.get(e.module[0])!.cols;
    const indices = new Int32Array(2 * e.hf.length);
    e.hf.forEach((f, i) => {
      indices[i] = Math.floor(f / cols);
      indices[e.hf.length + i] = f % cols;
    });
    tensors[`base_model.model.${module}.shira_weight`] = { dtype: 'F32', shape: [e.hf.length], data: fileOrder(mask, e, deltas) };
    tensors[`base_model.model.${module}.shira_indices`] = { dtype: 'I32', shape: [2, e.hf.length], data: indices };
    targets.add(module.split('.').pop()!);
  }
  const adapterConfig = {
    peft_type: 'SHIRA', task_type: 'CAUSAL_LM', r, mask_type: 'random', random_seed: null, target_modules: [...targets].sort(),
    fan_in_fan_out: false, init_weights: true, modules_to_save: null, base_model_name_or_path: options.baseModel ?? null,
    inference_mode: true, revision: null, auto_mapping: null,
  };
  return {
    'adapter_config.json': new TextEncoder().encode(JSON.stringify(adapterConfig, null, 2) + '\n'),
    'adapter_model.safetensors': writeSafetensors(tensors, { format: 'pt' }),
  };
}

/**
 * Every field of PEFT's ShiraConfig (peft 0.21, tuners/shira/config.py): the file's indices and values
 * say which weights change and by how much, so the mask's recipe (r, mask_type, random_seed) and the
 * initialisation do not matter to a saved adapter; options the engine does not apply are refused by name.
 */
export const SHIRA_CONFIG_FIELDS: FieldTable<StrictJson | undefined> = {
  peft_type: 'read', task_type: 'inert', r: 'inert', mask_type: 'inert', random_seed: 'inert', target_modules: 'inert', init_weights: 'inert',
  fan_in_fan_out: { supported: 'false', ok: (v) => v === undefined || v === null || v === false },
  modules_to_save: { supported: 'unset: training whole extra modules is not implemented', ok: unset },
  auto_mapping: 'inert', peft_version: 'inert', base_model_name_or_path: 'inert', revision: 'inert', inference_mode: 'inert',
};

/** Read a PEFT SHiRA adapter (its two files) for a model of this config. */
export async function readShiraAdapter(files: { config: Uint8Array | string; weights: Uint8Array }, config: ModelConfig): Promise<SparseDelta> {
  const name = 'SHiRA adapter';
  const text = typeof files.config === 'string' ? files.config : new TextDecoder().decode(files.config);
  const json = parseStrictJson(text);
  if (!(json instanceof Map)) throw new InvalidModelFileError('adapter_config.json', 'is not a JSON object');
  if (json.get('peft_type') !== 'SHIRA') throw new InvalidModelFileError('adapter_config.json', `peft_type is ${brief(String(json.get('peft_type')))}, not SHIRA`);
  const warnings = checkFields(json, SHIRA_CONFIG_FIELDS, {
    file: 'adapter_config.json',
    definedBy: "PEFT 0.21's ShiraConfig",
    refuse: (field, value, supported) => new UnsupportedAdapterError(field, describeJson(value as StrictJson), `SHiRA adapter: ${field} is ${describeJson(value as StrictJson)}; this engine supports ${supported}`),
  });
  const source = bytesSource('adapter_model.safetensors', files.weights);
  const header = await readHeader(source);
  const paths = new Map([...hfModulePaths(config, { untransposed: true })].map(([engine, hf]) => [hf, engine]));
  const indexTensors: HfIndexTensor[] = [];
  const weights = new Map<string, { flat: Uint32Array; values: Float32Array }>();
  for (const t of header.tensors) {
    const m = /^base_model\.model\.(.+)\.shira_(weight|indices)$/.exec(t.name);
    if (!m) throw new InvalidModelFileError(source.name, `unexpected tensor '${brief(t.name)}' in a SHiRA adapter`);
    if (!paths.has(m[1])) throw new ModelMismatchError(`${name}: '${brief(m[1])}' is not a linear layer of this ${config.architecture} model`);
    if (m[2] === 'weight') continue;
    const w = header.byName.get(`base_model.model.${m[1]}.shira_weight`);
    const nnz = t.shape[1];
    if (t.shape.length !== 2 || t.shape[0] !== 2 || !w || w.shape.length !== 1 || w.shape[0] !== nnz) {
      throw new InvalidModelFileError(source.name, `'${brief(t.name)}' must be [2, nnz] beside a shira_weight of [nnz]`, 'shape');
    }
    const pairs = await readIndexTensor(source, t);
    const values = await readTensorF32(source, w);
    const hfName = `${m[1]}.weight`;
    const cols = hfMappings(config).find((x) => x.hfName === hfName)!.hfShape[1];
    // Row-major flat indices, sorted with their values (PEFT writes them sorted; a file need not be).
    const order = Array.from({ length: nnz }, (_, i) => i);
    const flatOf = (i: number) => pairs[i] * cols + pairs[nnz + i];
    for (let i = 0; i < nnz; i++) if (pairs[nnz + i] >= cols) throw new InvalidModelFileError(source.name, `'${brief(t.name)}' column ${pairs[nnz + i]} is outside ${cols} columns`);
    order.sort((a, b) => flatOf(a) - flatOf(b));
    weights.set(hfName, { flat: Uint32Array.from(order, flatOf), values: Float32Array.from(order, (i) => values[i]) });
    indexTensors.push({ hfName, shape: [nnz], read: async () => weights.get(hfName)!.flat });
  }
  for (const t of header.tensors) {
    if (t.name.endsWith('.shira_weight') && !header.byName.has(t.name.replace(/shira_weight$/, 'shira_indices'))) throw new InvalidModelFileError(source.name, `'${brief(t.name)}' has no shira_indices beside it`);
  }
  const { entries, elements } = await readHfIndices(name, config, indexTensors, 'element');
  const mask = new SparseMask('element', entries, { selection: 'shira', budget: 'per-matrix', calibrationTokens: 0, fingerprint: { shapes: shapesDigest(config), weights: '' } });
  return { mask, deltas: valueOrder(mask, elements, new Map([...weights].map(([k, v]) => [k, v.values]))), warnings };
}
