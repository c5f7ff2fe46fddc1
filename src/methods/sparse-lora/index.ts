/**
 * Sparse plus low-rank (RoSA, Nikdan et al.): a sparse set trained in place inside the frozen weights and
 * a LoRA adapter beside it, trained together. Published tables show pure sparse fine-tuning losing to
 * LoRA on some tasks while the two together win. The forward pass is the base's plus the adapter's
 * low-rank term; one AdamW step (one global gradient norm) updates both.
 */
import { ShapeError } from '../../errors.js';
import type { TensorView } from '../../gpu/buffers.js';
import type { CommandRecorder } from '../../gpu/recorder.js';
import type { LowRankTerm } from '../../kernels/matmul.js';
import type { Activations } from '../../model/activations.js';
import type { ModelConfig } from '../../model/config.js';
import { AdamW, type AdamWConfig, type Optimizer } from '../../optim/adamw.js';
import { LORA_FIELDS, loraModules, type LoraOptions } from '../lora/config.js';
import { nestedFields } from '../fields.js';
import { prepareMask, withMask } from '../sparse/prepare.js';
import { initMutatesBase } from '../lora/init.js';
import { Lora, loraBase } from '../lora/layer.js';
import type { LinearHooks, Method, MethodDefinition, PassContext, TrainableTensors } from '../method.js';
import { checkSparseOptions, maskNeedsRows, resolveMask, SPARSE_FIELDS, type SparseOptions } from '../sparse/config.js';
import { SparseFineTuning } from '../sparse/layer.js';
import { DELTA_FILE, MASK_FILE, savedMask } from '../sparse/index.js';
import { sparseDeltaFile } from '../sparse/interchange.js';
import { hasSupertuningForm, supertuningAdapterFiles } from '../sparse/supertuning.js';
import { peftAdapterFiles } from '../lora/peft.js';
import { checkOptionKeys, optionKeys } from '../../util/options.js';

export interface SparseLoraOptions {
  /** The sparse part: a mask, or how to choose one (SparseOptions' defaults: Sylva, density 0.01). */
  sparse?: SparseOptions;
  /** The low-rank part (LoraOptions' defaults). */
  lora?: LoraOptions;
}

const SPARSE_LORA_OPTION_KEYS = optionKeys<SparseLoraOptions>()(['sparse', 'lora']);

export class SparseLora implements Method, LinearHooks {
  readonly name = 'sparse+lora';
  readonly linear: LinearHooks = this;
  readonly trainable: TrainableTensors;
  readonly fused: boolean;

  constructor(
    readonly sparse: SparseFineTuning,
    readonly lora: Lora,
  ) {
    this.fused = lora.fused;
    const loraNames = new Set(lora.names);
    this.trainable = {
      names: [...lora.trainable.names, ...sparse.trainable.names],
      param: (n) => (loraNames.has(n) ? lora.trainable.param(n) : sparse.trainable.param(n)),
    };
  }

  has(name: string): boolean {
    return this.lora.has(name) || this.sparse.has(name);
  }

  outputTerm(rec: CommandRecorder, acts: Activations, name: string, x: TensorView, outDim: number, inDim: number, pass: PassContext): LowRankTerm | undefined {
    return this.lora.has(name) ? this.lora.outputTerm(rec, acts, name, x, outDim, inDim, pass) : undefined;
  }

  inputGradTerm(rec: CommandRecorder, acts: Activations, name: string, x: TensorView, dy: TensorView, outDim: number, inDim: number, pass: PassContext): LowRankTerm | undefined {
    return this.lora.has(name) ? this.lora.inputGradTerm(rec, acts, name, x, dy, outDim, inDim, pass) : undefined;
  }

  /** The adapter's grouped products for the modules it adapts; none for those only the sparse part trains. */
  outputTerms(rec: CommandRecorder, acts: Activations, mods: { name: string; outDim: number }[], x: TensorView, inDim: number, pass: PassContext): (LowRankTerm | undefined)[] {
    const adapted = mods.filter((m) => this.lora.has(m.name));
    const terms = adapted.length ? this.lora.outputTerms(rec, acts, adapted, x, inDim, pass) : [];
    return mods.map((m) => terms[adapted.indexOf(m)]);
  }

  inputGradTerms(rec: CommandRecorder, acts: Activations, mods: { name: string; dy: TensorView; outDim: number }[], x: TensorView, inDim: number, pass: PassContext): (LowRankTerm | undefined)[] {
    const adapted = mods.filter((m) => this.lora.has(m.name));
    const terms = adapted.length ? this.lora.inputGradTerms(rec, acts, adapted, x, inDim, pass) : [];
    return mods.map((m) => terms[adapted.indexOf(m)]);
  }

  weightGradient(rec: CommandRecorder, acts: Activations, name: string, x: TensorView, dy: TensorView, outDim: number, inDim: number): boolean {
    return this.sparse.has(name) && this.sparse.weightGradient(rec, acts, name, x, dy, outDim, inDim);
  }

  createOptimizer(config: AdamWConfig): Optimizer {
    return new AdamW(this.sparse.gpu, [this.lora.optimizerGroup(), this.sparse.optimizerGroup()], config);
  }

