/**
 * Adapters as the adapter cache holds them on the host: plain arrays by engine module name, made from
 * memory, from PEFT files, from sparse delta files, or from a method that has just trained. Shapes are
 * checked against the base when the cache takes them.
 */
import { ShapeError } from '../errors.js';
import { loraModuleSpecs } from '../methods/lora/config.js';
import { readPeftAdapter } from '../methods/lora/peft.js';
import type { Method } from '../methods/method.js';
import { loraPart, sparsePart } from '../methods/sparse-lora/index.js';
import { readSparseDelta, type SparseDelta } from '../methods/sparse/interchange.js';
import { hfModulePaths } from '../methods/targets.js';
import type { ModelConfig } from '../model/config.js';
import type { ModelFingerprint } from '../model/fingerprint.js';

export interface LoraModuleWeights {
  rank: number;
  /** What multiplies the product: alpha / rank (alpha / sqrt(rank) with rslora). */
  scale: number;
  /** [rank, in], row-major (PEFT's lora_A). */
  A: Float32Array;
  /** [out, rank], row-major (PEFT's lora_B). */
  B: Float32Array;
}

/** A LoRA adapter: y += scale (x A^T) B^T on each module it names ('layers.0.q'). */
export interface LoraAdapter {
  kind: 'lora';
  modules: Map<string, LoraModuleWeights>;
  /** The base it was trained on; when given, the cache refuses another. */
  base?: Partial<ModelFingerprint>;
}

/** A sparse adapter: weight[indices] += delta in each module it names, inside the base's weights. */
export interface SparseAdapter {
  kind: 'sparse';
  /** Flat indices o * in + i (unique) with the change at each. */
  modules: Map<string, { indices: Uint32Array; delta: Float32Array }>;
  base?: Partial<ModelFingerprint>;
}

/** Sparse plus low-rank (RoSA): the sparse part in the weights and the LoRA part beside them, served together. */
export interface SparseLoraAdapter {
  kind: 'sparse+lora';
  sparse: SparseAdapter;
  lora: LoraAdapter;
  base?: Partial<ModelFingerprint>;
}

export type Adapter = LoraAdapter | SparseAdapter | SparseLoraAdapter;

/** An adapter's low-rank part, or null. */
export function loraOf(a: Adapter): LoraAdapter | null {
  return a.kind === 'lora' ? a : a.kind === 'sparse+lora' ? a.lora : null;
}

/** An adapter's part that changes the weights in place, or null. */
export function sparseOf(a: Adapter): SparseAdapter | null {
  return a.kind === 'sparse' ? a : a.kind === 'sparse+lora' ? a.sparse : null;
}

/** Bytes of an adapter's arrays on the host. */
export function adapterHostBytes(a: Adapter): number {
  let n = 0;
  for (const m of loraOf(a)?.modules.values() ?? []) n += m.A.byteLength + m.B.byteLength;
  for (const m of sparseOf(a)?.modules.values() ?? []) n += m.indices.byteLength + m.delta.byteLength;
  return n;
}

const DORA_NOT_SERVED = 'the adapter cache serves plain LoRA and sparse adapters, not DoRA (its per-row magnitude over the norm of W + s B A is not served): merge the DoRA adapter into the base, or run it attached';

/** A PEFT LoRA adapter (adapter_config.json and adapter_model.safetensors) for a base of this config. */
export async function loraAdapterFromPeft(files: { config: Uint8Array | string; weights: Uint8Array }, config: ModelConfig): Promise<LoraAdapter> {
  const peft = await readPeftAdapter(files, config);
  if (peft.options.dora) throw new ShapeError(DORA_NOT_SERVED);
  if (peft.options.init) throw new ShapeError(`the adapter cache serves adapters on the unchanged base; this ${peft.options.init} adapter applies to a residual of it: save it converted to plain LoRA (PEFT's path_initial_model_for_weight_conversion) and serve that`);
  const hf = hfModulePaths(config);
  const modules = new Map<string, LoraModuleWeights>();
  for (const [name, d] of loraModuleSpecs(config, peft.options)) {
    // By PEFT's name, or by the engine part's for a module PEFT fuses (GPT-2's c_attn).
    const tensor = (ab: 'A' | 'B') => peft.tensors.get(`base_model.model.${hf.get(name)}.lora_${ab}.weight`) ?? peft.tensors.get(`${name}.lora_${ab}`);
    const [A, B] = [tensor('A'), tensor('B')];
    if (!A || !B) throw new ShapeError(`LoRA adapter: no tensors for '${name}'`);
    modules.set(name, { rank: d.rank, scale: d.scale, A, B });
  }
  return { kind: 'lora', modules };
}

/** A sparse delta (readSparseDelta's result) as an adapter. */
export function sparseAdapterFromDelta(delta: SparseDelta): SparseAdapter {
  const modules = new Map([...delta.deltas].map(([m, d]) => [m, { indices: delta.mask.valueIndices(m), delta: d }]));
  return { kind: 'sparse', modules, base: delta.mask.info.fingerprint ?? undefined };
}

/** A sparse delta file (this engine's format) for a base of this config. */
export async function sparseAdapterFromFile(bytes: Uint8Array, config: ModelConfig, name?: string): Promise<SparseAdapter> {
  return sparseAdapterFromDelta(await readSparseDelta(bytes, config, name));
}

/**
 * What a LoRA, sparse or sparse+LoRA method attached to a model has trained, read back from the GPU. A
 * sparse part is kept as its change (values - originals), as in a delta file: served, it is within one
 * f32 rounding of the trained values.
 */
export async function adapterFromMethod(method: Method): Promise<Adapter> {
  const lora = loraPart(method);
  const sparse = sparsePart(method);
  let loraAdapter: LoraAdapter | null = null;
  let sparseAdapter: SparseAdapter | null = null;
  if (lora?.dora) throw new ShapeError(DORA_NOT_SERVED);
  if (lora) {
    const modules = new Map<string, LoraModuleWeights>();
    for (const [name, d] of lora.modules) {
      // PiSSA and OLoRA converted to plain LoRA of rank 2r on the original base, as they are saved.
      const { A, B, rank } = await lora.factors(name);
      modules.set(name, { rank, scale: d.scale, A, B });
    }
    loraAdapter = { kind: 'lora', modules };
  }
  if (sparse) sparseAdapter = { ...sparseAdapterFromDelta({ mask: sparse.mask, deltas: await sparse.deltas() }), base: sparse.base };
  if (loraAdapter && sparseAdapter) return { kind: 'sparse+lora', lora: loraAdapter, sparse: sparseAdapter, base: sparseAdapter.base };
  const one = loraAdapter ?? sparseAdapter;
  if (!one) throw new ShapeError(`the adapter cache holds LoRA, sparse and sparse+LoRA adapters; a '${method.name}' method is none of them`);
  return one;
}
