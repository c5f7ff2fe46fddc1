/**
 * A sparse fine-tuning mask: for each targeted linear weight [out, in], the positions that train.
 * Element masks keep sorted, unique flat indices o * in + i; block masks keep sorted block ids
 * (o / b) * (in / b) + (i / b) of square b x b blocks (Sylva's granularity: block-sparse products run at
 * dense speed). Values are laid out in "value order": element masks in index order, block masks block
 * by block, row-major inside a block, so the block gradient kernel writes each block contiguously.
 *
 * The file is safetensors: one U32 tensor per Hugging Face weight name holding the sorted flat element
 * indices in that tensor's own layout (GPT-2's Conv1D c_attn: transposed, q, k and v side by side), so
 * other tools can read it; block masks are stored as their elements and regrouped on load. Metadata:
 * format, selection method, density, granularity, budget, calibration token count, and the base model's
 * fingerprint (config and shapes digest, weights digest). Loading a mask for another model is an error.
 */
import { ModelMismatchError, ShapeError } from '../../errors.js';
import { bytesSource } from '../../io/bytes.js';
import { InvalidModelFileError, readHeader, readIndexTensor, writeSafetensors, type TensorToWrite } from '../../io/safetensors.js';
import type { ModelConfig } from '../../model/config.js';
import { shapesDigest, type ModelFingerprint } from '../../model/fingerprint.js';
import { hfMappings, paramSpecs, type HfMapping } from '../../model/layout.js';
import { validateMask } from '../../kernels/sparse.js';

export const BLOCK_SIZES = [16, 32, 64] as const;
export type BlockSize = (typeof BLOCK_SIZES)[number];
/** 'element', or square blocks of that side. */
export type Granularity = 'element' | BlockSize;

export interface MaskEntry {
  /** The weight's shape [out, in]. */
  rows: number;
  cols: number;
  /** Element masks: sorted flat element indices. Block masks: sorted block ids. */
  indices: Uint32Array;
}

/** How a mask was made; saved in its file. */
export interface MaskInfo {
  /** Selection method ('sylva', 'fisher', 'snip', 'random', 'columns', or 'file' for imported). */
  selection: string;
  /** Budget scope: 'per-matrix' or 'global'. */
  budget: 'per-matrix' | 'global';
  /** Tokens of calibration data the selection saw (0 for data-free selections). */
  calibrationTokens: number;
  /**
   * The base model it was selected on. Data-free selections (random, columns) leave `weights` empty:
   * they fit any weights of the shapes. Null for a hand-made mask checked by shapes alone.
   */
  fingerprint: ModelFingerprint | null;
}

const FORMAT = 'webgpu-finetune-sparse-mask';

export class SparseMask {
  constructor(
    readonly granularity: Granularity,
    /** By engine module name ('layers.0.q'), in model order. */
    readonly entries: ReadonlyMap<string, MaskEntry>,
    readonly info: MaskInfo,
  ) {
    for (const [module, e] of entries) checkEntry(module, e, granularity);
  }

  get blockSize(): number {
    return this.granularity === 'element' ? 1 : this.granularity;
  }

  /** Trainable values of one module's mask (elements; a block holds blockSize^2). */
  nnz(module: string): number {
    return this.entries.get(module)!.indices.length * this.blockSize ** 2;
  }

  get totalNnz(): number {
    return [...this.entries.keys()].reduce((s, m) => s + this.nnz(m), 0);
  }

  /** Selected fraction of the targeted weights' elements. */
  get density(): number {
    const all = [...this.entries.values()].reduce((s, e) => s + e.rows * e.cols, 0);
    return all ? this.totalNnz / all : 0;
  }

  /** Flat element indices o * in + i of one module in value order (block by block for block masks). */
  valueIndices(module: string): Uint32Array {
    const e = this.entries.get(module)!;
    if (this.granularity === 'element') return e.indices;
    const b = this.granularity;
    const perRow = e.cols / b;
    const out = new Uint32Array(e.indices.length * b * b);
    let at = 0;
    for (const id of e.indices) {
      const o0 = Math.floor(id / perRow) * b;
      const i0 = (id % perRow) * b;
      for (let r = 0; r < b; r++) for (let c = 0; c < b; c++) out[at++] = (o0 + r) * e.cols + i0 + c;
    }
    return out;
  }

  /** Sorted flat element indices of one module (the element set, whatever the granularity). */
  elementIndices(module: string): Uint32Array {
    return this.granularity === 'element' ? this.entries.get(module)!.indices : this.valueIndices(module).slice().sort();
  }

