import { FineTuner, Generator, loadTokenizer, shippedModel } from 'webgpu-finetune';

const model = shippedModel();                                    // or a hub id ('Qwen/Qwen2-0.5B'), a URL, a folder, File[]
const ft = await FineTuner.fromPretrained(model, {
  method: 'lora',
  lora: { rank: 16, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'] },
  optimizer: { lr: 1e-2, warmupSteps: 2, totalSteps: 10, schedule: 'cosine', maxGradNorm: 1 },
  gradientAccumulation: 2,                                       // ft.step() updates every second call
  onProgress: (p) => p.bytesLoaded === p.bytesTotal && console.log(`loaded ${p.bytesTotal} bytes`),
});                                                              // options.gpu: a device of yours; hub: deadlines, retries, signal
const tokenizer = await loadTokenizer(model);
const ids = tokenizer.encode('next:abc=bcd');
const lossMask = ids.map((_, i) => (i >= 9 ? 1 : 0));            // train on the answer only (optional)
for (let i = 0; i < 20; i++) await ft.step({ ids: [ids], lossMask });
const { loss, accuracy } = await ft.evaluate({ ids: [ids], lossMask });
console.log(`loss ${loss.toFixed(3)}, accuracy ${accuracy.toFixed(2)}`);
const w = await ft.model.readHf('model.layers.0.self_attn.q_proj.weight'); // tensors by Hugging Face name
console.log(`q_proj: ${w.length} weights`);

const gen = new Generator(ft.model);                             // KV cache; the adapter stays attached
const { tokens } = await gen.generate(tokenizer.encode('next:abc='), { maxNewTokens: 4 });
console.log(`greedy: ${tokenizer.decode(tokens)}`);
const many = await gen.generateBatch(['next:pqr=', 'next:xyz='].map((p) => tokenizer.encode(p)), { maxNewTokens: 4, temperature: 0.7, topP: 0.9 });
console.log(`sampled: ${many.map((r) => tokenizer.decode(r.tokens)).join(', ')}`);
gen.destroy();
ft.destroy();
ft.gpu.destroy();
