/**
 * A model as a command uses it: the base alone, the base with a PEFT adapter (--adapter DIR), or the
 * fine-tuner a training run left (--run DIR, its latest checkpoint).
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { CausalLM } from '../model/causal-lm.js';
import { readPeftAdapter } from '../methods/lora/peft.js';
import { FineTuner } from '../train/finetuner.js';
import { loadFineTunedRun } from '../train/trainer.js';
import { folderCheckpointStore } from './checkpoint-folder.js';
import { UsageError, type FlagTable, type FlagValues } from './flags.js';
import { warn, type OpenedModel } from './setup.js';

export const TUNED_FLAGS: FlagTable = {
  adapter: { type: 'string', value: 'DIR', help: 'a PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors) on the base' },
  run: { type: 'string', value: 'DIR', help: 'a training run\'s output folder: its latest checkpoint' },
};

export interface Tuned {
  model: CausalLM;
  ft: FineTuner | null;
  description: string;
  destroy(): void;
}

export async function tunedModel(values: FlagValues, m: OpenedModel): Promise<Tuned> {
  if (values.adapter !== undefined && values.run !== undefined) throw new UsageError('--adapter and --run both name what to put on the base: give one');
  if (values.run !== undefined) {
    const dir = String(values.run);
    if (!(await stat(join(dir, 'checkpoints')).catch(() => null))?.isDirectory()) throw new UsageError(`--run: '${dir}' has no checkpoints folder (a train --output folder)`);
    const { ft, step, checkpoint } = await loadFineTunedRun(m.gpu, m.ckpt, folderCheckpointStore(join(dir, 'checkpoints')));
    return { model: ft.model, ft, description: `${dir} (${checkpoint}, step ${step})`, destroy: () => ft.destroy() };
  }
  if (values.adapter !== undefined) {
    const dir = String(values.adapter);
    const read = async (f: string) => readFile(join(dir, f)).catch(() => {
      throw new UsageError(`--adapter: '${dir}' has no ${f}`);
    });
    const adapter = await readPeftAdapter({ config: new Uint8Array(await read('adapter_config.json')), weights: new Uint8Array(await read('adapter_model.safetensors')) }, m.ckpt.config);
    warn(adapter.warnings);
    const ft = await FineTuner.create(m.gpu, m.ckpt, { method: 'lora', lora: adapter.options });
    try {
      for (const [name, data] of adapter.tensors) ft.writeTensor(name, data);
    } catch (e) {
      ft.destroy();
      throw e;
    }
    return { model: ft.model, ft, description: `PEFT adapter ${dir}`, destroy: () => ft.destroy() };
  }
  const model = await CausalLM.fromCheckpoint(m.gpu, m.ckpt);
  return { model, ft: null, description: 'the base model', destroy: () => model.destroy() };
}
