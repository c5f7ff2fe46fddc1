/**
 * LoRA adapters in Hugging Face PEFT's files: `adapter_config.json` and `adapter_model.safetensors` as
 * `PeftModel.from_pretrained` reads them. Tensors are `base_model.model.<module>.lora_A.weight` [r, in]
 * and `...lora_B.weight` [out, r] (PEFT saves them without the adapter name), F32, with the safetensors
 * metadata {"format": "pt"}; the scale is lora_alpha / r (lora_alpha / sqrt(r) with use_rslora), with
 * rank_pattern and alpha_pattern giving modules their own r and lora_alpha. GPT-2's Conv1D layers take the
 * same shapes with fan_in_fan_out true. Its q, k and v are one fused c_attn in Hugging Face: adapters on
 * them go out as one c_attn adapter whose A stacks theirs and whose B is block-diagonal (rank the sum of
 * theirs, the same product exactly), and a c_attn adapter comes in as q, k and v adapters that share its A
 * and each take their rows of its B. DoRA (use_dora) adds `...lora_magnitude_vector` [out] per module
 * (PEFT saves that parameter without '.weight'); a fused module's is the parts' stacked by rows.
 */
import { ShapeError, UnsupportedAdapterError } from '../../errors.js';
import { bytesSource } from '../../io/bytes.js';
import { InvalidModelFileError, readHeader, readTensorF32, writeSafetensors, type TensorToWrite } from '../../io/safetensors.js';
import { brief, JsonNumber, parseStrictJson, type StrictJson } from '../../io/strict-json.js';
import type { ModelConfig } from '../../model/config.js';
import { fusedModules, hfModulePaths, linearModules } from '../targets.js';
import { defaultLoraAlpha, patternValue, type LoraOptions } from './config.js';
import { checkLoraConfigFields, REPEATABLE_INITS } from './peft-config.js';
import { peftInitName } from './init.js';
import type { Lora } from './layer.js';

/** One module of an adapter as PEFT names and applies it (a fused module's parts joined). */
export interface PeftLoraModule {
  /** Hugging Face module path ('model.layers.0.self_attn.q_proj'). */
  path: string;
  /** [rank, in] and [out, rank]. */
  A: Float32Array;
  B: Float32Array;
  /** DoRA's magnitude [out], or null. */
  magnitude: Float32Array | null;
  out: number;
  in: number;
  rank: number;
  /** lora_alpha as PEFT reads it (alpha / rank, or alpha / sqrt(rank) with rslora, is `scale`). */
  alpha: number;
  scale: number;
}

/**
 * The adapter's modules as PEFT applies them to the original base, with the rank and alpha its
 * adapter_config.json states for the rest. PiSSA and OLoRA, trained on the residual W - s B0 A0, come
 * converted as PEFT converts them (save_pretrained(path_initial_model_for_weight_conversion=...),
 * peft/tuners/lora/model.py subtract_mutated_init): plain LoRA of rank 2r, s [B, -B0] [A; A0].
 */
