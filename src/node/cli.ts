#!/usr/bin/env node
/**
 * Command line: `webgpu-finetune info` describes the WebGPU device this machine gives Node (adapter,
 * features, limits, kernel tuning). More commands arrive with the training engine.
 */
import { requestDevice } from '../node.js';

async function info(): Promise<void> {
  const gpu = await requestDevice({ powerPreference: 'high-performance' });
  const l = gpu.limits;
  console.log(`device:   ${gpu.describe()}`);
  console.log(`features: ${Object.entries(gpu.features).filter(([, on]) => on).map(([f]) => f).join(', ') || 'none'}`);
  console.log(`limits:   maxBufferSize ${l.maxBufferSize}, maxStorageBufferBindingSize ${l.maxStorageBufferBindingSize},`);
  console.log(`          workgroup storage ${l.maxComputeWorkgroupStorageSize} B, ${l.maxComputeInvocationsPerWorkgroup} invocations/workgroup`);
  console.log(`tuning:   matmul ${gpu.tuning.matmulVariant}, reductions ${gpu.tuning.reductionWorkgroupSize}-wide`);
  if (gpu.adapter.isSoftware) console.log('note:     a CPU implementation; expect ~1 GFLOP/s. Compare ratios, not absolute speed.');
  gpu.destroy();
}

const command = process.argv[2] ?? 'info';
const commands: Record<string, () => Promise<void>> = { info };
if (!commands[command]) {
  console.error(`unknown command '${command}'. Commands: ${Object.keys(commands).join(', ')}`);
  process.exit(2);
}
try {
  await commands[command]();
  process.exit(0);
} catch (e) {
  console.error(e instanceof Error ? `${e.name}: ${e.message}` : e);
  process.exit(1);
}
