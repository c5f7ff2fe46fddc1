import { FineTuner, peftAdapterFiles, readPeftAdapter, shippedModel, type Lora } from 'webgpu-finetune';

const model = shippedModel();
const ft = await FineTuner.fromPretrained(model, { method: 'lora', lora: { rank: 8 }, optimizer: { lr: 1e-2 } });
await ft.step({ ids: [[...'next:abc=bcd'].map((c) => c.charCodeAt(0))] });
const files = await peftAdapterFiles(ft.method as Lora, { baseModel: 'fixtures/tiny-llama-skills' }); // { 'adapter_config.json': ..., 'adapter_model.safetensors': ... }
const adapter = await readPeftAdapter({ config: files['adapter_config.json'], weights: files['adapter_model.safetensors'] }, ft.model.config);
const again = await FineTuner.fromPretrained(model, { method: 'lora', lora: adapter.options, gpu: ft.gpu });
for (const [name, data] of adapter.tensors) again.writeTensor(name, data);      // by PEFT name (c_attn's parts by engine name)
const batch = { ids: [...'next:xyz=yza'].map((c) => c.charCodeAt(0)) };
console.log(`same loss after the round trip: ${(await ft.model.loss(batch)) === (await again.model.loss(batch))}`);
again.destroy();
ft.destroy();
ft.gpu.destroy();
