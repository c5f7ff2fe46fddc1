/**
 * LoRA adapters in Hugging Face PEFT's files: `adapter_config.json` and `adapter_model.safetensors` as
 * `PeftModel.from_pretrained` reads them. Tensors are `base_model.model.<module>.lora_A.weight` [r, in]
 * and `...lora_B.weight` [out, r] (PEFT saves them without the adapter name), F32, with the safetensors
 * metadata {"format": "pt"}; the scale is lora_alpha / r (lora_alpha / sqrt(r) with use_rslora), with
 * rank_pattern and alpha_pattern giving modules their own r and lora_alpha. GPT-2's Conv1D layers take the same shapes with
 * fan_in_fan_out true; its q, k and v are one fused c_attn in Hugging Face, so separate adapters on them
 * have no PEFT form.
 */
import { ShapeError } from '../../errors.js';
import { bytesSource } from '../../io/bytes.js';
import { InvalidModelFileError, readHeader, readTensorF32, writeSafetensors, type TensorToWrite } from '../../io/safetensors.js';
import { brief, JsonNumber, parseStrictJson, type StrictJson } from '../../io/strict-json.js';
import type { ModelConfig } from '../../model/config.js';
import { hfModulePaths, linearModules } from '../targets.js';
import { patternValue, type LoraOptions } from './config.js';
import type { Lora } from './layer.js';

/** The adapter as PEFT's two files, by name. */
export async function peftAdapterFiles(lora: Lora, options: { baseModel?: string } = {}): Promise<Record<string, Uint8Array>> {
  const tensors: Record<string, TensorToWrite> = {};
  const targets = new Set<string>();
  const alpha = lora.options.alpha ?? 2 * lora.rank;
  // Modules whose rank or alpha is not the default, by full module path (a pattern PEFT matches exactly).
  const rankPattern: Record<string, number> = {};
  const alphaPattern: Record<string, number> = {};
  for (const name of lora.names) {
    const peft = lora.peftName(name);
    if (!peft) {
      throw new ShapeError(`'${name.replace(/\.lora_[AB]$/, '')}' has no PEFT form (GPT-2's q, k and v are one fused c_attn in Hugging Face): adapt other modules to export`);
    }
    const module = name.replace(/\.lora_[AB]$/, '');
    const d = lora.modules.get(module)!;
    const shape = name.endsWith('lora_A') ? [d.rank, d.in] : [d.out, d.rank];
    tensors[peft] = { dtype: 'F32', shape, data: await lora.gpu.readF32(lora.params.view(name)) };
    const path = peft.replace(/^base_model\.model\./, '').replace(/\.lora_[AB]\.weight$/, '');
    targets.add(path.split('.').at(-1)!);
    if (d.rank !== lora.rank) rankPattern[path] = d.rank;
    if (d.alpha !== alpha) alphaPattern[path] = d.alpha;
  }
  const config = {
    peft_type: 'LORA', task_type: 'CAUSAL_LM', r: lora.rank, lora_alpha: alpha, lora_dropout: lora.options.dropout ?? 0,
    target_modules: [...targets].sort(), bias: 'none', fan_in_fan_out: lora.config.family === 'gpt2', use_rslora: lora.options.rslora ?? false, use_dora: false,
    modules_to_save: null, init_lora_weights: true, layers_to_transform: null, layers_pattern: null, rank_pattern: rankPattern, alpha_pattern: alphaPattern,
    base_model_name_or_path: options.baseModel ?? null, inference_mode: true, revision: null,
  };
  return {
    'adapter_config.json': new TextEncoder().encode(JSON.stringify(config, null, 2) + '\n'),
    'adapter_model.safetensors': writeSafetensors(tensors, { format: 'pt' }),
  };
}

/** A PEFT adapter read for a model: the LoRA options it implies and its tensors by PEFT name. */
export interface PeftAdapter {
  options: LoraOptions;
  tensors: Map<string, Float32Array>;
}

const empty = (v: StrictJson | undefined) => v === undefined || v === null || v === false || (v instanceof Map && v.size === 0) || (Array.isArray(v) && v.length === 0);

