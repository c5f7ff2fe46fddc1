/** `webgpu-finetune select-mask`: pick a sparse fine-tuning mask on a dataset and save it for `train --mask`. */
import { writeFileAtomic } from '../../io/files.js';
import { CausalLM } from '../../model/causal-lm.js';
import { CALIBRATION_BATCH_TOKENS } from '../../train/main-task.js';
import { BLOCK_SIZES, selectMask, SELECTIONS, type BlockSize } from '../../methods/sparse/index.js';
import type { SelectProgress } from '../../methods/sparse/select.js';
import { progressReporter } from '../progress.js';
import { selectionProgress } from '../../train/trainer.js';
import { choiceFlag, HELP_FLAG, numberFlag, UsageError, type Command, type FlagValues } from '../flags.js';
import { DATA_FLAGS, datasetFromFlags, describeDataset, MODEL_FLAGS, openModel, readDataFlags } from '../setup.js';

const { validation: _validation, ...dataFlags } = DATA_FLAGS;

export const selectMaskCommand: Command = {
  name: 'select-mask',
  summary: 'choose the weights sparse fine-tuning trains (Sylva\'s second-order saliency, or another rule) from data, and save the mask',
  examples: [
    ['--data rows.jsonl --density 0.01 --out mask.safetensors', 'a Sylva mask of 1% of each weight, for train --method sparse --mask'],
  ],
  flags: {
    ...MODEL_FLAGS,
    ...dataFlags,
    selection: { type: 'string', value: SELECTIONS.join('|'), default: 'sylva', help: 'how weights are scored' },
    density: { type: 'string', value: 'X', default: '0.01', help: 'fraction of each weight selected' },
    granularity: { type: 'string', value: `element|${BLOCK_SIZES.join('|')}`, default: 'element', help: 'single weights or square blocks' },
    budget: { type: 'string', value: 'per-matrix|global', default: 'per-matrix', help: 'the density in every matrix, or the top scores over all' },
    'calibration-tokens': { type: 'string', value: 'N', default: '4096', help: 'tokens of the data the selection sees' },
    out: { type: 'string', value: 'FILE', help: 'where the mask goes (required), a .safetensors file' },
    help: HELP_FLAG,
  },
  run: selectMaskCommand_,
};

async function selectMaskCommand_(values: FlagValues): Promise<void> {
  if (values.out === undefined) throw new UsageError('select-mask: --out FILE is required');
  const selection = choiceFlag(values, 'selection', SELECTIONS);
  const density = numberFlag(values, 'density', { above: 0, max: 1 });
  const granularity = values.granularity === 'element' ? 'element' : (numberFlag(values, 'granularity', { integer: true }) as BlockSize);
  if (granularity !== 'element' && !BLOCK_SIZES.includes(granularity)) throw new UsageError(`--granularity must be element or one of ${BLOCK_SIZES.join(', ')}, got '${values.granularity}'`);
  const budget = choiceFlag(values, 'budget', ['per-matrix', 'global'] as const);
  const tokens = numberFlag(values, 'calibration-tokens', { integer: true, min: 1, max: 1 << 24 });
  const dataFlags = await readDataFlags({ ...values, validation: '0' });
  const m = await openModel(values, (l) => console.log(l));
  try {
    const data = await datasetFromFlags(dataFlags, m);
    for (const line of describeDataset(data)) console.log(line);
    const model = await CausalLM.fromCheckpoint(m.gpu, m.ckpt);
    try {
      const S = data.train.S;
      const batches = [...data.train.batches(Math.max(1, Math.floor(CALIBRATION_BATCH_TOKENS / S)), Math.ceil(tokens / S))];
      const progress = progressReporter(false, (l) => console.log(l));
      const onProgress = (p: SelectProgress) => progress(selectionProgress(p));
      const { mask, cost } = await selectMask(model, batches, { selection, density, granularity, budget, onProgress });
      await writeFileAtomic(String(values.out), mask.toSafetensors(m.ckpt.config));
      console.log(`mask:    ${selection}, ${(100 * mask.density).toFixed(2)}% of ${cost.layers} layers, ${cost.calibrationTokens} tokens, ${cost.seconds.toFixed(1)} s; saved to ${values.out}`);
    } finally {
      model.destroy();
    }
  } finally {
    m.gpu.destroy();
  }
}
