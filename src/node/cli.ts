#!/usr/bin/env node
/**
 * Command line.
 *   webgpu-finetune info       the WebGPU device Node gets here (adapter, features, limits, tuning)
 *   webgpu-finetune finetune   fine-tune a model on a skill its pre-training never saw ("next:a=b", the
 *                              letter successor; defaults: the shipped pretrained tiny Llama, LoRA)
 *                              and report held-out accuracy before and after
 *     --model PATH|ID|URL  --method full|lora|sparse|sparse+lora  --steps N  --lr X  --rank R  --batch B
 *     --hub ENDPOINT  --quantize nf4|int4 (a 4-bit frozen base: QLoRA with --method lora)  --double-quant (nf4)
 *     --save-adapter DIR (LoRA: the adapter as PEFT's files); sparse methods: --selection sylva|fisher|snip|random|columns  --density X
 *     --granularity element|16|32|64  --mask FILE (a saved mask)  --save-mask FILE  --save-delta FILE
 *   webgpu-finetune generate   continue a prompt with a model (default: the shipped pretrained tiny Llama)
 *     --model PATH|ID|URL  --prompt TEXT  --max-new-tokens N  --temperature T  --top-k K  --top-p P
 *     --seed S  --hub ENDPOINT
 */
import { parseArgs } from 'node:util';
import { requestDevice } from '../node.js';
import { resolveSource } from '../io/sources.js';
import { openCheckpoint } from '../model/checkpoint.js';
import { FineTuner } from '../train/finetuner.js';
import { CausalLM } from '../model/causal-lm.js';
import { QUANT_FORMATS, type QuantFormat } from '../model/quantized-weights.js';
import { loadTokenizer } from '../data/tokenizer.js';
import { Generator } from '../serve/generate.js';
import { fineTuneOnTask, MAIN_TASK, selectTaskMask, taskDefaults, taskFineTuneOptions, trainsAtMask } from '../train/main-task.js';
import { METHODS, methodNames, type MethodName } from '../methods/registry.js';
import { PRETRAINED_BASE } from '../model/shipped.js';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { peftAdapterFiles, type Lora } from '../methods/lora/index.js';
import { writeFileAtomic } from '../io/files.js';
import { sparsePart } from '../methods/sparse-lora/index.js';
import { BLOCK_SIZES, SELECTIONS, sparseDeltaFile, SparseMask, type BlockSize, type Granularity, type Selection } from '../methods/sparse/index.js';

const shippedModel = new URL(`../../public/models/${PRETRAINED_BASE.name}`, import.meta.url).pathname;

/** A usage mistake: reported with the usage line and exit code 2, distinct from a failed run (1). */
class UsageError extends Error {}

type Spec = Record<string, { type: 'string' | 'boolean'; default?: string }>;
const common: Spec = { model: { type: 'string', default: shippedModel }, hub: { type: 'string' }, help: { type: 'boolean' } };
const specs: Record<string, Spec> = {
  info: { help: { type: 'boolean' } },
  finetune: {
    ...common, method: { type: 'string', default: 'lora' }, steps: { type: 'string' }, lr: { type: 'string' }, rank: { type: 'string', default: '16' }, batch: { type: 'string', default: '8' },
    quantize: { type: 'string' }, 'double-quant': { type: 'boolean' }, 'save-adapter': { type: 'string' },
    // Sparse methods: the mask's selection and budget, or a saved mask; where to save the mask and the delta.
    selection: { type: 'string' }, density: { type: 'string' }, granularity: { type: 'string' }, mask: { type: 'string' }, 'save-mask': { type: 'string' }, 'save-delta': { type: 'string' },
  },
  generate: {
    ...common, prompt: { type: 'string', default: 'rev:webgpu=' }, 'max-new-tokens': { type: 'string', default: '16' }, temperature: { type: 'string', default: '0' },
    'top-k': { type: 'string', default: '0' }, 'top-p': { type: 'string', default: '1' }, seed: { type: 'string', default: '0' },
  },
};