/** Options of PEFT's LoraConfig this engine does not apply: a file setting one is refused by name. */
const UNSUPPORTED: Record<string, (v: StrictJson | undefined) => boolean> = {
  use_dora: (v) => !empty(v),
  modules_to_save: (v) => !empty(v),
  layers_to_transform: (v) => !empty(v),
  lora_bias: (v) => !empty(v),
  bias: (v) => v !== undefined && v !== 'none',
};

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
  for (const [key, unsupported] of Object.entries(UNSUPPORTED)) {
    if (unsupported(json.get(key))) throw new ShapeError(`LoRA option ${key} is set (${brief(String(json.get(key) instanceof Map ? 'a map' : json.get(key)))}), which this engine does not support`);
  }
  const rank = positive(json, 'r', true);
  const alpha = positive(json, 'lora_alpha', false);
  const dropout = json.get('lora_dropout') instanceof JsonNumber ? (json.get('lora_dropout') as JsonNumber).value : 0;
  const rslora = json.get('use_rslora') === true;
  const rankPattern = pattern(json, 'rank_pattern', true);
  const alphaPattern = pattern(json, 'alpha_pattern', false);

  // Every module path PEFT can name in this architecture, with its shape [out, in].
  const shapes = linearModules(config, ['all-linear'], 'LoRA');
  const engine = new Map([...hfModulePaths(config)].filter(([e]) => shapes.has(e)).map(([e, hf]) => [hf, e]));
  const modules = new Map([...engine].map(([hf, e]) => [hf, shapes.get(e)!]));
  const source = bytesSource('adapter_model.safetensors', files.weights);
  const header = await readHeader(source);
  const tensors = new Map<string, Float32Array>();
  const targets = new Set<string>();
  for (const t of header.tensors) {
    const m = /^base_model\.model\.(.+)\.lora_([AB])\.weight$/.exec(t.name);
    if (!m) throw new InvalidModelFileError(source.name, `unexpected tensor '${brief(t.name)}' in a LoRA adapter`);
    const d = modules.get(m[1]);
    if (!d) throw new ShapeError(`LoRA adapter: '${brief(m[1])}' is not a linear layer of this ${config.architecture} model that PEFT names`);
    const r = patternValue(rankPattern, [m[1]]) ?? rank;
    const want = m[2] === 'A' ? [r, d.in] : [d.out, r];
    if (t.shape.length !== 2 || t.shape[0] !== want[0] || t.shape[1] !== want[1]) {
      throw new InvalidModelFileError(source.name, `'${brief(t.name)}' is ${JSON.stringify(t.shape)}, expected ${JSON.stringify(want)} (r ${r})`, 'shape');
    }
    tensors.set(t.name, await readTensorF32(source, t));
    targets.add(m[1]);
  }
  for (const module of targets) {
    for (const ab of ['A', 'B']) if (!tensors.has(`base_model.model.${module}.lora_${ab}.weight`)) throw new InvalidModelFileError(source.name, `'${brief(module)}' has no lora_${ab}`);
  }
  if (targets.size === 0) throw new InvalidModelFileError(source.name, 'holds no LoRA tensors');
  // Engine targets are module kinds over every layer (q, v, ...): the file must hold each kind in all of them.
  const kinds = [...new Set([...targets].map((m) => engine.get(m)!.split('.')[2]))];
  const covered = new Set([...targets].map((m) => engine.get(m)!));
  for (const module of linearModules(config, kinds, 'LoRA').keys()) {
    if (!covered.has(module)) throw new ShapeError(`LoRA adapter: it adapts '${module.split('.')[2]}' in some layers but not in '${module}' (adapters on a subset of layers are not supported)`);
  }
  const patterns = { ...(Object.keys(rankPattern).length ? { rankPattern } : {}), ...(Object.keys(alphaPattern).length ? { alphaPattern } : {}) };
  return { options: { rank, alpha, dropout, targetModules: kinds, ...(rslora ? { rslora } : {}), ...patterns }, tensors };
}
