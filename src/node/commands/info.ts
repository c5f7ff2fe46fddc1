/** `webgpu-finetune info`: the WebGPU device Node gets here. */
import { requestDevice } from '../../gpu/device.js';
import { HELP_FLAG, type Command } from '../flags.js';

export const infoCommand: Command = {
  name: 'info',
  summary: 'the WebGPU device Node gets here: adapter, features, limits, tuning',
  examples: [
    ['', 'what WebGPU device this machine has'],
  ],
  flags: { help: HELP_FLAG },
  run: async () => {
    const gpu = await requestDevice({ powerPreference: 'high-performance' });
    const l = gpu.limits;
    console.log(`device:   ${gpu.describe()}`);
    console.log(`features: ${Object.entries(gpu.features).filter(([, on]) => on).map(([f]) => f).join(', ') || 'none'}`);
    console.log(`limits:   maxBufferSize ${l.maxBufferSize}, maxStorageBufferBindingSize ${l.maxStorageBufferBindingSize},`);
    console.log(`          workgroup storage ${l.maxComputeWorkgroupStorageSize} B, ${l.maxComputeInvocationsPerWorkgroup} invocations/workgroup`);
    console.log('tuning:');
    for (const [key, value] of Object.entries(gpu.tuning)) console.log(`  ${key} ${value}: ${gpu.tuningReasons[key as keyof typeof gpu.tuning]}`);
    console.log(`dawn:     ${gpu.requested.dawnOptions?.join(' ') || 'defaults'}`);
    if (gpu.adapter.isSoftware) console.log('note:     a CPU implementation; expect ~1 GFLOP/s. Compare ratios, not absolute speed.');
    gpu.destroy();
  },
};