/** The command's flags, strictly: an unknown flag, a missing value or a stray argument is a usage error. */
function flags(command: string): Record<string, string | boolean | undefined> {
  try {
    return parseArgs({ args: process.argv.slice(3), options: specs[command], strict: true, allowPositionals: false }).values;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/** A flag's number: finite, and an integer within bounds where asked. */
function numberFlag(values: Record<string, unknown>, name: string, o: { integer?: boolean; min?: number; max?: number } = {}): number {
  const text = String(values[name]);
  const v = Number(text);
  const ok = text.trim() !== '' && Number.isFinite(v) && (!o.integer || Number.isInteger(v)) && v >= (o.min ?? -Infinity) && v <= (o.max ?? Infinity);
  if (!ok) {
    const want = `${o.integer ? 'an integer' : 'a number'}${o.min !== undefined ? ` >= ${o.min}` : ''}${o.max !== undefined ? ` <= ${o.max}` : ''}`;
    throw new UsageError(`--${name} must be ${want}, got '${text}'`);
  }
  return v;
}

async function finetune(): Promise<void> {
  const values = flags('finetune');
  const method = values.method as MethodName;
  if (!methodNames().includes(method)) throw new UsageError(`--method must be one of ${methodNames().join(', ')}, got '${method}'`);
  values.steps ??= String(taskDefaults(method).steps);
  values.lr ??= String(taskDefaults(method).lr);
  const steps = numberFlag(values, 'steps', { integer: true, min: 1 });
  const lr = numberFlag(values, 'lr', { min: 0 });
  const rows = numberFlag(values, 'batch', { integer: true, min: 1 });
  const rank = numberFlag(values, 'rank', { integer: true, min: 1 });
  const quantize = values.quantize as QuantFormat | undefined;
  if (quantize !== undefined && !QUANT_FORMATS.includes(quantize)) throw new UsageError(`--quantize must be one of ${QUANT_FORMATS.join(', ')}, got '${quantize}'`);
  if (values['double-quant'] && quantize !== 'nf4') throw new UsageError('--double-quant quantizes the absmax of NF4: use it with --quantize nf4');
  if (quantize !== undefined && METHODS[method].writesBase) throw new UsageError(`--quantize makes the frozen base 4-bit, and '${method}' trains inside the base weights: use --method lora`);
  if (values['save-adapter'] !== undefined && method !== 'lora') throw new UsageError(`--save-adapter writes a LoRA adapter in PEFT's files; '${method}' has none (the sparse methods: --save-delta)`);
  const sparse = trainsAtMask(method);
  const sparseFlags = ['selection', 'density', 'granularity', 'mask', 'save-mask', 'save-delta'].filter((f) => values[f] !== undefined);
  if (!sparse && sparseFlags.length) throw new UsageError(`--${sparseFlags[0]} applies to the sparse methods (sparse, sparse+lora), not '${method}'`);
  const selection = (values.selection ?? 'sylva') as Selection;
  if (!SELECTIONS.includes(selection)) throw new UsageError(`--selection must be one of ${SELECTIONS.join(', ')}, got '${selection}'`);
  const density = values.density === undefined ? 0.01 : numberFlag(values, 'density', { min: 0, max: 1 });
  const granularity = values.granularity === undefined || values.granularity === 'element' ? 'element' : numberFlag(values, 'granularity', { integer: true });
  if (granularity !== 'element' && !BLOCK_SIZES.includes(granularity as BlockSize)) throw new UsageError(`--granularity must be element or a block size of ${BLOCK_SIZES.join(', ')}, got '${values.granularity}'`);
  const gpu = await requestDevice({ powerPreference: 'high-performance' });
  console.log(`device: ${gpu.describe()}`);
  const source = await resolveSource(values.model as string, { endpoint: values.hub as string | undefined });
  const ckpt = await openCheckpoint(source);
  const c = ckpt.config;
  console.log(`model:  ${source.description}: ${c.architecture}, ${c.numLayers} layers, d=${c.hiddenSize}, vocab ${c.vocabSize}`);
  let mask: SparseMask | undefined;
  if (sparse && values.mask) {
    mask = await SparseMask.fromSafetensors(new Uint8Array(await readFile(values.mask as string)), c, values.mask as string);
    console.log(`mask:   ${values.mask}: ${mask.info.selection}, ${(100 * mask.density).toFixed(2)}% of ${mask.entries.size} layers (${mask.granularity === 'element' ? 'elements' : `${mask.granularity}x${mask.granularity} blocks`})`);
  } else if (sparse) {
    mask = await selectTaskMask(gpu, ckpt, { selection, density, granularity: granularity as Granularity, rows, log: (line) => console.log(line) });
  }
  if (mask && values['save-mask']) {
    await writeFileAtomic(values['save-mask'] as string, mask.toSafetensors(c));
    console.log(`        saved to ${values['save-mask']}`);
  }
  const ft = await FineTuner.create(gpu, ckpt, { ...(await taskFineTuneOptions(gpu, ckpt, method, { steps, lr, rank, rows, mask, log: (line) => console.log(line) })), quantize: quantize && { format: quantize, ...(values['double-quant'] ? { doubleQuant: true } : {}) } });
  if (quantize) console.log(`base:   frozen linear weights ${quantize}${values['double-quant'] ? ' (double-quantized absmax)' : ''}, ${(ft.model.linearWeightBytes / 2 ** 20).toFixed(2)} MiB`);
  const { names, param } = ft.method.trainable;
  const parameters = names.reduce((sum, n) => sum + param(n).size / 4, 0);
  console.log(`method: ${method} (${METHODS[method].summary}): ${names.length} tensors, ${parameters} parameters train; ${steps} steps, lr ${lr}`);
  console.log(`task:   '${MAIN_TASK}' ("${MAIN_TASK}:a=b", the letter after a letter), not in the base's pre-training; loss on answers, ${rows} rows of 64 tokens per step\n`);
  await fineTuneOnTask(ft, { steps, rows, log: (line) => console.log(line) });
  if (values['save-adapter']) {
    const dir = values['save-adapter'] as string;
    await mkdir(dir, { recursive: true });
    for (const [name, data] of Object.entries(await peftAdapterFiles(ft.method as Lora, { baseModel: values.model as string }))) await writeFileAtomic(join(dir, name), data);
    console.log(`adapter saved to ${dir} (PEFT: adapter_config.json, adapter_model.safetensors)`);
  }
  if (values['save-delta']) {
    await writeFileAtomic(values['save-delta'] as string, await sparseDeltaFile(sparsePart(ft.method)!, c));
    console.log(`sparse delta saved to ${values['save-delta']}`);
  }
  ft.destroy();
  gpu.destroy();
}

async function generate(): Promise<void> {
  const values = flags('generate');
  const options = {
    maxNewTokens: numberFlag(values, 'max-new-tokens', { integer: true, min: 1 }), temperature: numberFlag(values, 'temperature', { min: 0 }),
    topK: numberFlag(values, 'top-k', { integer: true, min: 0 }), topP: numberFlag(values, 'top-p', { min: 0, max: 1 }), seed: numberFlag(values, 'seed', { integer: true }),
  };
  const source = await resolveSource(values.model as string, { endpoint: values.hub as string | undefined });
  const lm = await CausalLM.fromPretrained(source);
  const tokenizer = await loadTokenizer(source);
  const gen = new Generator(lm);
  try {
    const prompt = values.prompt as string;
    const ids = Array.from(tokenizer.encode(prompt, { add_special_tokens: false }) as number[]);
    const out = await gen.generate(ids, options);
    console.log(`${prompt}${tokenizer.decode(out.tokens)}`);
    console.log(`(${out.tokens.length} tokens, stopped by ${out.stoppedBy})`);
  } finally {
    gen.destroy();
    lm.destroy();
    lm.gpu.destroy();
  }
}

async function info(): Promise<void> {
  flags('info');
  const gpu = await requestDevice({ powerPreference: 'high-performance' });
  const l = gpu.limits;
  console.log(`device:   ${gpu.describe()}`);
  console.log(`features: ${Object.entries(gpu.features).filter(([, on]) => on).map(([f]) => f).join(', ') || 'none'}`);
  console.log(`limits:   maxBufferSize ${l.maxBufferSize}, maxStorageBufferBindingSize ${l.maxStorageBufferBindingSize},`);
  console.log(`          workgroup storage ${l.maxComputeWorkgroupStorageSize} B, ${l.maxComputeInvocationsPerWorkgroup} invocations/workgroup`);
  console.log(`tuning:   matmul ${gpu.tuning.matmulVariant}, reductions ${gpu.tuning.reductionWorkgroupSize}-wide, attention ${gpu.tuning.attentionVariant}`);
  console.log(`dawn:     ${gpu.requested.dawnOptions?.join(' ') || 'defaults'}`);
  if (gpu.adapter.isSoftware) console.log('note:     a CPU implementation; expect ~1 GFLOP/s. Compare ratios, not absolute speed.');
  gpu.destroy();
}

const USAGE = `usage: webgpu-finetune <command> [flags]
  info       the WebGPU device Node gets here
  finetune   --model PATH|ID|URL --method ${methodNames().join('|')} --steps N --lr X --rank R --batch B --hub ENDPOINT
             --quantize ${QUANT_FORMATS.join('|')} (a 4-bit frozen base; QLoRA with --method lora)  --double-quant (nf4: 8-bit absmax)
             --save-adapter DIR (LoRA: PEFT's adapter_config.json and adapter_model.safetensors)
             sparse methods: --selection ${SELECTIONS.join('|')} --density X --granularity element|${BLOCK_SIZES.join('|')}
             --mask FILE --save-mask FILE --save-delta FILE
  generate   --model PATH|ID|URL --prompt TEXT --max-new-tokens N --temperature T --top-k K --top-p P --seed S --hub ENDPOINT`;

const command = process.argv[2] ?? 'info';
const commands: Record<string, () => Promise<void>> = { info, finetune, generate };
if (command === '--help' || command === 'help' || process.argv.slice(3).includes('--help')) {
  console.log(USAGE);
  process.exit(0);
}
if (!commands[command]) {
  console.error(`unknown command '${command}'. Commands: ${Object.keys(commands).join(', ')}\n${USAGE}`);
  process.exit(2);
}
try {
  await commands[command]();
  process.exit(0);
} catch (e) {
  if (e instanceof UsageError) {
    console.error(`${e.message}\n${USAGE}`);
    process.exit(2);
  }
  console.error(e instanceof Error ? `${e.name}: ${e.message}` : e);
  process.exit(1);
}