export async function peftLoraModules(lora: Lora): Promise<{ modules: PeftLoraModule[]; rank: number; alpha: number }> {
  const rslora = lora.options.rslora ?? false;
  const k = lora.initial ? 2 : 1;
  // A rank-kr module keeps its scale: alpha' = s kr, or s sqrt(kr) with rslora.
  const alphaOf = (scale: number, rank: number) => (rslora ? scale * Math.sqrt(rank) : scale * rank);
  const spec = (module: string) => {
    const d = lora.modules.get(module)!;
    return { out: d.out, in: d.in, rank: k * d.rank, scale: d.scale, alpha: lora.initial ? alphaOf(d.scale, k * d.rank) : d.alpha };
  };
  const read = async (module: string, t: 'A' | 'B' | 'magnitude'): Promise<Float32Array> =>
    t === 'magnitude' ? lora.gpu.readF32(lora.params.view(`${module}.lora_magnitude`)) : (await lora.factors(module))[t];
  const dora = lora.dora !== null;
  const modules: PeftLoraModule[] = [];
  const paths = hfModulePaths(lora.config);
  const shapes = linearModules(lora.config, ['all-linear'], 'LoRA');
  for (const module of lora.modules.keys()) {
    if (!paths.has(module)) continue;
    modules.push({ path: paths.get(module)!, A: await read(module, 'A'), B: await read(module, 'B'), magnitude: dora ? await read(module, 'magnitude') : null, ...spec(module) });
  }
  for (const [path, parts] of fusedModules(lora.config)) {
    const adapted = parts.filter((p) => lora.modules.has(p));
    if (!adapted.length) continue;
    // One adapter of rank sum(r): A stacks the parts' A; B places each part's B at its rows and columns,
    // rescaled from its scale to the fused one (the first part's), so s B A is each part's product.
    const dims = parts.map((p) => shapes.get(p)!.out);
    const rank = adapted.reduce((r, p) => r + spec(p).rank, 0);
    const scale = spec(adapted[0]).scale;
    const inDim = spec(adapted[0]).in;
    const out = dims.reduce((a, b) => a + b, 0);
    const a = new Float32Array(rank * inDim);
    const b = new Float32Array(out * rank);
    // DoRA's magnitude is per output row, so the fused one places each part's at its rows. A part without
    // an adapter has none: DoRA on a fused module needs all of its parts adapted (checked below).
    const m = dora ? new Float32Array(out) : null;
    let col = 0;
    for (const p of adapted) {
      const d = spec(p);
      const row = dims.slice(0, parts.indexOf(p)).reduce((x, y) => x + y, 0);
      if (m) m.set(await read(p, 'magnitude'), row);
      a.set(await read(p, 'A'), col * inDim);
      const bp = await read(p, 'B');
      const ratio = d.scale / scale;
      for (let o = 0; o < d.out; o++) for (let r = 0; r < d.rank; r++) b[(row + o) * rank + col + r] = ratio === 1 ? bp[o * d.rank + r] : bp[o * d.rank + r] * ratio;
      col += d.rank;
    }
    if (m && adapted.length < parts.length) throw new ShapeError(`DoRA on ${adapted.join(', ')} has no PEFT form: PEFT adapts ${path} as one module, so adapt all of ${parts.join(', ')}`);
    modules.push({ path, A: a, B: b, magnitude: m, out, in: inDim, rank, scale, alpha: alphaOf(scale, rank) });
  }
  const rank = k * lora.rank;
  return { modules, rank, alpha: lora.initial ? alphaOf(lora.scale, rank) : lora.options.alpha ?? defaultLoraAlpha(lora.rank) };
}

/** The adapter as PEFT's two files, by name. */
export async function peftAdapterFiles(lora: Lora, options: { baseModel?: string } = {}): Promise<Record<string, Uint8Array>> {
  const { modules, rank, alpha } = await peftLoraModules(lora);
  const tensors: Record<string, TensorToWrite> = {};
  const targets = new Set<string>();
  // Modules whose rank or alpha is not the default, by full module path (a pattern PEFT matches exactly).
  const rankPattern: Record<string, number> = {};
  const alphaPattern: Record<string, number> = {};
  for (const d of modules) {
    tensors[`base_model.model.${d.path}.lora_A.weight`] = { dtype: 'F32', shape: [d.rank, d.in], data: d.A };
    tensors[`base_model.model.${d.path}.lora_B.weight`] = { dtype: 'F32', shape: [d.out, d.rank], data: d.B };
    if (d.magnitude) tensors[`base_model.model.${d.path}.lora_magnitude_vector`] = { dtype: 'F32', shape: [d.out], data: d.magnitude };
    targets.add(d.path.split('.').at(-1)!);
    if (d.rank !== rank) rankPattern[d.path] = d.rank;
    if (d.alpha !== alpha) alphaPattern[d.path] = d.alpha;
  }
  const config = {
    peft_type: 'LORA', task_type: 'CAUSAL_LM', r: rank, lora_alpha: alpha, lora_dropout: lora.options.dropout ?? 0,
    target_modules: [...targets].sort(), bias: 'none', fan_in_fan_out: lora.config.family === 'gpt2', use_rslora: lora.options.rslora ?? false, use_dora: lora.dora !== null,
    modules_to_save: null, init_lora_weights: lora.initial ? true : peftInitName(lora.options.init), layers_to_transform: null, layers_pattern: null, rank_pattern: rankPattern, alpha_pattern: alphaPattern,
    base_model_name_or_path: options.baseModel ?? null, inference_mode: true, revision: null,
  };
  return {
    'adapter_config.json': new TextEncoder().encode(JSON.stringify(config, null, 2) + '\n'),
    'adapter_model.safetensors': writeSafetensors(tensors, { format: 'pt' }),
  };
}

/**
 * A PEFT adapter read for a model: the LoRA options it implies and its tensors by the names
 * FineTuner.writeTensor takes: PEFT's, or for a module PEFT fuses (GPT-2's c_attn) each engine part's
 * ('layers.0.q.lora_A').
 */
export interface PeftAdapter {
  options: LoraOptions;
  tensors: Map<string, Float32Array>;
  /** Fields of the file the engine does not know (a newer PEFT's), each named in a sentence. */
  warnings: string[];
}

