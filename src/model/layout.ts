/**
 * The engine's own parameter layout, shared by every architecture: each projection is a Linear with
 * weight [out, in] (y = x W^T + b), named layers.{i}.{q,k,v,o,gate,up,down,fc,proj}. Hugging Face names
 * map onto it: the Llama family one to one; GPT-2's Conv1D weights ([in, out]) transposed, and its fused
 * c_attn split into q, k and v; Phi-3's qkv_proj into q, k and v and its gate_up_proj into gate and up. Reading and writing by HF name goes through these mappings.
 */
import type { ModelConfig } from './config.js';

export interface ParamSpec {
  name: string;
  shape: number[];
}

export interface HfMapping {
  hfName: string;
  hfShape: number[];
  /** Internal parameters this HF tensor becomes, in order (split along the HF output dimension). */
  parts: string[];
  /** Each part's rows along that dimension (Phi-3's qkv_proj: q's, then k's and v's, fewer with GQA). */
  partRows: number[];
  /** Conv1D: the HF tensor is [in, out] and is transposed to [out, in]. */
  transpose: boolean;
}

export const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

export function paramSpecs(c: ModelConfig): ParamSpec[] {
  const H = c.hiddenSize;
  const I = c.intermediateSize;
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  const out: ParamSpec[] = [];
  const add = (name: string, ...shape: number[]) => out.push({ name, shape });
  const gpt2 = c.family === 'gpt2';
  add('embed', c.vocabSize, H);
  if (gpt2) add('pos_embed', c.maxPositions, H);
  for (let i = 0; i < c.numLayers; i++) {
    const p = `layers.${i}`;
    add(`${p}.norm1.weight`, H);
    if (gpt2) add(`${p}.norm1.bias`, H);
    add(`${p}.q.weight`, qDim, H);
    add(`${p}.k.weight`, kvDim, H);
    add(`${p}.v.weight`, kvDim, H);
    if (c.qkvBias) {
      add(`${p}.q.bias`, qDim);
      add(`${p}.k.bias`, kvDim);
      add(`${p}.v.bias`, kvDim);
    }
    if (c.qkNorm) {
      add(`${p}.q_norm.weight`, c.headDim);
      add(`${p}.k_norm.weight`, c.headDim);
    }
    add(`${p}.o.weight`, H, qDim);
    if (c.outputBias) add(`${p}.o.bias`, H);
    if (c.postNorms) add(`${p}.post_attn_norm.weight`, H);
    add(`${p}.norm2.weight`, H);
    if (gpt2) add(`${p}.norm2.bias`, H);
    if (gpt2) {
      add(`${p}.fc.weight`, I, H);
      add(`${p}.fc.bias`, I);
      add(`${p}.proj.weight`, H, I);
      add(`${p}.proj.bias`, H);
    } else {
      add(`${p}.gate.weight`, I, H);
      add(`${p}.up.weight`, I, H);
      add(`${p}.down.weight`, H, I);
      if (c.mlpBias) {
        add(`${p}.gate.bias`, I);
        add(`${p}.up.bias`, I);
        add(`${p}.down.bias`, H);
      }
      if (c.postNorms) add(`${p}.post_mlp_norm.weight`, H);
    }
  }
  add('norm_f.weight', H);
  if (gpt2) add('norm_f.bias', H);
  if (!c.tieWordEmbeddings) add('lm_head', c.vocabSize, H);
  return out;
}

