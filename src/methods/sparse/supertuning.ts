/**
 * PEFT's Super-Tuning adapter (peft_type "SUPERTUNING", peft/tuners/supertuning/): per adapted nn.Linear
 * `base_model.model.<module>.supertuning_indices` (I32 [nnz], flat row-major positions in the [out, in]
 * weight) and `...supertuning_values` (F32 [nnz], scatter-added onto the weight), and in its "Supra" mode
 * (config `r`) a LoRA beside them, `...supertuning_lora_A.weight` [r, in] and `...supertuning_lora_B.weight`
 * [out, r], scaled lora_alpha / r. It holds a sparse method's change, and sparse+LoRA's whole.
 *
 * PEFT sizes every module's support from one ratio, nnz = int(numel * (1 - sparsity)) (update_layer),
 * and loads a file only when each module's tensors have that size; and `target_modules` adapts a module
 * name in every layer. So a mask of any shape (a global budget, blocks, modules without entries) is written
 * at the sparsity of its densest module, every module of the adapted kinds padded with zero values at
 * positions outside the mask, and a LoRA on fewer modules, or with per-module ranks and scales, padded with
 * zero rows and columns and rescaled to one scale: all of it the same model exactly. GPT-2's Conv1D layers
 * have no form (Super-Tuning adapts nn.Linear only).
 */
import { ShapeError, UnsupportedAdapterError } from '../../errors.js';
import { checkFields, describeJson, unset, type FieldTable } from '../../io/config-fields.js';
import { bytesSource } from '../../io/bytes.js';
import { InvalidModelFileError, readHeader, readIndexTensor, readTensorF32, writeSafetensors, type TensorToWrite } from '../../io/safetensors.js';
import { brief, JsonNumber, parseStrictJson, type StrictJson } from '../../io/strict-json.js';
import type { ModelConfig } from '../../model/config.js';
import { shapesDigest } from '../../model/fingerprint.js';
import { linearMappings } from '../../model/linear-weights.js';
import type { Lora } from '../lora/layer.js';
import { peftLoraModules, readPeftAdapter, type PeftAdapter } from '../lora/peft.js';
import { fileOrder, valueOrder, type SparseDelta } from './interchange.js';
import type { SparseFineTuning } from './layer.js';
import { hfElements, readHfIndices, SparseMask, type HfIndexTensor } from './mask.js';

/** The linear weights PEFT names as modules (fused ones whole), by Hugging Face module path: [out, in]. */
function linearShapes(config: ModelConfig): Map<string, [number, number]> {
  return new Map(
    linearMappings(config).map((m) => [m.hfName.replace(/\.weight$/, ''), [m.hfShape[0], m.hfShape[1]]]),
  );
}

/** Whether the model's linear layers are nn.Linear, which Super-Tuning adapts (GPT-2's are Conv1D). */
export function hasSupertuningForm(config: ModelConfig): boolean {
  return config.family !== 'gpt2';
}

function noConv1d(config: ModelConfig): void {
  if (!hasSupertuningForm(config)) throw new ShapeError("PEFT's Super-Tuning adapts nn.Linear modules only: GPT-2's Conv1D layers have no SUPERTUNING form (export the sparse delta, or a merged model)");
}

/**
 * A trained sparse method (and sparse+LoRA's adapter, given `lora`) as PEFT's Super-Tuning files, by name
 * (see the module comment).
 */
