/**
 * The adapter cache (src/serve/adapter-cache.ts) on the shipped base: host-side switch time with 10,
 * 1,000 and 10,000 adapters resident, a sparse switch against a LoRA switch, a batch of 32 sequences on
 * 32 different adapters against the same batch on one, generation with an adapter against the merged
 * base, and bytes per resident adapter (here and at Qwen2.5-0.5B's shapes). Runs in Node and in the page
 * (no Node imports here). Paired figures alternate their two sides, so machine drift falls on both.
 */
import { QWEN25_05B_CONFIG } from './memory.js';
import { linearModules } from '../src/methods/targets.js';
import { randn, rng } from '../src/util/random.js';
import { AdapterCache, CausalLM, Generator, Lora, loraBase, openCheckpoint, parseConfig, type Gpu, type LoraAdapter, type ModelSource, type SparseAdapter } from '../src/index.js';

export interface ServeBenchResult {
  device: string;
  model: string;
  switches: { resident: number; rank: number; us_per_switch: number }[];
  sparse_switch: { nnz: number; host_us: number; done_ms: number; lora_done_ms: number };
  batch: { rows: number; new_tokens: number; multi_tokens_per_s: number; single_tokens_per_s: number; fixed_slot_tokens_per_s: number };
  decode: { new_tokens: number; adapter_tokens_per_s: number; merged_tokens_per_s: number; attached_tokens_per_s: number };
  bytes: { model: string; rank: number; targets: string; bytes_per_adapter: number; adapters_per_buffer: number; adapters_in_1_gib: number }[];
  ratios: Record<string, number>;
}

const SWITCH_COUNTS = [10, 1000, 10_000];
const SWITCHES = 200_000;
const ROWS = 32;
const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

function randomLora(model: CausalLM, seed: number, rank: number, targets: string[]): LoraAdapter {
  const rand = rng(seed);
  return {
    kind: 'lora',
    modules: new Map([...linearModules(model.config, targets, 'bench')].map(([name, s]) => [name, { rank, scale: 2, A: randn(rank * s.in, rand).map((v) => v * 0.1), B: randn(s.out * rank, rand).map((v) => v * 0.1) }])),
  };
}

function randomSparse(model: CausalLM, seed: number, density: number): SparseAdapter {
  const rand = rng(seed);
  return {
    kind: 'sparse',
    modules: new Map(
      [...linearModules(model.config, ['all-linear'], 'bench')].map(([name, s]) => {
        const indices = Uint32Array.from({ length: s.out * s.in }, (_, i) => i).filter(() => rand() < density);
        return [name, { indices, delta: randn(indices.length, rand).map((v) => v * 0.01) }];
      }),
    ),
  };
}

/** Host microseconds per select() over a random order of resident ids (median of 5 passes). */
function switchMicros(cache: AdapterCache, ids: string[]): number {
  const rand = rng(1);
  const order = Uint32Array.from({ length: SWITCHES }, () => Math.floor(rand() * ids.length));
  for (let k = 0; k < 10_000; k++) cache.select(ids[order[k]]);
  const passes: number[] = [];
  for (let p = 0; p < 5; p++) {
    const t0 = performance.now();
    for (let k = 0; k < SWITCHES; k++) cache.select(ids[order[k]]);
    passes.push(((performance.now() - t0) * 1000) / SWITCHES);
  }
  return median(passes);
}

/** Tokens per second of each side, alternated `rounds` times; the median of each. */
async function paired(rounds: number, sides: (() => Promise<number>)[]): Promise<number[]> {
  const runs: number[][] = sides.map(() => []);
  for (let r = 0; r < rounds; r++) for (let i = 0; i < sides.length; i++) runs[i].push(await sides[i]());
  return runs.map(median);
}