/** PEFT's rank_pattern or alpha_pattern: an object of pattern keys to positive numbers. */
function pattern(json: Map<string, StrictJson>, key: string, integer: boolean): Record<string, number> {
  const v = json.get(key);
  if (v === undefined || v === null) return {};
  if (!(v instanceof Map)) throw new InvalidModelFileError('adapter_config.json', `${key} must be an object`);
  const out: Record<string, number> = {};
  for (const [k, n] of v) {
    if (!(n instanceof JsonNumber) || !(n.value > 0) || (integer && !Number.isInteger(n.value))) {
      throw new InvalidModelFileError('adapter_config.json', `${key}['${brief(k)}'] must be a positive ${integer ? 'integer' : 'number'}`);
    }
    out[k] = n.value;
  }
  return out;
}

function positive(json: Map<string, StrictJson>, key: string, integer: boolean): number {
  const v = json.get(key);
  if (!(v instanceof JsonNumber) || !(v.value > 0) || (integer && !Number.isInteger(v.value))) {
    throw new InvalidModelFileError('adapter_config.json', `${key} must be a positive ${integer ? 'integer' : 'number'}, got ${brief(String(v instanceof JsonNumber ? v.text : v))}`);
  }
  return v.value;
}

/**
 * Read PEFT's files (an adapter trained here or in Python) for a model of this config. Attach LoRA with
 * `options`, then write each tensor with FineTuner.writeTensor (by its PEFT name).
 */