export async function supertuningAdapterFiles(sparse: SparseFineTuning, config: ModelConfig, options: { lora?: Lora; baseModel?: string } = {}): Promise<Record<string, Uint8Array>> {
  noConv1d(config);
  const shapes = linearShapes(config);
  const elements = hfElements(sparse.mask, config);
  const low = options.lora ? await peftLoraModules(options.lora) : null;
  // Adapted kinds ('q_proj'), and with them every layer's module of that kind.
  const kind = (path: string) => path.split('.').at(-1)!;
  const kinds = new Set([...[...elements.keys()].map((n) => kind(n.replace(/\.weight$/, ''))), ...(low?.modules.map((m) => kind(m.path)) ?? [])]);
  const modules = [...shapes.keys()].filter((path) => kinds.has(kind(path)));
  if (!modules.length) throw new ShapeError('the mask is empty');
  const count = (path: string) => elements.get(`${path}.weight`)?.hf.length ?? 0;
  const numel = (path: string) => shapes.get(path)![0] * shapes.get(path)![1];
  // The densest module sets the ratio (and every module keeps at least one entry, as PEFT requires);
  // a hair above it so that PEFT's int(numel * (1 - sparsity)) reaches each module's count.
  const fraction = Math.min(1, Math.max(...modules.map((p) => count(p) / numel(p)), ...modules.map((p) => 1 / numel(p))) + 1e-12);
  const sparsity = Math.max(0, 1 - fraction);
  const size = (path: string) => Math.trunc(numel(path) * (1 - sparsity));
  for (const p of modules) if (size(p) < Math.max(count(p), 1)) throw new Error(`Super-Tuning sizes: '${p}' would hold ${size(p)} of its ${count(p)} entries`);
  const deltas = await sparse.deltas();
  const tensors: Record<string, TensorToWrite> = {};
  for (const path of modules) {
    const e = elements.get(`${path}.weight`);
    const n = size(path);
    const indices = new Int32Array(n);
    const values = new Float32Array(n);
    if (e) {
      indices.set(e.hf);
      values.set(fileOrder(sparse.mask, e, deltas));
    }
    // Padding: zero values at the first positions outside the mask.
    const taken = new Set(e?.hf ?? []);
    for (let at = e?.hf.length ?? 0, f = 0; at < n; f++) if (!taken.has(f)) indices[at++] = f;
    tensors[`base_model.model.${path}.supertuning_indices`] = { dtype: 'I32', shape: [n], data: indices };
    tensors[`base_model.model.${path}.supertuning_values`] = { dtype: 'F32', shape: [n], data: values };
  }
  let r: number | null = null;
  let alpha: number | null = null;
  if (low) {
    if (low.modules.some((m) => m.magnitude)) throw new ShapeError("Super-Tuning's LoRA has no DoRA magnitude");
    // One rank and scale for all: the largest rank, zero rows and columns below it, B rescaled.
    r = Math.max(...low.modules.map((m) => m.rank));
    const scale = low.modules[0].scale;
    alpha = scale * r;
    const byPath = new Map(low.modules.map((m) => [m.path, m]));
    for (const path of modules) {
      const [out, inDim] = shapes.get(path)!;
      const a = new Float32Array(r * inDim);
      const b = new Float32Array(out * r);
      const m = byPath.get(path);
      if (m) {
        a.set(m.A);
        const ratio = m.scale / scale;
        for (let o = 0; o < out; o++) for (let j = 0; j < m.rank; j++) b[o * r + j] = m.B[o * m.rank + j] * ratio;
      }
      tensors[`base_model.model.${path}.supertuning_lora_A.weight`] = { dtype: 'F32', shape: [r, inDim], data: a };
      tensors[`base_model.model.${path}.supertuning_lora_B.weight`] = { dtype: 'F32', shape: [out, r], data: b };
    }
  }
  const adapterConfig = {
    peft_type: 'SUPERTUNING', task_type: 'CAUSAL_LM', target_modules: [...kinds].sort(), sparsity, select_top: true,
    r, lora_alpha: alpha, lora_dropout: options.lora?.options.dropout ?? 0, init_weights: true, save_precomputed_indices: true,
    modules_to_save: null, base_model_name_or_path: options.baseModel ?? null, inference_mode: true, revision: null, auto_mapping: null,
  };
  return {
    'adapter_config.json': new TextEncoder().encode(JSON.stringify(adapterConfig, null, 2) + '\n'),
    'adapter_model.safetensors': writeSafetensors(tensors, { format: 'pt' }),
  };
}

type Value = StrictJson | undefined;

/**
 * Every field of PEFT's SupertuningConfig (peft main, tuners/supertuning/config.py): the indices and
 * values in the file say what changes, so how PEFT chose them (sparsity, select_top) and the
 * initialisation do not matter; indices that are not saved (recomputed from the base's magnitudes on load,
 * where tie-breaks may differ) and extra trained modules are refused by name.
 */
export const SUPERTUNING_CONFIG_FIELDS: FieldTable<Value> = {
  peft_type: 'read', task_type: 'read', r: 'read', lora_alpha: 'read', lora_dropout: 'read',
  target_modules: 'inert', sparsity: 'inert', select_top: 'inert', init_weights: 'inert',
  save_precomputed_indices: { supported: 'true: the indices in the file', ok: (v) => v === undefined || v === true },
  modules_to_save: { supported: 'unset: training whole extra modules is not implemented', ok: unset },
  auto_mapping: 'inert', peft_version: 'inert', base_model_name_or_path: 'inert', revision: 'inert', inference_mode: 'inert',
};

/** A Super-Tuning adapter read: its sparse change, and in Supra mode its LoRA (as readPeftAdapter gives one). */
export interface SupertuningAdapter {
  delta: SparseDelta;
  lora: PeftAdapter | null;
  warnings: string[];
}

/**
 * Read PEFT's Super-Tuning files for a model of this config. Attach sparse (or, with `lora`,
 * sparse+LoRA with its options) on `delta.mask`, apply `delta.deltas`, and write the LoRA tensors.
 * Positions a file lists twice are summed, as scatter_add sums them.
 */
