import { matmul, requestDevice } from 'webgpu-finetune';

const gpu = await requestDevice();              // navigator.gpu in browsers and workers, Dawn in Node
const a = gpu.upload(Float32Array.from({ length: 64 * 32 }, (_, i) => (i % 7) - 3));
const b = gpu.upload(Float32Array.from({ length: 48 * 32 }, (_, i) => (i % 5) - 2));
const c = gpu.createBuffer(64 * 48 * 4);
await gpu.run((rec) => matmul(rec, { a, b, c, M: 64, N: 48, K: 32, transB: true })); // c = a b^T
const out = await gpu.readF32(c);
console.log(`c[0][0] = ${out[0]}`);
gpu.destroy();
