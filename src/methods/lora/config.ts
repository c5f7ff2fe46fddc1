/** LoRA's options, their defaults and fields (the command line's flags, the demo's form), and the check made before any weight is loaded. */
import { ShapeError } from '../../errors.js';
import type { ModelConfig } from '../../model/config.js';
import { checkOptionKeys, optionKeys } from '../../util/options.js';
import { fusedModules, hfModulePaths, linearModules, type LinearShape } from '../targets.js';
import type { OptionField } from '../fields.js';
import { checkLoraInit, LORA_INITS, type LoraInit } from './init.js';

export interface LoraOptions {
  /** Rank r of the update B A. Default 16. */
  rank?: number;
  /**
   * Scale numerator: s = alpha / rank (alpha / sqrt(rank) with rslora). Default 2 * rank, this engine's
   * choice (PEFT's is a fixed 8): a scale of 2 whatever the rank, so trying another rank keeps the step.
   */
  alpha?: number;
  /** Rank-stabilized scale alpha / sqrt(rank) (PEFT's use_rslora). Default false. */
  rslora?: boolean;
  /**
   * Per-module ranks and alphas (PEFT's rank_pattern and alpha_pattern): each key is a pattern matched
   * against the end of a module's Hugging Face path ('q_proj', 'model.layers.0.self_attn.q_proj') or its
   * engine name ('layers.0.q'), the first matching key wins; other modules take rank and alpha.
   */
  rankPattern?: Record<string, number>;
  alphaPattern?: Record<string, number>;
  /**
   * Linear layers to adapt, by engine name (q, k, v, o, gate, up, down, fc, proj), Hugging Face module
   * name (q_proj, ..., down_proj) or 'all-linear'. Default 'all-linear', as QLoRA found best (PEFT's
   * own default is q and v for Llama).
   */
  targetModules?: string[];
  /** Dropout on the adapter's input while training (PEFT's lora_dropout). Default 0. */
  dropout?: number;
  /** Seed of A's initialization and of the dropout masks. Default 0. */
  seed?: number;
  /**
   * Weight-decomposed LoRA (DoRA, PEFT's use_dora): a trained magnitude per output row times the
   * direction W + s B A over its norm (./dora.ts). Not with dropout. Default false.
   */
  dora?: boolean;
  /**
   * How A and B start (PEFT's init_lora_weights, ./init.ts): 'kaiming' (PEFT's default) or 'gaussian'
   * with B = 0; or 'pissa' / 'olora' from the base weight's top singular vectors or QR, the base replaced
   * by the residual (an f32 base; saved adapters are converted to plain LoRA on the original base).
   * Default 'kaiming'.
   */
  init?: LoraInit;
  /** PiSSA by this many iterations of randomized SVD (PEFT's "pissa_niter_K"); absent: the exact SVD. */
  pissaNiter?: number;
  /**
   * LoRA+ (Hayou et al.; PEFT's create_loraplus_optimizer, peft/optimizers/loraplus.py): B, and DoRA's
   * magnitude (PEFT's one-dimensional parameters), learn at this multiple of A's rate. The paper
   * suggests 16 with a rate about half plain LoRA's. Default 1: plain LoRA.
   */
  loraplusLrRatio?: number;
  /**
   * Fuse the adapter's path into the base layer's matmul (its store adds s (x A^T) B^T, and du A in
   * backward) rather than running it as a separate pass over the output. Default true.
   */
  fused?: boolean;
}

/** The widest layer (its smaller side) whose exact SVD PiSSA computes on the host. */
export const EXACT_PISSA_LIMIT = 1024;

/** The defaults the fields below state; the code below applies them. */
export const LORA_DEFAULT_RANK = 16;
export const LORA_DEFAULT_TARGETS: readonly string[] = ['all-linear'];

/** The alpha of a rank when none is given: 2 * rank, a scale of 2 (see LoraOptions.alpha). */
export function defaultLoraAlpha(rank: number): number {
  return 2 * rank;
}

