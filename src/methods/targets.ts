/**
 * Which linear layers a method targets: engine names (q, k, v, o, gate, up, down, fc, proj), Hugging
 * Face module names (q_proj, ..., down_proj, c_fc) or PEFT's 'all-linear', checked against the model.
 */
import { ShapeError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import { hfMappings, paramSpecs } from '../model/layout.js';
import { LINEAR_WEIGHT, linearMappings } from '../model/linear-weights.js';

const ALIASES: Record<string, string> = {
  q_proj: 'q', k_proj: 'k', v_proj: 'v', o_proj: 'o', gate_proj: 'gate', up_proj: 'up', down_proj: 'down', c_fc: 'fc', out_proj: 'o',
};

/** Shapes of a targeted linear layer: out x in, as its weight [out, in]. */
export interface LinearShape {
  out: number;
  in: number;
}

/**
 * The targeted linear layers by engine module name ('layers.0.q') with their shapes, in model order;
 * a target the architecture lacks is a ShapeError naming it (`method` says whose option it was).
 */
export function linearModules(config: ModelConfig, targets: string[], method: string): Map<string, LinearShape> {
  const all = targets.includes('all-linear');
  const wanted = new Set(targets.map((m) => ALIASES[m] ?? m));
  const modules = new Map<string, LinearShape>();
  for (const spec of paramSpecs(config)) {
    // Linear layers' weights, by the one pattern the model stores them by (norm weights, q_norm included, are not).
    const m = LINEAR_WEIGHT.exec(spec.name);
    if (m && (all || wanted.has(m[1]))) modules.set(spec.name.slice(0, -'.weight'.length), { out: spec.shape[0], in: spec.shape[1] });
  }
  const found = new Set([...modules.keys()].map((k) => k.split('.')[2]));
  const missing = all ? [] : [...wanted].filter((t) => !found.has(t));
  if (missing.length) throw new ShapeError(`${method} target modules ${missing.map((m) => `'${m}'`).join(', ')} do not exist in ${config.architecture}`);
  return modules;
}

/**
 * Engine module -> Hugging Face module path (layers.0.q -> model.layers.0.self_attn.q_proj) for weights
 * that map one to one: GPT-2's q, k and v are one fused c_attn and have none. `untransposed` also leaves
 * out weights stored transposed (GPT-2's Conv1D layers).
 */
export function hfModulePaths(config: ModelConfig, o: { untransposed?: boolean } = {}): Map<string, string> {
  const module = (n: string) => n.slice(0, -'.weight'.length);
  return new Map(
    hfMappings(config)
      .filter((m) => m.parts.length === 1 && m.parts[0].endsWith('.weight') && m.hfName.endsWith('.weight') && !(o.untransposed && m.transpose))
      .map((m) => [module(m.parts[0]), module(m.hfName)]),
  );
}

/** Engine modules Hugging Face fuses into one weight (GPT-2's q, k, v in c_attn): HF module -> parts in order. */
export function fusedModules(config: ModelConfig): Map<string, string[]> {
  return new Map(
    linearMappings(config)
      .filter((m) => m.parts.length > 1)
      .map((m) => [m.hfName.replace(/\.weight$/, ''), m.parts.map((p) => p.replace(/\.weight$/, ''))]),
  );
}
