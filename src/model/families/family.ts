/**
 * A model family: its architecture name, the fields its transformers config class has, its parser, and
 * the parts of the forward and backward passes in which it differs from the other families.
 */
import type { TensorView } from '../../gpu/buffers.js';
import type { CommandRecorder } from '../../gpu/recorder.js';
import type { Activations, GradientScratch, LayerActivations } from '../activations.js';
import type { ModelConfig } from '../config.js';
import type { GeluKind } from '../../kernels/activation.js';
import type { FieldTable } from '../hf-config.js';
import type { Json } from '../hf-config.js';
import type { ParamAccess } from '../transformer.js';

type View = TensorView;

/** What a family's parser decides of a ModelConfig: everything but what every family reads the same way. */
export type FamilyPart = Omit<ModelConfig, 'architecture' | 'raw' | 'bosTokenId' | 'eosTokenIds' | 'quantization' | 'warnings'>;

export interface FamilyConfig {
  readonly architecture: ModelConfig['architecture'];
  /** The model_type transformers gives the family. */
  readonly modelType: string;
  /** Every field of the family's transformers config class (4.x and 5.x) and how the engine treats it. */
  readonly fields: FieldTable;
  /** The family's part of ModelConfig; notes where the engine departs from transformers go to `warnings`. */
  parse(raw: Json, warnings: string[]): FamilyPart;
  /** Its parts of the passes, calling back into the transformer through `ops`. */
  parts(ops: DecoderOps): FamilyParts;
}

/** What a family's parts call in the transformer that records them. */
export interface DecoderOps {
  readonly config: ModelConfig;
  readonly params: ParamAccess;
  /**
   * y = x W^T (+ b) (+ the fine-tuning method's term) for the linear layer `name`; with `activation`,
   * also its GELU into `activation.out` (in the product's store where it can be).
   */
  linear(rec: CommandRecorder, acts: Activations, x: View, name: string, y: View, outDim: number, inDim: number, activation?: { kind: GeluKind; out: View }): void;
  /** Its backward: dx (= or, with accumulateDx, +=) and the weight's gradient (+=). */
  linearBackward(rec: CommandRecorder, acts: Activations, x: View, name: string, dy: View, dx: View, outDim: number, inDim: number, accumulateDx?: boolean): void;
  /** Layer i's RoPE table for this batch (LongRoPE's long one when the batch reaches past the context). */
  ropeTable(layer: number, acts: Activations): GPUBuffer;
}

/** What differs between the families, chosen once: how positions enter, and the MLP. */
export interface FamilyParts {
  /**
   * The parameter of learned absolute position embeddings (GPT-2), which the transformer adds in the token
   * embedding's pass; none for RoPE models.
   */
  readonly positionEmbedding?: string;
  /** Rotates layer i's queries and keys (RoPE; backward: their gradients by the inverse); nothing for GPT-2. */
  rotate(rec: CommandRecorder, acts: Activations, layer: number, q: View, k: View, backward: boolean): void;
  /** The MLP's input projections of ln2 (fc, or gate and up), then mlpActivate. */
  mlpUp(rec: CommandRecorder, acts: Activations, L: string, l: LayerActivations): void;
  /** h = the activation of those projections (GELU, or SwiGLU); backward recomputes it (see Activations). */
  mlpActivate(rec: CommandRecorder, acts: Activations, l: LayerActivations): void;
  /**
   * From dh, the gradients of the input projections, written (and accumulated) into dln; with
   * `activationDone`, da already holds the gradient through `activation` (see below).
   */
  mlpUpBackward(rec: CommandRecorder, acts: Activations, L: string, l: LayerActivations, g: GradientScratch, activationDone?: boolean): void;
  /**
   * The MLP's activation when it is one GELU from a to h (GPT-2): the transformer may then write the down
   * projection's input gradient through its derivative straight into da.
   */
  readonly activation?: GeluKind;
  /** The MLP's output projection: 'proj' (GPT-2) or 'down'. */
  readonly down: string;
}
