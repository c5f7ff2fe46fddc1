/**
 * Adapters the engine writes in PEFT's formats, with the engine's logits, for the reference scripts to
 * load into PEFT and compare (scripts/reference/make_supertuning_fixtures.py): Super-Tuning files from a
 * sparse mask of a global budget (every module padded to one sparsity) and from sparse+LoRA with
 * per-module ranks and alphas (Supra mode, padded and rescaled to one rank and scale). Written to
 * test/fixtures/reference/engine/<case>/ by `npx tsx scripts/reference/engine-adapters.ts`.
 */
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { folderSource } from '../../src/io/sources.js';
import { writeSafetensors } from '../../src/io/safetensors.js';
import { openCheckpoint } from '../../src/model/checkpoint.js';
import { methodDefinition } from '../../src/methods/registry.js';
import { requestDevice } from '../../src/node.js';
import { FineTuner, type FineTuneOptions } from '../../src/train/finetuner.js';

const ROOT = join(import.meta.dirname, '..', '..', 'test', 'fixtures', 'reference');
const CASES: Record<string, { base: string; options: FineTuneOptions }> = {
  'supertuning-global-mask': { base: 'llama', options: { method: 'sparse', sparse: { selection: 'random', density: 0.05, budget: 'global', targetModules: ['q', 'up', 'down'] } } },
  'supertuning-supra-patterns': {
    base: 'llama',
    options: { method: 'sparse+lora', 'sparse+lora': { sparse: { selection: 'random', density: 0.02, targetModules: ['q', 'k'] }, lora: { rank: 2, targetModules: ['q', 'v', 'down'], rankPattern: { down_proj: 3 }, alphaPattern: { v_proj: 5 } } } },
  },
};

const gpu = await requestDevice();
for (const [name, { base, options }] of Object.entries(CASES)) {
  const folder = join(ROOT, 'models', base);
  const ids = (JSON.parse(readFileSync(join(folder, 'expected.json'), 'utf8')) as { ids: number[][] }).ids;
  const ckpt = await openCheckpoint(folderSource(folder));
  const ft = await FineTuner.create(gpu, ckpt, { ...options, optimizer: { lr: 3e-2 } });
  // Three steps on shifted copies of the case's ids: every trained tensor moves.
  for (let s = 1; s <= 3; s++) await ft.step({ ids: ids.map((row) => row.map((t) => (t + s) % ckpt.config.vocabSize)) });
  const files = (await methodDefinition(options.method).exportFiles!(ft.method, ckpt.config, { baseModel: `models/${base}` }))!;
  const out = join(ROOT, 'engine', name);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  for (const f of ['adapter_config.json', 'adapter_model.safetensors']) writeFileSync(join(out, f), files[f]);
  const logits = await ft.model.logits({ ids });
  writeFileSync(join(out, 'logits.safetensors'), writeSafetensors({ logits: { dtype: 'F32', shape: [ids.length, ids[0].length, ckpt.config.vocabSize], data: logits } }, { format: 'pt' }));
  writeFileSync(join(out, 'expected.json'), JSON.stringify({ base }, null, 1) + '\n');
  console.log(`engine ${name}: written`);
  ft.destroy();
}
gpu.destroy();
process.exit(0);
