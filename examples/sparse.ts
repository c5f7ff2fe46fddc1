import { CausalLM, FineTuner, mergedModelFiles, selectMask, shippedModel, sparseDeltaFile, type SparseFineTuning } from 'webgpu-finetune';

const model = shippedModel();
const text = (s: string) => [...s].map((c) => c.charCodeAt(0));
const calibrationBatches = ['next:abc=bcd', 'next:klm=lmn', 'next:uvw=vwx'].map((s) => ({ ids: [text(s)] }));
const base = await CausalLM.fromPretrained(model);               // frozen: no gradients, no optimizer
const { mask, cost } = await selectMask(base, calibrationBatches, {
  selection: 'sylva',           // K-FAC saliency; or 'fisher', 'snip', 'random' (SHiRA), 'columns' (PaCA)
  density: 0.01,                // or loraRank: 8 (r (in + out) per layer: LoRA's count, SHiRA's rule)
  granularity: 'element',       // or 16 | 32 | 64: square blocks
  budget: 'per-matrix',         // or 'global': the top scores over all layers
});
console.log(`mask: ${(100 * mask.density).toFixed(2)}% of ${cost.layers} layers`);
const maskFile = mask.toSafetensors(base.config);               // reusable; refused by any other base
const ft = await FineTuner.fromPretrained(model, { method: 'sparse', sparse: { mask }, optimizer: { lr: 3e-2 }, gpu: base.gpu });
for (let i = 0; i < 5; i++) console.log(`loss ${(await ft.step(calibrationBatches[i % 3])).loss.toFixed(3)}`);
// method 'sparse+lora' adds a LoRA adapter: { 'sparse+lora': { sparse: { mask }, lora: { rank: 8 } } }
const delta = await sparseDeltaFile(ft.method as SparseFineTuning, ft.model.config);   // indices + deltas per HF tensor
const merged = await mergedModelFiles(ft);                      // a Hugging Face model folder, any method
console.log(`mask file ${maskFile.byteLength} bytes, delta ${delta.byteLength} bytes, merged model: ${Object.keys(merged).sort().join(', ')}`);
ft.destroy();
base.destroy();
base.gpu.destroy();
