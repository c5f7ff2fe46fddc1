import { indexedDbRuns, shippedDatasetUrl, shippedModelUrl, WorkerFineTuneSession, type SessionSpec } from 'webgpu-finetune';

const rows = await fetch(shippedDatasetUrl('next-letter.jsonl', { base: new URL('/datasets/', location.origin) })).then((r) => r.blob());
const spec: SessionSpec = {
  model: shippedModelUrl(undefined, { base: new URL('/models/', location.origin) }).href,  // or a hub id ('Qwen/Qwen2.5-0.5B'), File objects (a picked folder)
  cache: true,                            // keep downloaded files in Cache Storage
  data: new File([rows], 'next-letter.jsonl'),   // a dropped File (read in the worker), or { name, bytes }
  dataset: { seqLength: 64, validation: 0.02 },
  train: { method: 'lora', lora: { rank: 16 }, quantize: 'nf4', steps: 4, batchSize: 4, optimizer: { lr: 5e-3 }, evalEvery: 2 },
  checkpoints: { indexedDb: `example-${Date.now()}`, every: 2, keep: 2 },   // IndexedDB, written atomically
  resume: 'if-any',                       // continue the run after a reload
};
const losses: number[] = [];
const session = await WorkerFineTuneSession.open(spec, { onEvent: (e) => e.type === 'step' && losses.push(e.loss) });
// const session = await FineTuneSession.open(spec, { onEvent });  // the same, in this thread
console.log(session.info.method);         // also: model, dataset report, steps, where it resumes from
await session.train();                    // pause(), resume(), cancel() meanwhile; events: plan, step, eval, checkpoint, done...
const text = await session.generate('next:abc=', { model: 'base', maxNewTokens: 4 }, (t) => console.log(t));   // streamed; model: 'tuned' by default
const peft = await session.exportAdapter();                                  // { 'adapter_config.json': ..., ... }
const merged = await session.exportMerged();
session.destroy();
const [latest] = await indexedDbRuns();   // the latest saved run: its checkpoints, size, and what the page stored with it
export const result = { losses, text, adapter: Object.keys(peft), merged: Object.keys(merged), saved: latest.checkpoints };
