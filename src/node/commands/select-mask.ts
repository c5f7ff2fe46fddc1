/** `webgpu-finetune select-mask`: pick a sparse fine-tuning mask on a dataset and save it for `train --mask`. */
import { writeFileAtomic } from '../../io/files.js';
import { CausalLM } from '../../model/causal-lm.js';
import { calibrationRows, selectMask, SPARSE_FIELDS, type Granularity, type Selection } from '../../methods/sparse/index.js';
import type { OptionField } from '../../methods/fields.js';
import { fieldFlag, readFieldFlag } from '../method-flags.js';
import type { SelectProgress } from '../../methods/sparse/select.js';
import { progressReporter } from '../progress.js';
import { selectionProgress } from '../../train/progress.js';
import { choiceFlag, HELP_FLAG, UsageError, type Command, type FlagValues } from '../flags.js';
import { DATA_FLAGS, datasetFromFlags, describeDataset, MODEL_FLAGS, openModel, readDataFlags } from '../setup.js';

const { validation: _validation, ...dataFlags } = DATA_FLAGS;

/** The sparse method's own fields for how a mask is chosen, with their defaults. */
const SELECTION_FIELDS = ['selection', 'calibration-tokens', 'density', 'granularity'].map((name) => SPARSE_FIELDS.find((f) => f.name === name)) as (OptionField & { kind: 'choice' | 'number' | 'integer' })[];

export const selectMaskCommand: Command = {
  name: 'select-mask',
  summary: 'choose the weights sparse fine-tuning trains (Sylva\'s second-order saliency, or another rule) from data, and save the mask',
  examples: [
    ['--data rows.jsonl --density 0.01 --out mask.safetensors', 'a Sylva mask of 1% of each weight, for train --method sparse --mask'],
  ],
  flags: {
    ...MODEL_FLAGS,
    ...dataFlags,
    ...Object.fromEntries(SELECTION_FIELDS.map((f) => [f.name, fieldFlag(f)])),
    budget: { type: 'string', value: 'per-matrix|global', default: 'per-matrix', help: 'the density in every matrix, or the top scores over all' },
    out: { type: 'string', value: 'FILE', help: 'where the mask goes (required), a .safetensors file' },
    help: HELP_FLAG,
  },
  run: selectMaskCommand_,
};

async function selectMaskCommand_(values: FlagValues): Promise<void> {
  if (values.out === undefined) throw new UsageError('select-mask: --out FILE is required');
  const [selection, tokens, density, granularity] = SELECTION_FIELDS.map((f) => (values[f.name] === undefined ? f.default : readFieldFlag(f, values))) as [Selection, number, number, Granularity];
  const budget = choiceFlag(values, 'budget', ['per-matrix', 'global'] as const);
  const dataFlags = await readDataFlags({ ...values, validation: '0' });
  const m = await openModel(values, (l) => console.log(l));
  try {
    const data = await datasetFromFlags(dataFlags, m);
    for (const line of describeDataset(data)) console.log(line);
    const model = await CausalLM.fromCheckpoint(m.gpu, m.ckpt);
    try {
      const batches = calibrationRows(data, tokens);
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