  /**
   * Throws unless the mask fits the model: its modules exist with these shapes, and a mask selected on
   * a base (fingerprint) is used on that base (same config, shapes and weights).
   */
  checkModel(config: ModelConfig, fingerprint?: ModelFingerprint): void {
    const specs = new Map(paramSpecs(config).map((s) => [s.name, s.shape]));
    for (const [module, e] of this.entries) {
      const shape = specs.get(`${module}.weight`);
      if (!shape) throw new ModelMismatchError(`sparse mask: '${module}' is not a linear layer of this ${config.architecture} model`);
      if (shape[0] !== e.rows || shape[1] !== e.cols) {
        throw new ModelMismatchError(`sparse mask: '${module}' is ${e.rows}x${e.cols} in the mask but ${shape[0]}x${shape[1]} in this model`);
      }
    }
    const f = this.info.fingerprint;
    if (!f) return;
    if (f.shapes !== shapesDigest(config)) throw new ModelMismatchError('sparse mask was selected on a model with another configuration or shapes');
    if (f.weights && fingerprint && f.weights !== fingerprint.weights) {
      throw new ModelMismatchError(`sparse mask was selected on other weights (base ${f.weights}, this model ${fingerprint.weights}): select a mask on this base`);
    }
  }

  /** The mask as a safetensors file (see the module comment). */
  toSafetensors(config: ModelConfig): Uint8Array {
    const tensors: Record<string, TensorToWrite> = {};
    for (const [hfName, e] of hfElements(this, config)) tensors[hfName] = { dtype: 'U32', shape: [e.hf.length], data: e.hf };
    return writeSafetensors(tensors, this.metadata(FORMAT));
  }

  /** Read a mask file for a model of this config; anything malformed or for another model is an error. */
  static async fromSafetensors(bytes: Uint8Array, config: ModelConfig, name = 'sparse mask'): Promise<SparseMask> {
    const source = bytesSource(name, bytes);
    const header = await readHeader(source);
    const meta = header.metadata;
    if (meta.format !== FORMAT) throw new InvalidModelFileError(name, `is not a sparse mask file (metadata format '${String(meta.format).slice(0, 60)}')`, 'metadata');
    const { granularity, info } = maskMetadata(name, meta, config);
    const tensors = header.tensors.map((t) => ({ hfName: t.name, read: () => readIndexTensor(source, t), shape: t.shape }));
    const { entries } = await readHfIndices(name, config, tensors, granularity);
    return new SparseMask(granularity, entries, info);
  }

  /** The metadata a file carrying this mask records (mask and delta files). */
  metadata(format: string): Record<string, string> {
    const f = this.info.fingerprint;
    return {
      format,
      selection: this.info.selection,
      density: String(this.density),
      granularity: String(this.granularity),
      budget: this.info.budget,
      calibration_tokens: String(this.info.calibrationTokens),
      base_shapes: f?.shapes ?? '',
      base_weights: f?.weights ?? '',
    };
  }
}

/** Granularity and MaskInfo from a mask or delta file's metadata, checked against the model's shapes. */
export function maskMetadata(file: string, meta: Record<string, string>, config: ModelConfig): { granularity: Granularity; info: MaskInfo } {
  const granularity: Granularity = meta.granularity === 'element' ? 'element' : (Number(meta.granularity) as BlockSize);
  if (granularity !== 'element' && !BLOCK_SIZES.includes(granularity)) throw new InvalidModelFileError(file, `unknown granularity '${String(meta.granularity).slice(0, 20)}'`, 'metadata');
  const tokens = Number(meta.calibration_tokens ?? 0);
  if (!Number.isInteger(tokens) || tokens < 0) throw new InvalidModelFileError(file, 'metadata calibration_tokens is not a count', 'metadata');
  const fingerprint = meta.base_shapes ? { shapes: meta.base_shapes, weights: meta.base_weights ?? '' } : null;
  if (fingerprint && fingerprint.shapes !== shapesDigest(config)) throw new ModelMismatchError(`${file} was made for a model with another configuration or shapes`);
  const budget = meta.budget === 'global' ? 'global' : 'per-matrix';
  return { granularity, info: { selection: String(meta.selection ?? 'file'), budget, calibrationTokens: tokens, fingerprint } };
}

/** A mask's elements in one Hugging Face tensor: sorted flat indices in its layout, and each one's origin. */
export interface HfElements {
  hf: Uint32Array;
  /** Engine module ('layers.0.k') and flat index in its weight, per element. */
  module: string[];
  flat: Uint32Array;
}

/** The mask's elements per Hugging Face tensor it touches (GPT-2's c_attn joins q, k and v), sorted. */
export function hfElements(mask: SparseMask, config: ModelConfig): Map<string, HfElements> {
  const out = new Map<string, HfElements>();
  for (const m of hfMappings(config)) {
    const modules = m.parts.map((p) => p.replace(/\.weight$/, ''));
    if (!m.parts.every((p) => p.endsWith('.weight')) || !modules.some((mod) => mask.entries.has(mod))) continue;
    const starts = partStarts(m);
    const items = modules.flatMap((mod, part) => (mask.entries.has(mod) ? Array.from(mask.elementIndices(mod), (f) => ({ hf: engineToHf(m, starts, part, f), mod, f })) : []));
    items.sort((a, b) => a.hf - b.hf);
    out.set(m.hfName, { hf: Uint32Array.from(items, (i) => i.hf), module: items.map((i) => i.mod), flat: Uint32Array.from(items, (i) => i.f) });
  }
  return out;
}

/** An index tensor of a file, by the Hugging Face weight it indexes. */
export interface HfIndexTensor {
  hfName: string;
  shape: number[];
  read(): Promise<Uint32Array>;
}

