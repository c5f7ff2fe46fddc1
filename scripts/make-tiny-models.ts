/**
 * Writes the shipped tiny models (src/model/shipped.ts) to public/models/<name>/ in Hugging Face format.
 * Usage: tsx scripts/make-tiny-models.ts [outDir] [--name NAME] [--arch llama|qwen2|qwen3|mistral|gemma2|gemma3|gpt2 --seed N --hidden N --layers N]
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SHIPPED_MODELS } from '../src/model/shipped.js';
import { tinyModelFiles, type TinyModelOptions } from '../src/model/tiny.js';

const args = process.argv.slice(2);
const flag = (name: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const outDir = args[0] && !args[0].startsWith('--') ? args[0] : 'public/models';
let models: Record<string, TinyModelOptions> = SHIPPED_MODELS;
if (flag('name')) {
  models = {
    [flag('name')!]: {
      architecture: (flag('arch') ?? 'llama') as TinyModelOptions['architecture'],
      seed: Number(flag('seed') ?? 0),
      hiddenSize: Number(flag('hidden') ?? 64),
      numLayers: Number(flag('layers') ?? 2),
    },
  };
}
for (const [name, options] of Object.entries(models)) {
  const dir = join(outDir, name);
  mkdirSync(dir, { recursive: true });
  for (const [file, content] of Object.entries(tinyModelFiles(options))) writeFileSync(join(dir, file), content);
  console.log(`wrote ${dir}`);
}