export async function runServeBench(gpu: Gpu, source: ModelSource, o: { log?: (line: string) => void } = {}): Promise<ServeBenchResult> {
  const log = o.log ?? (() => {});
  const ckpt = await openCheckpoint(source);
  const model = await CausalLM.fromCheckpoint(gpu, ckpt);
  const c = model.config;

  // Switching, by count resident.
  const switches: ServeBenchResult['switches'] = [];
  for (const count of SWITCH_COUNTS) {
    const cache = new AdapterCache(model, { gpuBudgetBytes: 512 * 2 ** 20 });
    const ids = Array.from({ length: count }, (_, i) => `a${i}`);
    // The adapters' arrays are shared (the cache keeps each one's own slot): the host tier is not what is measured.
    const shared = randomLora(model, 1, 4, ['q', 'v']);
    for (const id of ids) cache.add(id, shared);
    const us = switchMicros(cache, ids);
    log(`switch with ${count} resident: ${us.toFixed(3)} us`);
    switches.push({ resident: count, rank: 4, us_per_switch: us });
    cache.destroy();
  }

  // A sparse switch (the scatters of both adapters recorded and submitted) against a LoRA one.
  const cache = new AdapterCache(model, { gpuBudgetBytes: 512 * 2 ** 20 });
  const s1 = randomSparse(model, 2, 0.01);
  cache.add('s1', s1);
  cache.add('s2', randomSparse(model, 3, 0.01));
  for (let i = 0; i < ROWS; i++) cache.add(`u${i}`, randomLora(model, 100 + i, 8, ['q', 'v']));
  const nnz = [...s1.modules.values()].reduce((n, m) => n + m.indices.length, 0);
  const hostSparse: number[] = [];
  const doneSparse: number[] = [];
  const doneLora: number[] = [];
  for (let k = 0; k < 40; k++) {
    const t0 = performance.now();
    cache.select(k % 2 ? 's1' : 's2');
    hostSparse.push((performance.now() - t0) * 1000);
    await gpu.sync();
    doneSparse.push(performance.now() - t0);
    const t1 = performance.now();
    cache.select(`u${k % ROWS}`);
    await gpu.sync();
    doneLora.push(performance.now() - t1);
  }
  const loraUs = switches[0].us_per_switch;
  const sparse_switch = { nnz, host_us: median(hostSparse.slice(4)), done_ms: median(doneSparse.slice(4)), lora_done_ms: median(doneLora.slice(4)) };
  log(`sparse switch (${nnz} values): ${sparse_switch.host_us.toFixed(1)} us host, ${sparse_switch.done_ms.toFixed(2)} ms done`);

  // 32 sequences on 32 adapters against 32 on one.
  const rand = rng(7);
  const prompts = Array.from({ length: ROWS }, () => Array.from({ length: 6 + Math.floor(rand() * 8) }, () => Math.floor(rand() * 256)));
  const newTokens = 16;
  const gen = new Generator(model, { adapters: cache });
  const tokensPerSecond = async (adapters: string | (string | null)[], batch = prompts) => {
    const t0 = performance.now();
    await gen.generateBatch(batch, { maxNewTokens: newTokens, stopTokens: [], adapters });
    return (batch.length * newTokens) / ((performance.now() - t0) / 1000);
  };
  const many = prompts.map((_, i) => `u${i}`);
  const one = prompts.map(() => 'u0');
  await tokensPerSecond(many); // pipelines and activation shapes made before timing
  await tokensPerSecond('u0');
  const [multi, single, fixed] = await paired(5, [() => tokensPerSecond(many), () => tokensPerSecond(one), () => tokensPerSecond('u0')]);
  log(`batch of ${ROWS}: ${multi.toFixed(0)} tok/s on ${ROWS} adapters, ${single.toFixed(0)} on one (row map), ${fixed.toFixed(0)} on one (fixed slot)`);

  // One sequence with an adapter from the cache, the same adapter attached alone (fused), and merged.
  const merged = await CausalLM.fromCheckpoint(gpu, ckpt);
  const adapter = randomLora(model, 100, 8, ['q', 'v']);
  const lora = new Lora(gpu, merged.config, { rank: 8, alpha: 16, targetModules: ['q', 'v'] }, loraBase(merged));
  for (const [name, w] of adapter.modules) {
    gpu.write(lora.params.view(`${name}.lora_A`), w.A);
    gpu.write(lora.params.view(`${name}.lora_B`), w.B);
  }
  merged.transformer.hooks = lora;
  const plain = new Generator(merged);
  const decodeTokens = 32;
  const single1 = async (run: () => Promise<unknown>) => {
    const t0 = performance.now();
    await run();
    return decodeTokens / ((performance.now() - t0) / 1000);
  };
  const prompt = prompts[0];
  const viaCache = () => single1(() => gen.generate(prompt, { maxNewTokens: decodeTokens, stopTokens: [], adapters: 'u0' }));
  const setMerged = async (m: boolean) => {
    const rec = gpu.recorder();
    lora.setMerged(rec, m);
    await rec.submit();
  };
  const attached = async () => {
    await setMerged(false);
    return single1(() => plain.generate(prompt, { maxNewTokens: decodeTokens, stopTokens: [] }));
  };
  const inWeights = async () => {
    await setMerged(true);
    return single1(() => plain.generate(prompt, { maxNewTokens: decodeTokens, stopTokens: [] }));
  };
  await viaCache();
  await attached();
  await inWeights();
  const [adapterTps, attachedTps, mergedTps] = await paired(5, [viaCache, attached, inWeights]);
  log(`decode: ${adapterTps.toFixed(0)} tok/s with the cache's adapter, ${attachedTps.toFixed(0)} attached, ${mergedTps.toFixed(0)} merged`);
  lora.destroy();
  merged.destroy();
  cache.destroy();

  // Bytes per resident adapter, here and at Qwen2.5-0.5B's shapes.
  const qwen = parseConfig(QWEN25_05B_CONFIG);
  const limits = { maxBufferSize: gpu.limits.maxBufferSize, maxStorageBufferBindingSize: gpu.limits.maxStorageBufferBindingSize };
  const bytes: ServeBenchResult['bytes'] = [];
  for (const [name, config] of [['shipped tiny base', c], ['Qwen2.5-0.5B', qwen]] as const) {
    for (const [rank, targets] of [[8, ['q', 'v']], [16, ['all-linear']]] as const) {
      const cap = AdapterCache.capacity(config, limits, { rank, targetModules: [...targets], gpuBudgetBytes: 2 ** 30 });
      bytes.push({ model: name, rank, targets: targets.join(','), bytes_per_adapter: cap.bytesPerAdapter, adapters_per_buffer: cap.adaptersPerBuffer, adapters_in_1_gib: cap.adapters });
    }
  }
  model.destroy();
  const at = (n: number) => switches.find((s) => s.resident === n)!.us_per_switch;
  return {
    device: gpu.describe(),
    model: `${c.architecture}, hidden ${c.hiddenSize}, ${c.numLayers} layers (the shipped base)`,
    switches,
    sparse_switch,
    batch: { rows: ROWS, new_tokens: newTokens, multi_tokens_per_s: multi, single_tokens_per_s: single, fixed_slot_tokens_per_s: fixed },
    decode: { new_tokens: decodeTokens, adapter_tokens_per_s: adapterTps, merged_tokens_per_s: mergedTps, attached_tokens_per_s: attachedTps },
    bytes,
    ratios: {
      switch_us_10: at(10),
      switch_us_1000: at(1000),
      switch_us_10000: at(10_000),
      multi_adapter_vs_single_throughput: multi / single,
      multi_adapter_vs_fixed_slot_throughput: multi / fixed,
      sparse_vs_lora_switch: sparse_switch.host_us / loraUs,
      sparse_vs_lora_switch_done: sparse_switch.done_ms / sparse_switch.lora_done_ms,
      adapter_vs_merged_decode: adapterTps / mergedTps,
      adapter_vs_attached_decode: adapterTps / attachedTps,
    },
  };
}