export async function readSupertuningAdapter(files: { config: Uint8Array | string; weights: Uint8Array }, config: ModelConfig): Promise<SupertuningAdapter> {
  const name = 'Super-Tuning adapter';
  const json = parseStrictJson(typeof files.config === 'string' ? files.config : new TextDecoder().decode(files.config));
  if (!(json instanceof Map)) throw new InvalidModelFileError('adapter_config.json', 'is not a JSON object');
  if (json.get('peft_type') !== 'SUPERTUNING') throw new InvalidModelFileError('adapter_config.json', `peft_type is ${brief(String(json.get('peft_type')))}, not SUPERTUNING`);
  const task = json.get('task_type');
  if (task !== undefined && task !== null && task !== 'CAUSAL_LM') throw new ShapeError(`this adapter's task_type is ${brief(String(task))}; this engine loads CAUSAL_LM adapters`);
  const warnings = checkFields(json, SUPERTUNING_CONFIG_FIELDS, {
    file: 'adapter_config.json',
    definedBy: "PEFT's SupertuningConfig",
    refuse: (field, value, supported) => new UnsupportedAdapterError(field, describeJson(value as Value), `Super-Tuning adapter: ${field} is ${describeJson(value as Value)}; this engine supports ${supported}`),
  });
  noConv1d(config);
  const r = json.get('r');
  const supra = r instanceof JsonNumber;
  const shapes = linearShapes(config);
  const source = bytesSource('adapter_model.safetensors', files.weights);
  const header = await readHeader(source);
  const indexTensors: HfIndexTensor[] = [];
  const values = new Map<string, Float32Array>();
  const lora: Record<string, TensorToWrite> = {};
  for (const t of header.tensors) {
    const m = /^base_model\.model\.(.+)\.supertuning_(indices|values|lora_A\.weight|lora_B\.weight)$/.exec(t.name);
    if (!m) throw new InvalidModelFileError(source.name, `unexpected tensor '${brief(t.name)}' in a Super-Tuning adapter`);
    const shape = shapes.get(m[1]);
    if (!shape) throw new ShapeError(`${name}: '${brief(m[1])}' is not a linear layer of this ${config.architecture} model`);
    if (m[2].startsWith('lora_')) {
      if (!supra) throw new InvalidModelFileError(source.name, `'${brief(t.name)}' is a LoRA tensor, and r is not set`);
      // Read below as a PEFT LoRA adapter of the same rank and alpha.
      lora[`base_model.model.${m[1]}.${m[2]}`] = { dtype: 'F32', shape: t.shape, data: await readTensorF32(source, t) };
      continue;
    }
    if (m[2] === 'values') continue;
    const v = header.byName.get(`base_model.model.${m[1]}.supertuning_values`);
    if (t.shape.length !== 1 || !v || v.shape.length !== 1 || v.shape[0] !== t.shape[0]) throw new InvalidModelFileError(source.name, `'${brief(t.name)}' must be 1-D beside supertuning_values of its length`, 'shape');
    const raw = await readIndexTensor(source, t);
    const vals = await readTensorF32(source, v);
    const numel = shape[0] * shape[1];
    // Sorted and unique, as masks are: duplicates summed (scatter_add's meaning).
    const byFlat = new Map<number, number>();
    raw.forEach((f, i) => {
      if (f >= numel) throw new InvalidModelFileError(source.name, `'${brief(t.name)}' index ${f} is outside the ${shape[0]}x${shape[1]} weight`);
      byFlat.set(f, (byFlat.get(f) ?? 0) + vals[i]);
    });
    const flat = Uint32Array.from([...byFlat.keys()].sort((a, b) => a - b));
    const hfName = `${m[1]}.weight`;
    values.set(hfName, Float32Array.from(flat, (f) => byFlat.get(f)!));
    indexTensors.push({ hfName, shape: [flat.length], read: async () => flat });
  }
  for (const t of header.tensors) {
    if (t.name.endsWith('.supertuning_values') && !header.byName.has(t.name.replace(/values$/, 'indices'))) throw new InvalidModelFileError(source.name, `'${brief(t.name)}' has no supertuning_indices beside it`);
  }
  if (!indexTensors.length) throw new InvalidModelFileError(source.name, 'holds no Super-Tuning tensors');
  const { entries, elements } = await readHfIndices(name, config, indexTensors, 'element');
  const mask = new SparseMask('element', entries, { selection: 'supertuning', budget: 'per-matrix', calibrationTokens: 0, fingerprint: { shapes: shapesDigest(config), weights: '' } });
  const delta: SparseDelta = { mask, deltas: valueOrder(mask, elements, values) };
  let low: PeftAdapter | null = null;
  if (supra) {
    const loraConfig = { peft_type: 'LORA', task_type: 'CAUSAL_LM', r: r.value, lora_alpha: json.get('lora_alpha') instanceof JsonNumber ? (json.get('lora_alpha') as JsonNumber).value : 2 * r.value, lora_dropout: json.get('lora_dropout') instanceof JsonNumber ? (json.get('lora_dropout') as JsonNumber).value : 0 };
    const renamed = Object.fromEntries(Object.entries(lora).map(([k, t]) => [k.replace('.supertuning_lora_', '.lora_'), t]));
    low = await readPeftAdapter({ config: JSON.stringify(loraConfig), weights: writeSafetensors(renamed, { format: 'pt' }) }, config);
  }
  return { delta, lora: low, warnings };
}