export function hfMappings(c: ModelConfig): HfMapping[] {
  const specs = new Map(paramSpecs(c).map((s) => [s.name, s.shape]));
  const out: HfMapping[] = [];
  const one = (hfName: string, part: string, transpose = false) => {
    const shape = specs.get(part)!;
    out.push({ hfName, hfShape: transpose ? [shape[1], shape[0]] : shape, parts: [part], partRows: [shape[0]], transpose });
  };
  /** One HF tensor stacking engine parts along its output rows (untransposed: nn.Linear's [out, in]). */
  const fused = (hfName: string, parts: string[]) => {
    const shapes = parts.map((part) => specs.get(part)!);
    const rows = shapes.map((sh) => sh[0]);
    out.push({ hfName, hfShape: [rows.reduce((a, b) => a + b, 0), ...shapes[0].slice(1)], parts, partRows: rows, transpose: false });
  };
  if (c.family === 'gpt2') {
    const H = c.hiddenSize;
    one('transformer.wte.weight', 'embed');
    one('transformer.wpe.weight', 'pos_embed');
    for (let i = 0; i < c.numLayers; i++) {
      const hf = `transformer.h.${i}`;
      const p = `layers.${i}`;
      one(`${hf}.ln_1.weight`, `${p}.norm1.weight`);
      one(`${hf}.ln_1.bias`, `${p}.norm1.bias`);
      out.push({ hfName: `${hf}.attn.c_attn.weight`, hfShape: [H, 3 * H], parts: [`${p}.q.weight`, `${p}.k.weight`, `${p}.v.weight`], partRows: [H, H, H], transpose: true });
      fused(`${hf}.attn.c_attn.bias`, [`${p}.q.bias`, `${p}.k.bias`, `${p}.v.bias`]);
      one(`${hf}.attn.c_proj.weight`, `${p}.o.weight`, true);
      one(`${hf}.attn.c_proj.bias`, `${p}.o.bias`);
      one(`${hf}.ln_2.weight`, `${p}.norm2.weight`);
      one(`${hf}.ln_2.bias`, `${p}.norm2.bias`);
      one(`${hf}.mlp.c_fc.weight`, `${p}.fc.weight`, true);
      one(`${hf}.mlp.c_fc.bias`, `${p}.fc.bias`);
      one(`${hf}.mlp.c_proj.weight`, `${p}.proj.weight`, true);
      one(`${hf}.mlp.c_proj.bias`, `${p}.proj.bias`);
    }
    one('transformer.ln_f.weight', 'norm_f.weight');
    one('transformer.ln_f.bias', 'norm_f.bias');
    if (!c.tieWordEmbeddings) one('lm_head.weight', 'lm_head');
    return out;
  }
  one('model.embed_tokens.weight', 'embed');
  const proj: Record<string, string> = {
    q: 'self_attn.q_proj', k: 'self_attn.k_proj', v: 'self_attn.v_proj', o: 'self_attn.o_proj',
    gate: 'mlp.gate_proj', up: 'mlp.up_proj', down: 'mlp.down_proj',
  };
  for (let i = 0; i < c.numLayers; i++) {
    const hf = `model.layers.${i}`;
    const p = `layers.${i}`;
    const projection = (m: string) => {
      one(`${hf}.${proj[m]}.weight`, `${p}.${m}.weight`);
      if (specs.has(`${p}.${m}.bias`)) one(`${hf}.${proj[m]}.bias`, `${p}.${m}.bias`);
    };
    one(`${hf}.input_layernorm.weight`, `${p}.norm1.weight`);
    if (c.fusedProjections) {
      // Phi-3: q, k and v in one qkv_proj, gate and up in one gate_up_proj (gate first), no biases.
      fused(`${hf}.self_attn.qkv_proj.weight`, ['q', 'k', 'v'].map((m) => `${p}.${m}.weight`));
      projection('o');
    } else ['q', 'k', 'v', 'o'].forEach(projection);
    if (c.qkNorm) {
      one(`${hf}.self_attn.q_norm.weight`, `${p}.q_norm.weight`);
      one(`${hf}.self_attn.k_norm.weight`, `${p}.k_norm.weight`);
    }
    if (c.postNorms) {
      // Gemma: post_attention_layernorm normalizes the attention's output; the MLP's input norm is pre_feedforward_layernorm.
      one(`${hf}.post_attention_layernorm.weight`, `${p}.post_attn_norm.weight`);
      one(`${hf}.pre_feedforward_layernorm.weight`, `${p}.norm2.weight`);
      one(`${hf}.post_feedforward_layernorm.weight`, `${p}.post_mlp_norm.weight`);
    } else one(`${hf}.post_attention_layernorm.weight`, `${p}.norm2.weight`);
    if (c.fusedProjections) {
      fused(`${hf}.mlp.gate_up_proj.weight`, [`${p}.gate.weight`, `${p}.up.weight`]);
      projection('down');
    } else ['gate', 'up', 'down'].forEach(projection);
  }
  one('model.norm.weight', 'norm_f.weight');
  if (!c.tieWordEmbeddings) one('lm_head.weight', 'lm_head');
  return out;
}

function transpose(data: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = data[r * cols + c];
  return out;
}

/** An HF tensor's data as its internal parts. */
export function hfToParts(m: HfMapping, data: Float32Array): Float32Array[] {
  const d = m.transpose ? transpose(data, m.hfShape[0], m.hfShape[1]) : data;
  const perRow = d.length / m.partRows.reduce((a, b) => a + b, 0);
  let at = 0;
  return m.partRows.map((rows) => d.slice(at, (at += rows * perRow)));
}

/** Internal parts back into the HF tensor's layout. */
export function partsToHf(m: HfMapping, parts: Float32Array[]): Float32Array {
  const joined = new Float32Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) {
    joined.set(p, at);
    at += p.length;
  }
  // joined is [out, in]; HF Conv1D wants [in, out] = hfShape.
  return m.transpose ? transpose(joined, m.hfShape[1], m.hfShape[0]) : joined;
}