/**
 * Mask entries (in model order) from sorted flat indices per Hugging Face weight, regrouped into blocks
 * for block masks, with each file element's origin (aligned with the file's order) for files that carry
 * values beside the indices. Everything is checked: the weight exists and is linear, the indices are 1-D,
 * sorted, unique and in range, and block masks hold whole blocks.
 */
export async function readHfIndices(file: string, config: ModelConfig, tensors: HfIndexTensor[], granularity: Granularity): Promise<{ entries: Map<string, MaskEntry>; elements: Map<string, HfElements> }> {
  const specs = new Map(paramSpecs(config).map((s) => [s.name, s.shape]));
  const mappings = new Map(hfMappings(config).map((m) => [m.hfName, m]));
  const found = new Map<string, MaskEntry>();
  const elements = new Map<string, HfElements>();
  for (const t of tensors) {
    const m = mappings.get(t.hfName);
    if (!m || !m.parts.every((p) => p.endsWith('.weight') && specs.get(p)!.length === 2)) throw new ModelMismatchError(`${file}: '${t.hfName.slice(0, 120)}' is not a linear weight of this ${config.architecture} model`);
    if (t.shape.length !== 1) throw new InvalidModelFileError(file, `the indices of '${t.hfName}' must be 1-D`, 'shape');
    const hf = await t.read();
    try {
      validateMask(hf, m.hfShape[0], m.hfShape[1]);
    } catch (e) {
      throw new InvalidModelFileError(file, `'${t.hfName}': ${(e as Error).message}`);
    }
    const module: string[] = [];
    const flat = new Uint32Array(hf.length);
    const perPart = m.parts.map(() => [] as number[]);
    const starts = partStarts(m);
    hf.forEach((f, i) => {
      const [part, at] = hfToEngine(m, starts, f);
      perPart[part].push(at);
      module.push(m.parts[part].replace(/\.weight$/, ''));
      flat[i] = at;
    });
    elements.set(t.hfName, { hf, module, flat });
    m.parts.forEach((p, part) => {
      if (!perPart[part].length) return;
      const [out, inDim] = specs.get(p)!;
      const sorted = Uint32Array.from(perPart[part]).sort();
      found.set(p.replace(/\.weight$/, ''), { rows: out, cols: inDim, indices: granularity === 'element' ? sorted : toBlocks(file, p, sorted, out, inDim, granularity) });
    });
  }
  const order = paramSpecs(config).map((s) => s.name.replace(/\.weight$/, ''));
  return { entries: new Map(order.filter((m) => found.has(m)).map((m) => [m, found.get(m)!])), elements };
}

function checkEntry(module: string, e: MaskEntry, g: Granularity): void {
  if (g === 'element') return validateMask(e.indices, e.rows, e.cols);
  if (e.rows % g || e.cols % g) throw new ShapeError(`sparse mask: ${g}x${g} blocks do not tile '${module}' (${e.rows}x${e.cols}); choose a block size that divides both`);
  validateMask(e.indices, e.rows / g, e.cols / g);
}

/** Block ids of an element set made of whole blocks; anything else is an error. */
function toBlocks(file: string, weight: string, elements: Uint32Array, rows: number, cols: number, b: number): Uint32Array {
  if (rows % b || cols % b) throw new InvalidModelFileError(file, `${b}x${b} blocks do not tile '${weight}' (${rows}x${cols})`);
  const perRow = cols / b;
  const ids = new Set<number>();
  for (const f of elements) ids.add(Math.floor(Math.floor(f / cols) / b) * perRow + Math.floor((f % cols) / b));
  if (ids.size * b * b !== elements.length) throw new InvalidModelFileError(file, `the indices of '${weight}' are not whole ${b}x${b} blocks`);
  return Uint32Array.from(ids).sort();
}

/** The first row of each part in the Hugging Face tensor (parts stack along out). */
const partStarts = (m: HfMapping) => m.partRows.map((_, i) => m.partRows.slice(0, i).reduce((a, b) => a + b, 0));

/** Flat index in the Hugging Face tensor of element `flat` of engine part `part` (parts stack along out, from `starts`). */
function engineToHf(m: HfMapping, starts: number[], part: number, flat: number): number {
  const [rowsTotal, inDim] = m.transpose ? [m.hfShape[1], m.hfShape[0]] : m.hfShape;
  const row = starts[part] + Math.floor(flat / inDim);
  const col = flat % inDim;
  return m.transpose ? col * rowsTotal + row : row * inDim + col;
}

function hfToEngine(m: HfMapping, starts: number[], hf: number): [number, number] {
  const [rowsTotal, inDim] = m.transpose ? [m.hfShape[1], m.hfShape[0]] : m.hfShape;
  const row = m.transpose ? hf % rowsTotal : Math.floor(hf / inDim);
  const col = m.transpose ? Math.floor(hf / rowsTotal) : hf % inDim;
  let part = 0;
  while (part + 1 < starts.length && starts[part + 1] <= row) part++;
  return [part, (row - starts[part]) * inDim + col];
}
