import { AdapterCache, CausalLM, FineTuner, Generator, peftAdapterFiles, shippedModel, type Lora } from 'webgpu-finetune';

const model = shippedModel();
const text = (s: string) => [...s].map((c) => c.charCodeAt(0));
const base = await CausalLM.fromPretrained(model, { quantize: 'nf4' });
// Two adapters to serve: one as PEFT files, one as a run just trained it.
const ft = await FineTuner.fromPretrained(model, { method: 'lora', lora: { rank: 8 }, optimizer: { lr: 1e-2 }, gpu: base.gpu });
for (let i = 0; i < 5; i++) await ft.step({ ids: [text('next:abc=bcd')] });
const files = await peftAdapterFiles(ft.method as Lora, {});

const cache = new AdapterCache(base, { gpuBudgetBytes: 1 << 30 });  // LRU past the budget
await cache.addPeft('support-bot', { config: files['adapter_config.json'], weights: files['adapter_model.safetensors'] });
await cache.addFromMethod('fresh', ft.method);                   // what a run just trained (LoRA, sparse, sparse+LoRA)
const gen = new Generator(base, { adapters: cache });
const one = await gen.generate(text('next:abc='), { maxNewTokens: 4, adapters: 'support-bot' });
const rows = await gen.generateBatch([text('next:abc='), text('next:abc='), text('next:abc=')], { maxNewTokens: 4, adapters: ['support-bot', 'fresh', null] }); // one per row
const { rows: losses = [] } = await cache.evaluate({ ids: [text('next:abc=bcd'), text('next:abc=bcd')] }, ['support-bot', null]);  // each row's loss
const decode = (t: number[]) => String.fromCharCode(...t.filter((x) => x < 256));
console.log(`support-bot: ${decode(one.tokens)}; per row: ${rows.map((r) => decode(r.tokens)).join(' | ')}; losses ${losses.map((r) => r.loss.toFixed(2)).join(', ')}`);
console.log(`capacity: ${AdapterCache.capacity(base.config, base.gpu.limits, { rank: 16, targetModules: ['all-linear'], gpuBudgetBytes: 1 << 30 }).adapters} adapters of rank 16 in 1 GiB`);
gen.destroy();
ft.destroy();
base.destroy();
base.gpu.destroy();
