import { FineTuner, shippedModel } from 'webgpu-finetune';

const model = shippedModel();
const full = await FineTuner.fromPretrained(model, { method: 'lora', lora: { rank: 16 } });
const qlora = await FineTuner.fromPretrained(model, {
  method: 'lora', lora: { rank: 16 }, gpu: full.gpu,
  quantize: 'nf4',              // QLoRA's NormalFloat, absmax per 64 values; or 'int4' / { format: 'int4', groupSize: 32 | 64 | 128 }
});                             // { format: 'nf4', doubleQuant: true }: the absmax 8-bit too (QLoRA's double quantization)
// About 0.14x of the f32 base; embeddings, norms and the LM head keep baseDtype.
console.log(`linear weights: ${qlora.model.linearWeightBytes} bytes 4-bit, ${full.model.linearWeightBytes} in f32`);
qlora.destroy();
full.destroy();
full.gpu.destroy();
