/** webgpu-finetune: the runtime-neutral entry (browsers, workers; Node re-exports it from ./node.ts). */
export * from './errors.js';
export * from './gpu/index.js';
export * from './kernels/index.js';
