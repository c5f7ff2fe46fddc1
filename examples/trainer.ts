import { mkdtempSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { folderCheckpointStore, loadDataset, loadTokenizer, openCheckpoint, requestDevice, shippedDatasetUrl, shippedModel, Trainer } from 'webgpu-finetune';

const source = shippedModel();                        // or await resolveSource('Qwen/Qwen2.5-0.5B'), a URL, a folder
const bytes = new Uint8Array(await readFile(shippedDatasetUrl()));   // prompt/completion rows, as JSON Lines
const data = await loadDataset({ name: 'next-letter.jsonl', bytes }, await loadTokenizer(source), { seqLength: 64, validation: 0.02 });
const output = mkdtempSync(join(tmpdir(), 'run-'));
const gpu = await requestDevice();
const trainer = await Trainer.create(gpu, await openCheckpoint(source), data, {
  method: 'lora', lora: { rank: 16, targetModules: ['all-linear'] }, quantize: 'nf4',
  steps: 4, batchSize: 4, microBatch: 'auto', optimizer: { lr: 5e-3, warmupRatio: 0.03, schedule: 'cosine' },
  evalEvery: 2, checkpoints: { store: folderCheckpointStore(join(output, 'checkpoints')), every: 2, keep: 2 }, resume: 'if-any',
  onEvent: (e) => { if (e.type === 'step') console.log(`step ${e.step}: loss ${e.loss.toFixed(3)}, ${e.tokensPerSecond.toFixed(0)} tokens/s`); },
});
const result = await trainer.train();                 // trainer.pause(), resume(), cancel() meanwhile
console.log(`${result.reason} at step ${result.step}, held-out loss ${result.evals.at(-1)!.loss.toFixed(3)}`);
trainer.destroy();
gpu.destroy();