export async function readPeftAdapter(files: { config: Uint8Array | string; weights: Uint8Array }, config: ModelConfig): Promise<PeftAdapter> {
  const where = 'adapter_config.json';
  const json = parseStrictJson(typeof files.config === 'string' ? files.config : new TextDecoder().decode(files.config));
  if (!(json instanceof Map)) throw new InvalidModelFileError(where, 'is not a JSON object');
  if (json.get('peft_type') !== 'LORA') throw new InvalidModelFileError(where, `peft_type is ${brief(String(json.get('peft_type')))}, not LORA`);
  const task = json.get('task_type');
  if (task !== undefined && task !== null && task !== 'CAUSAL_LM') throw new ShapeError(`this adapter's task_type is ${brief(String(task))}; this engine loads CAUSAL_LM adapters`);
  const warnings = checkLoraConfigFields(json);
  const rank = positive(json, 'r', true);
  const alpha = positive(json, 'lora_alpha', false);
  let dropout = json.get('lora_dropout') instanceof JsonNumber ? (json.get('lora_dropout') as JsonNumber).value : 0;
  const rslora = json.get('use_rslora') === true;
  const dora = json.get('use_dora') === true;
  if (dora && dropout > 0) {
    // Dropout changes nothing at inference; training DoRA with it is not implemented (see LoraOptions.dora).
    warnings.push(`lora_dropout ${dropout} is not applied: DoRA trains here without dropout`);
    dropout = 0;
  }
  let rankPattern = pattern(json, 'rank_pattern', true);
  let alphaPattern = pattern(json, 'alpha_pattern', false);

  // Every module path PEFT can name in this architecture, with its shape [out, in]; a fused one (c_attn)
  // with its parts.
  const shapes = linearModules(config, ['all-linear'], 'LoRA');
  const engine = new Map([...hfModulePaths(config)].filter(([e]) => shapes.has(e)).map(([e, hf]) => [hf, [e]]));
  for (const [hf, parts] of fusedModules(config)) engine.set(hf, parts);
  const modules = new Map([...engine].map(([hf, parts]) => [hf, { out: parts.reduce((n, p) => n + shapes.get(p)!.out, 0), in: shapes.get(parts[0])!.in }]));
  const source = bytesSource('adapter_model.safetensors', files.weights);
  const header = await readHeader(source);
  const read = new Map<string, Float32Array>();
  const targets = new Map<string, number>();
  for (const t of header.tensors) {
    const m = /^base_model\.model\.(.+)\.(?:lora_([AB])\.weight|lora_(magnitude)_vector)$/.exec(t.name);
    if (!m || (m[3] && !dora)) throw new InvalidModelFileError(source.name, `unexpected tensor '${brief(t.name)}' in a ${dora ? 'DoRA' : 'LoRA'} adapter`);
    const d = modules.get(m[1]);
    if (!d) throw new ShapeError(`LoRA adapter: '${brief(m[1])}' is not a linear layer of this ${config.architecture} model that PEFT names`);
    const r = patternValue(rankPattern, [m[1]]) ?? rank;
    const want = m[3] ? [d.out] : m[2] === 'A' ? [r, d.in] : [d.out, r];
    if (t.shape.length !== want.length || t.shape.some((n, i) => n !== want[i])) {
      throw new InvalidModelFileError(source.name, `'${brief(t.name)}' is ${JSON.stringify(t.shape)}, expected ${JSON.stringify(want)} (r ${r})`, 'shape');
    }
    read.set(t.name, await readTensorF32(source, t));
    targets.set(m[1], r);
  }
  const tensors = new Map<string, Float32Array>();
  // A fused module's parts each get its rank and alpha, by engine name, ahead of the file's own keys.
  const partRanks: Record<string, number> = {};
  const partAlphas: Record<string, number> = {};
  for (const [module, r] of targets) {
    const [a, b] = ['A', 'B'].map((ab) => read.get(`base_model.model.${module}.lora_${ab}.weight`));
    if (!a || !b) throw new InvalidModelFileError(source.name, `'${brief(module)}' has no lora_${a ? 'B' : 'A'}`);
    const magnitudeName = `base_model.model.${module}.lora_magnitude_vector`;
    const magnitude = read.get(magnitudeName);
    if (dora && !magnitude) throw new InvalidModelFileError(source.name, `'${brief(module)}' has no lora_magnitude_vector (use_dora is true)`);
    const parts = engine.get(module)!;
    if (parts.length === 1) {
      for (const ab of ['A', 'B']) tensors.set(`base_model.model.${module}.lora_${ab}.weight`, ab === 'A' ? a : b);
      if (magnitude) tensors.set(magnitudeName, magnitude);
      continue;
    }
    let row = 0;
    const partAlpha = patternValue(alphaPattern, [module]) ?? alpha;
    for (const p of parts) {
      const out = shapes.get(p)!.out;
      tensors.set(`${p}.lora_A`, a);
      tensors.set(`${p}.lora_B`, b.slice(row * r, (row + out) * r));
      if (magnitude) tensors.set(`${p}.lora_magnitude`, magnitude.slice(row, row + out));
      row += out;
      if (r !== rank) partRanks[p] = r;
      if (partAlpha !== alpha) partAlphas[p] = partAlpha;
    }
  }
  if (targets.size === 0) throw new InvalidModelFileError(source.name, 'holds no LoRA tensors');
  // Engine targets are module kinds over every layer (q, v, ...): the file must hold each kind in all of them.
  const covered = new Set([...targets.keys()].flatMap((m) => engine.get(m)!));
  const kinds = [...new Set([...covered].map((m) => m.split('.')[2]))];
  for (const module of linearModules(config, kinds, 'LoRA').keys()) {
    if (!covered.has(module)) throw new ShapeError(`LoRA adapter: it adapts '${module.split('.')[2]}' in some layers but not in '${module}' (adapters on a subset of layers are not supported)`);
  }
  Object.assign(partRanks, rankPattern);
  Object.assign(partAlphas, alphaPattern);
  rankPattern = partRanks;
  alphaPattern = partAlphas;
  const patterns = { ...(Object.keys(rankPattern).length ? { rankPattern } : {}), ...(Object.keys(alphaPattern).length ? { alphaPattern } : {}) };
  // PiSSA or OLoRA as PEFT saves them by default: attaching repeats the decomposition on the base, per
  // engine module. PEFT decomposed a fused module (GPT-2's c_attn, Phi-3's qkv_proj) whole, and OLoRA
  // a Conv1D weight as stored ([in, out]), which the per-module [out, in] decomposition does not repeat.
  const init = json.get('init_lora_weights');
  const mutating = REPEATABLE_INITS.has(init) ? { init: init as 'pissa' | 'olora' } : {};
  if (mutating.init) {
    const fused = [...targets.keys()].find((m) => engine.get(m)!.length > 1);
    const conv1d = mutating.init === 'olora' && config.family === 'gpt2';
    if (fused || conv1d) {
      throw new UnsupportedAdapterError('init_lora_weights', String(init), `LoRA adapter: init_lora_weights is '${init}' ${fused ? `on '${brief(fused)}', which PEFT decomposed as one fused weight` : 'on GPT-2\'s Conv1D layers, which PEFT\'s OLoRA decomposes transposed'}; loading here does not repeat that: save it converted to plain LoRA in PEFT (save_pretrained(..., path_initial_model_for_weight_conversion=<the initial adapter>)) and load that`);
    }
  }
  return { options: { rank, alpha, dropout, targetModules: kinds, ...(rslora ? { rslora } : {}), ...(dora ? { dora } : {}), ...mutating, ...patterns }, tensors, warnings };
}
