/** `webgpu-finetune eval`: loss, perplexity and token accuracy of a model (or adapter, or run) on a dataset. */
import { evaluateRows } from '../../train/trainer.js';
import { HELP_FLAG, numberFlag, type Command, type FlagValues } from '../flags.js';
import { DATA_FLAGS, datasetFromFlags, describeDataset, MODEL_FLAGS, openModel, readDataFlags } from '../setup.js';
import { TUNED_FLAGS, tunedModel } from '../tuned.js';

const { validation: _validation, ...dataFlags } = DATA_FLAGS;

export const evalCommand: Command = {
  name: 'eval',
  summary: 'loss, perplexity and token accuracy on every row of a dataset',
  flags: { ...MODEL_FLAGS, ...TUNED_FLAGS, ...dataFlags, 'batch-size': { type: 'string', value: 'B', default: '8', help: 'rows per pass' }, help: HELP_FLAG },
  run: evaluate,
};

async function evaluate(values: FlagValues): Promise<void> {
  const rows = numberFlag(values, 'batch-size', { integer: true, min: 1, max: 4096 });
  const dataFlags = await readDataFlags({ ...values, validation: '0' });
  const m = await openModel(values, (l) => console.log(l));
  try {
    const data = await datasetFromFlags(dataFlags, m);
    for (const line of describeDataset(data)) console.log(line);
    const tuned = await tunedModel(values, m);
    try {
      const e = await evaluateRows(tuned.model, data.train, { rowsPerPass: rows, accuracy: true });
      console.log(`eval:    ${tuned.description}: loss ${e.loss.toFixed(4)}, perplexity ${e.perplexity.toFixed(3)}, token accuracy ${(100 * e.accuracy).toFixed(2)}% over ${e.tokens} tokens`);
    } finally {
      tuned.destroy();
    }
  } finally {
    m.gpu.destroy();
  }
}
