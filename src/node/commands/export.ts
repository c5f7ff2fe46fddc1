/** `webgpu-finetune export`: a training run's latest checkpoint as the method's files and/or a merged model. */
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { writeFileAtomic } from '../../io/files.js';
import { methodDefinition } from '../../methods/registry.js';
import { mergedModelFiles } from '../../train/export.js';
import { choiceFlag, HELP_FLAG, UsageError, type Command, type FlagValues } from '../flags.js';
import { MODEL_FLAGS, openModel } from '../setup.js';
import { tunedModel } from '../tuned.js';

export const exportCommand: Command = {
  name: 'export',
  summary: 'write a training run as its adapter (PEFT files, sparse delta) and/or a merged Hugging Face model',
  examples: [
    ['--run runs/qwen --format both', 'the PEFT adapter and a merged Hugging Face model folder'],
  ],
  flags: {
    ...MODEL_FLAGS,
    run: { type: 'string', value: 'DIR', help: 'the training run\'s output folder (required)' },
    format: { type: 'string', value: 'adapter|merged|both', default: 'adapter', help: 'what to write' },
    out: { type: 'string', value: 'DIR', help: 'where (default: the run folder\'s adapter/ and merged/)' },
    help: HELP_FLAG,
  },
  run: exportRun,
};

async function exportRun(values: FlagValues): Promise<void> {
  if (values.run === undefined) throw new UsageError('export: --run DIR is required (a train --output folder)');
  const format = choiceFlag(values, 'format', ['adapter', 'merged', 'both'] as const);
  const m = await openModel(values, (l) => console.log(l));
  try {
    const tuned = await tunedModel(values, m);
    try {
      const ft = tuned.ft!;
      const out = resolve(String(values.out ?? values.run));
      const write = async (dir: string, files: Record<string, Uint8Array>) => {
        await mkdir(dir, { recursive: true });
        for (const [name, bytes] of Object.entries(files)) await writeFileAtomic(join(dir, name), bytes);
        console.log(`saved:   ${dir} (${Object.keys(files).length} files)`);
      };
      const definition = methodDefinition(ft.options.method);
      if (format !== 'merged') {
        const files = (await definition.exportFiles?.(ft.method, m.ckpt.config, { baseModel: String(values.model) })) ?? null;
        if (!files) throw new UsageError(`method '${ft.options.method}' has no adapter format${definition.exportFiles ? ' with these options' : ''}; use --format merged`);
        await write(join(out, 'adapter'), files);
      }
      if (format !== 'adapter') await write(join(out, 'merged'), await mergedModelFiles(ft));
    } finally {
      tuned.destroy();
    }
  } finally {
    m.gpu.destroy();
  }
}