/** LoRA's options as a user sets them (see OptionField). */
export const LORA_FIELDS: readonly OptionField[] = [
  { name: 'rank', path: ['rank'], kind: 'integer', min: 1, max: 65536, default: LORA_DEFAULT_RANK, help: 'LoRA rank r' },
  { name: 'alpha', path: ['alpha'], kind: 'number', above: 0, shownDefault: '2 x rank', help: 'LoRA alpha: the update is scaled by alpha / rank' },
  { name: 'dropout', path: ['dropout'], kind: 'number', min: 0, max: 0.99, default: 0, help: 'LoRA dropout on the adapter\'s input while training' },
  { name: 'dora', path: ['dora'], kind: 'boolean', default: false, help: 'DoRA: train a magnitude per output row beside the low-rank direction (PEFT\'s use_dora)' },
  { name: 'init', path: ['init'], kind: 'choice', choices: LORA_INITS, default: 'kaiming', help: 'how A and B start: kaiming, gaussian (B = 0), or pissa, olora (from the base weight, which becomes the residual)' },
  { name: 'pissa-niter', path: ['pissaNiter'], kind: 'integer', min: 0, max: 1000, shownDefault: 'exact SVD', appliesWhen: [{ field: 'init', is: ['pissa'] }], help: 'PiSSA by this many iterations of randomized SVD (fast on large layers)' },
  { name: 'loraplus-lr-ratio', path: ['loraplusLrRatio'], kind: 'number', above: 0, max: 1e4, default: 1, help: 'LoRA+: B learns at this multiple of A\'s rate (16 in the paper; 1 is plain LoRA)' },
  { name: 'target-modules', path: ['targetModules'], kind: 'list', default: LORA_DEFAULT_TARGETS, help: 'layers LoRA adapts: all-linear, or names such as q_proj,v_proj' },
];

export const LORA_OPTION_KEYS = optionKeys<LoraOptions>()(['rank', 'alpha', 'rslora', 'rankPattern', 'alphaPattern', 'targetModules', 'dropout', 'seed', 'fused', 'dora', 'loraplusLrRatio', 'init', 'pissaNiter']);

/**
 * Validates options against a model config without allocating anything (so a bad rank or target fails
 * before a model is loaded) and returns the adapted modules with their shapes.
 */
export function loraModules(config: ModelConfig, options: LoraOptions = {}): Map<string, LinearShape> {
  checkOptionKeys('LoRA options', options, LORA_OPTION_KEYS);
  const r = options.rank ?? LORA_DEFAULT_RANK;
  if (!Number.isInteger(r) || r < 1) throw new ShapeError(`LoRA rank must be a positive integer, got ${r}`);
  const p = options.dropout ?? 0;
  if (!(p >= 0 && p < 1)) throw new ShapeError(`LoRA dropout must be in [0, 1), got ${p}`);
  if (options.dora !== undefined && typeof options.dora !== 'boolean') throw new ShapeError(`LoRA dora must be true or false, got ${String(options.dora)}`);
  // PEFT's DoRA under dropout adds a second base product of the dropped input ((m / n - 1) W x'), not implemented here.
  if (options.dora && p > 0) throw new ShapeError(`DoRA with dropout (${p}) is not supported: train DoRA with dropout 0`);
  checkLoraInit(options.init, options.pissaNiter);
  const ratio = options.loraplusLrRatio;
  if (ratio !== undefined && !(Number.isFinite(ratio) && ratio > 0 && ratio <= 1e4)) throw new ShapeError(`LoRA+ lr ratio must be a number > 0 and <= 10000, got ${ratio}`);
  if (options.alpha !== undefined && !(Number.isFinite(options.alpha) && options.alpha > 0)) throw new ShapeError(`LoRA alpha must be a positive number, got ${options.alpha}`);
  for (const [key, v] of Object.entries(options.rankPattern ?? {})) {
    patternRegExp(key);
    if (!Number.isInteger(v) || v < 1) throw new ShapeError(`LoRA rankPattern['${key.slice(0, 60)}'] must be a positive integer, got ${v}`);
  }
  for (const [key, v] of Object.entries(options.alphaPattern ?? {})) {
    patternRegExp(key);
    if (!(Number.isFinite(v) && v > 0)) throw new ShapeError(`LoRA alphaPattern['${key.slice(0, 60)}'] must be a positive number, got ${v}`);
  }
  const modules = linearModules(config, options.targetModules ?? [...LORA_DEFAULT_TARGETS], 'LoRA');
  if (options.dora) {
    // PEFT's DoRA has one magnitude per fused module (GPT-2's c_attn): its parts train together or not at all.
    for (const [hf, parts] of fusedModules(config)) {
      const adapted = parts.filter((p) => modules.has(p));
      if (adapted.length && adapted.length < parts.length) throw new ShapeError(`DoRA on ${adapted.map((p) => p.split('.')[2]).join(', ')} without ${parts.filter((p) => !modules.has(p)).map((p) => p.split('.')[2]).join(', ')}: PEFT adapts ${hf.split('.').at(-1)} as one module, so adapt all of its parts`);
    }
  }
  if (options.init === 'pissa' && options.pissaNiter === undefined) {
    // The exact SVD runs on the host in O(min(in, out)^3): seconds at 512, hours at 4096.
    const widest = Math.max(...[...modules.values()].map((d) => Math.min(d.in, d.out)));
    if (widest > EXACT_PISSA_LIMIT) throw new ShapeError(`exact PiSSA of a layer ${widest} wide would take too long on the host (at most ${EXACT_PISSA_LIMIT}): give pissaNiter (randomized SVD, PEFT's "pissa_niter_K"), e.g. 4`);
  }
  // A rank above a layer's smaller side adds parameters and no expressiveness: B A cannot exceed it.
  const hf = hfModulePaths(config);
  for (const [name, shape] of modules) {
    const rank = patternValue(options.rankPattern, [name, ...(hf.has(name) ? [hf.get(name)!] : [])]) ?? r;
    const most = Math.min(shape.in, shape.out);
    if (rank > most) throw new ShapeError(`LoRA rank ${rank} exceeds what '${name}' (${shape.out}x${shape.in}) can hold: at most ${most}`);
  }
  return modules;
}