  zeroGrads(rec: CommandRecorder): void {
    this.lora.zeroGrads(rec);
    this.sparse.zeroGrads(rec);
  }

  /**
   * Merged: the sparse values and the adapter in the weights; unmerged: the base restored. The order
   * matters where both touch an element: the values are written (not added), so they go in first and
   * come out last.
   */
  setMerged(rec: CommandRecorder, merged: boolean): void {
    if (merged) {
      this.sparse.setMerged(rec, true);
      this.lora.setMerged(rec, true);
    } else {
      this.lora.setMerged(rec, false);
      this.sparse.setMerged(rec, false);
    }
  }

  /** Training state: the sparse values in the weights, the adapter beside them. */
  readyToTrain(rec: CommandRecorder): void {
    this.lora.setMerged(rec, false);
    this.sparse.setMerged(rec, true);
  }

  trainableWritten(rec: CommandRecorder): void {
    this.sparse.trainableWritten(rec);
  }

  /** s B A where the adapter is, plus values - originals at the mask. */
  deltaWeight(rec: CommandRecorder, weight: string, out: TensorView): boolean {
    const module = weight.replace(/\.weight$/, '');
    const low = this.lora.deltaWeight(rec, weight, out);
    const sparse = weight.endsWith('.weight') && this.sparse.mask.entries.has(module);
    if (!sparse) return low;
    if (!low) rec.clear(out);
    this.sparse.addDelta(rec, module, out);
    return true;
  }

  interchangeName(name: string): string | null {
    return this.lora.interchangeName(name);
  }

  fromInterchangeName(name: string): string | null {
    return this.lora.fromInterchangeName(name);
  }

  destroy(): void {
    this.lora.destroy();
    this.sparse.destroy();
  }
}

/** The part of a method that trains in place at a mask (sparse itself, or sparse+lora's sparse set), or null. */
export function sparsePart(method: Method): SparseFineTuning | null {
  if (method instanceof SparseFineTuning) return method;
  return method instanceof SparseLora ? method.sparse : null;
}

/** The LoRA adapter of a method (LoRA itself, or sparse+lora's low-rank part), or null. */
export function loraPart(method: Method): Lora | null {
  if (method instanceof Lora) return method;
  return method instanceof SparseLora ? method.lora : null;
}

export const sparseLora: MethodDefinition<SparseLoraOptions> = {
  name: 'sparse+lora',
  summary: 'a sparse set trained in place plus a LoRA adapter, together (RoSA-style)',
  // Not DoRA (its norms measure the base weight once, and the sparse values train inside it), nor the
  // initializations that rewrite the base the mask was chosen on.
  fields: [...nestedFields('sparse', SPARSE_FIELDS), ...nestedFields('lora', LORA_FIELDS.filter((f) => !['dora', 'init', 'pissa-niter'].includes(f.name)))],
  learningRate: 2e-4,
  prepare: {
    needed: (options) => maskNeedsRows(options?.sparse),
    run: async (options, context) => {
      const { options: sparse, report } = await prepareMask(options?.sparse, context);
      return { options: { ...options, sparse }, report };
    },
  },
  check: (config: ModelConfig, options) => {
    checkOptionKeys('sparse+lora options', options, SPARSE_LORA_OPTION_KEYS);
    checkSparseOptions(config, options?.sparse);
    loraModules(config, options?.lora);
    if (options?.lora?.dora) throw new ShapeError('sparse+lora does not combine with DoRA: DoRA measures the base weights once, and the sparse values train inside them');
    if (initMutatesBase(options?.lora?.init)) throw new ShapeError(`sparse+lora does not combine with the ${options!.lora!.init} initialization, which rewrites the base weights the sparse values train inside`);
  },
  baseTrainable: () => () => false,
  writesBase: true,
  attach: (model, options) => {
    const sparse = new SparseFineTuning(model.gpu, model, resolveMask(model.config, options?.sparse));
    try {
      return new SparseLora(sparse, new Lora(model.gpu, model.config, options?.lora ?? {}, loraBase(model)));
    } catch (e) {
      sparse.destroy();
      throw e;
    }
  },
  checkpointFiles: (method, config) => ({ [MASK_FILE]: (method as SparseLora).sparse.mask.toSafetensors(config) }),
  // Both parts in their own formats: the sparse delta, and the LoRA part as PEFT's adapter.
  // The engine's delta file beside one PEFT adapter holding both parts (Super-Tuning's Supra mode); on
  // GPT-2, which Super-Tuning cannot adapt, the LoRA part alone as PEFT's LoRA files.
  exportFiles: async (method, config, o) => {
    const { sparse, lora } = method as SparseLora;
    const adapter = hasSupertuningForm(config) ? await supertuningAdapterFiles(sparse, config, { ...o, lora }) : await peftAdapterFiles(lora, o);
    return { [DELTA_FILE]: await sparseDeltaFile(sparse, config), ...adapter };
  },
  restoreOptions: async (options, files, config) => ({ ...options, sparse: withMask(await savedMask(files, config)) }),
};
