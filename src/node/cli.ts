#!/usr/bin/env node
/**
 * Command line.
 *   webgpu-finetune info       the WebGPU device Node gets here (adapter, features, limits, tuning)
 *   webgpu-finetune finetune   fine-tune a model on the shipped letter-successor task (defaults: the
 *                              shipped tiny Llama, LoRA) and report held-out accuracy before and after
 *     --model PATH|ID|URL  --method lora|full  --steps N  --lr X  --rank R  --batch B  --hub ENDPOINT
 *   webgpu-finetune generate   continue a prompt with a model (default: the shipped tiny Llama)
 *     --model PATH|ID|URL  --prompt TEXT  --max-new-tokens N  --temperature T  --top-k K  --top-p P
 *     --seed S  --hub ENDPOINT
 */
import { requestDevice } from '../node.js';
import { resolveSource } from '../io/sources.js';
import { openCheckpoint } from '../model/checkpoint.js';
import { FineTuner } from '../train/finetuner.js';
import { CausalLM } from '../model/causal-lm.js';
import { loadTokenizer } from '../data/tokenizer.js';
import { Generator } from '../serve/generate.js';
import { SUCCESSOR_DEFAULTS, successorFineTuneOptions, trainOnSuccessor } from '../train/successor.js';

const shippedModel = new URL('../../public/models/tiny-llama', import.meta.url).pathname;

function flag(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : fallback;
}

async function finetune(): Promise<void> {
  const modelPath = flag('model', shippedModel);
  const method = flag('method', 'lora') as 'lora' | 'full';
  if (method !== 'lora' && method !== 'full') throw new Error(`--method must be lora or full, got ${method}`);
  const steps = Number(flag('steps', String(SUCCESSOR_DEFAULTS[method].steps)));
  const lr = Number(flag('lr', String(SUCCESSOR_DEFAULTS[method].lr)));
  const rows = Number(flag('batch', '16'));
  const gpu = await requestDevice({ powerPreference: 'high-performance' });
  console.log(`device: ${gpu.describe()}`);
  const source = await resolveSource(modelPath, { endpoint: process.argv.includes('--hub') ? flag('hub', '') : undefined });
  const ckpt = await openCheckpoint(source);
  const c = ckpt.config;
  console.log(`model:  ${source.description}: ${c.architecture}, ${c.numLayers} layers, d=${c.hiddenSize}, vocab ${c.vocabSize}`);
  const ft = await FineTuner.create(gpu, ckpt, successorFineTuneOptions(c, method, { steps, lr, rank: Number(flag('rank', '16')) }));
  const trainable = method === 'lora' ? ft.lora!.names.length : ft.model.trainableNames.length;
  console.log(`method: ${method}${method === 'lora' ? ` (rank ${ft.lora!.options.rank}, ${trainable} adapter tensors)` : ` (${trainable} tensors)`}, ${steps} steps, lr ${lr}`);
  console.log('task:   letter successor ("x>y;" pairs, loss on y), held-out rows from another seed\n');
  await trainOnSuccessor(ft, { steps, rows, log: (line) => console.log(line) });
  ft.destroy();
  gpu.destroy();
}

async function generate(): Promise<void> {
  const hub = { endpoint: process.argv.includes('--hub') ? flag('hub', '') : undefined };
  const source = await resolveSource(flag('model', shippedModel), hub);
  const number = (name: string, fallback: string) => {
    const v = Number(flag(name, fallback));
    if (!Number.isFinite(v)) throw new Error(`--${name} must be a number, got ${flag(name, fallback)}`);
    return v;
  };
  const lm = await CausalLM.fromPretrained(source);
  const tokenizer = await loadTokenizer(source);
  const gen = new Generator(lm);
  try {
    const prompt = flag('prompt', 'k>l;c>d;m>');
    const ids = Array.from(tokenizer.encode(prompt, { add_special_tokens: false }) as number[]);
    const out = await gen.generate(ids, {
      maxNewTokens: number('max-new-tokens', '16'), temperature: number('temperature', '0'),
      topK: number('top-k', '0'), topP: number('top-p', '1'), seed: number('seed', '0'),
    });
    console.log(`${prompt}${tokenizer.decode(out.tokens)}`);
    console.log(`(${out.tokens.length} tokens, stopped by ${out.stoppedBy})`);
  } finally {
    gen.destroy();
    lm.destroy();
    lm.gpu.destroy();
  }
}

async function info(): Promise<void> {
  const gpu = await requestDevice({ powerPreference: 'high-performance' });
  const l = gpu.limits;
  console.log(`device:   ${gpu.describe()}`);
  console.log(`features: ${Object.entries(gpu.features).filter(([, on]) => on).map(([f]) => f).join(', ') || 'none'}`);
  console.log(`limits:   maxBufferSize ${l.maxBufferSize}, maxStorageBufferBindingSize ${l.maxStorageBufferBindingSize},`);
  console.log(`          workgroup storage ${l.maxComputeWorkgroupStorageSize} B, ${l.maxComputeInvocationsPerWorkgroup} invocations/workgroup`);
  console.log(`tuning:   matmul ${gpu.tuning.matmulVariant}, reductions ${gpu.tuning.reductionWorkgroupSize}-wide`);
  if (gpu.adapter.isSoftware) console.log('note:     a CPU implementation; expect ~1 GFLOP/s. Compare ratios, not absolute speed.');
  gpu.destroy();
}

const command = process.argv[2] ?? 'info';
const commands: Record<string, () => Promise<void>> = { info, finetune, generate };
if (!commands[command]) {
  console.error(`unknown command '${command}'. Commands: ${Object.keys(commands).join(', ')}`);
  process.exit(2);
}
try {
  await commands[command]();
  process.exit(0);
} catch (e) {
  console.error(e instanceof Error ? `${e.name}: ${e.message}` : e);
  process.exit(1);
}
