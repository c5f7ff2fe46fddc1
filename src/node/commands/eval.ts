/** `webgpu-finetune eval`: loss, perplexity and token accuracy of a model (or adapter, or run) on a dataset. */
import { evaluateRows } from '../../train/trainer.js';
import { HELP_FLAG, numberFlag, type Command, type FlagValues } from '../flags.js';
import { DATA_FLAGS, datasetFromFlags, describeDataset, MODEL_FLAGS, openModel, readDataFlags } from '../setup.js';
import { TUNED_FLAGS, tunedModel } from '../tuned.js';

const { validation: _validation, ...EVAL_DATA_FLAGS } = DATA_FLAGS;
// The data flags as evaluation reads them: the rows scored, and which of their tokens.
EVAL_DATA_FLAGS.data = { ...EVAL_DATA_FLAGS.data, help: 'the rows to score: .jsonl/.json (text, prompt+completion or chat messages), .txt or .parquet' };
EVAL_DATA_FLAGS['loss-on'] = { ...EVAL_DATA_FLAGS['loss-on'], help: 'score completions and assistant turns only, or every token' };

export const evalCommand: Command = {
  name: 'eval',
  summary: 'loss, perplexity and token accuracy on every row of a dataset (over the tokens training takes a loss on)',
  examples: [
    ['--run runs/qwen --data held-out.jsonl', 'a run\'s latest checkpoint on held-out rows'],
    ['--model Qwen/Qwen2.5-0.5B --adapter runs/qwen/adapter --data held-out.jsonl', 'a PEFT adapter over its base'],
  ],
  flags: { ...MODEL_FLAGS, ...TUNED_FLAGS, ...EVAL_DATA_FLAGS, 'batch-size': { type: 'string', value: 'B', default: '8', help: 'rows per pass' }, help: HELP_FLAG },
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
      // Loss and accuracy are over the same tokens, the ones training would take a loss on.
      const which = dataFlags.options.lossOn === 'all' ? 'every token after the first of each example (--loss-on all)' : 'completions, assistant turns and text rows with their end tokens (--loss-on completion)';
      console.log(`eval:    ${tuned.description}: loss ${e.loss.toFixed(4)}, perplexity ${e.perplexity.toFixed(3)}, token accuracy ${(100 * e.accuracy).toFixed(2)}% (greedy next token), both over the same ${e.tokens} tokens: ${which}`);
    } finally {
      tuned.destroy();
    }
  } finally {
    m.gpu.destroy();
  }
}