export interface LoraModuleSpec extends LinearShape {
  rank: number;
  alpha: number;
  /** alpha / rank, or alpha / sqrt(rank) with rslora. */
  scale: number;
}

/** LoRA's scale: alpha / rank, or alpha / sqrt(rank) for rank-stabilized LoRA. */
export function loraScale(alpha: number, rank: number, rslora = false): number {
  return alpha / (rslora ? Math.sqrt(rank) : rank);
}

/** The adapted modules (checked as loraModules does) with each one's rank, alpha and scale after the patterns. */
export function loraModuleSpecs(config: ModelConfig, options: LoraOptions = {}): Map<string, LoraModuleSpec> {
  const r = options.rank ?? LORA_DEFAULT_RANK;
  const alpha = options.alpha ?? defaultLoraAlpha(r);
  const hf = hfModulePaths(config);
  return new Map(
    [...loraModules(config, options)].map(([name, d]) => {
      const names = [name, ...(hf.has(name) ? [hf.get(name)!] : [])];
      const rank = patternValue(options.rankPattern, names) ?? r;
      const a = patternValue(options.alphaPattern, names) ?? alpha;
      return [name, { ...d, rank, alpha: a, scale: loraScale(a, rank, options.rslora) }];
    }),
  );
}

/** A rank or alpha pattern key as PEFT matches it: the whole name, or its end after a dot. */
function patternRegExp(key: string): RegExp {
  if (key.length === 0 || key.length > 200) throw new ShapeError(`a LoRA pattern key must be 1 to 200 characters, got ${key.length}`);
  try {
    return new RegExp(`^(?:.*\\.)?(?:${key})$`);
  } catch {
    throw new ShapeError(`the LoRA pattern key '${key.slice(0, 60)}' is not a valid regular expression`);
  }
}

/** The value of the first pattern key matching any of a module's names, or undefined. */
export function patternValue(pattern: Record<string, number> | undefined, names: string[]): number | undefined {
  for (const [key, v] of Object.entries(pattern ?? {})) {
    const re = patternRegExp(key);
    if (names.some((n) => re.test(n))) return v;
  }
  return undefined;
}