export function formatServeBench(r: ServeBenchResult): string {
  const lines = [`adapter cache on ${r.model}`, r.device, ''];
  lines.push('resident   us/switch');
  for (const s of r.switches) lines.push(`${String(s.resident).padStart(8)} ${s.us_per_switch.toFixed(3).padStart(11)}`);
  lines.push('', `sparse switch (${r.sparse_switch.nnz} values): ${r.sparse_switch.host_us.toFixed(1)} us host, ${r.sparse_switch.done_ms.toFixed(2)} ms until done (LoRA: ${r.sparse_switch.lora_done_ms.toFixed(2)} ms)`);
  const b = r.batch;
  lines.push(`batch of ${b.rows}, ${b.new_tokens} new tokens: ${b.multi_tokens_per_s.toFixed(0)} tok/s on ${b.rows} adapters, ${b.single_tokens_per_s.toFixed(0)} on one (row map), ${b.fixed_slot_tokens_per_s.toFixed(0)} on one (fixed slot)`);
  const d = r.decode;
  lines.push(`one sequence, ${d.new_tokens} new tokens: ${d.adapter_tokens_per_s.toFixed(0)} tok/s through the cache, ${d.attached_tokens_per_s.toFixed(0)} attached alone, ${d.merged_tokens_per_s.toFixed(0)} merged`);
  lines.push('', 'model                 rank targets     bytes/adapter  per buffer  in 1 GiB');
  for (const x of r.bytes) lines.push(`${x.model.padEnd(21)} ${String(x.rank).padStart(4)} ${x.targets.padEnd(11)} ${String(x.bytes_per_adapter).padStart(13)} ${String(x.adapters_per_buffer).padStart(11)} ${String(x.adapters_in_1_gib).padStart(9)}`);
  lines.push('', 'ratios:', ...Object.entries(r.ratios).map(([k, v]) => `  ${k}: ${v.toFixed(3)}`));
  return lines.join('\n');
}
