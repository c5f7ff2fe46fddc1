import { FineTuner, openCheckpoint, requestDevice, sampleGenerations, successorRows, toBatchInput, urlSource, type Gpu } from '../src/index.js';
import { formatKernelBench, runKernelBench } from '../bench/kernels.js';

const deviceEl = document.getElementById('device')!;
const out = document.getElementById('out')!;
const buttons = ['train', 'train-full', 'bench'].map((id) => document.getElementById(id) as HTMLButtonElement);

function describe(gpu: Gpu): string {
  const l = gpu.limits;
  return [
    `device:   ${gpu.describe()}`,
    `features: ${Object.entries(gpu.features).filter(([, on]) => on).map(([f]) => f).join(', ') || 'none'}`,
    `limits:   buffer ${(l.maxBufferSize / 2 ** 20).toFixed(0)} MiB, binding ${(l.maxStorageBufferBindingSize / 2 ** 20).toFixed(0)} MiB, workgroup storage ${l.maxComputeWorkgroupStorageSize} B`,
    `tuning:   matmul ${gpu.tuning.matmulVariant}, reductions ${gpu.tuning.reductionWorkgroupSize}-wide`,
  ].join('\n');
}

const print = (line: string) => (out.textContent += `${line}\n`);

async function finetune(gpu: Gpu, method: 'lora' | 'full'): Promise<void> {
  out.textContent = '';
  const source = urlSource(new URL('/models/tiny-llama', location.href).href);
  const ckpt = await openCheckpoint(source);
  print(`model: ${source.description} (${ckpt.config.architecture}, ${ckpt.config.numLayers} layers)`);
  const steps = method === 'lora' ? 60 : 50;
  const ft = await FineTuner.create(gpu, ckpt, {
    method,
    lora: { rank: 16, targetModules: ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] },
    optimizer: { lr: method === 'lora' ? 1e-2 : 3e-3, warmupSteps: 5, totalSteps: steps, schedule: 'cosine' },
  });
  try {
    const heldOut = toBatchInput(successorRows(64, 8, 1_000_000));
    const before = await ft.evaluate(heldOut);
    print(`held-out before: accuracy ${(100 * before.accuracy).toFixed(1)}%, loss ${before.loss.toFixed(3)}`);
    const t0 = performance.now();
    for (let s = 0; s < steps; s++) {
      const r = await ft.step(toBatchInput(successorRows(16, 8, s)));
      if (s % 10 === 0 || s === steps - 1) print(`step ${s + 1}: loss ${r.loss.toFixed(4)} (${(((s + 1) * 512) / ((performance.now() - t0) / 1000)).toFixed(0)} tokens/s)`);
    }
    const after = await ft.evaluate(heldOut);
    print(`held-out after: accuracy ${(100 * after.accuracy).toFixed(1)}%, loss ${after.loss.toFixed(3)}`);
    print(await sampleGenerations(ft));
  } finally {
    ft.destroy();
  }
}

try {
  const gpu = await requestDevice({ powerPreference: 'high-performance' });
  deviceEl.textContent = describe(gpu);
  const run = (task: () => Promise<void>) => async () => {
    buttons.forEach((b) => (b.disabled = true));
    try {
      await task();
    } catch (e) {
      print(e instanceof Error ? `${e.name}: ${e.message}` : String(e));
    } finally {
      buttons.forEach((b) => (b.disabled = false));
    }
  };
  buttons[0].onclick = run(() => finetune(gpu, 'lora'));
  buttons[1].onclick = run(() => finetune(gpu, 'full'));
  buttons[2].onclick = run(async () => {
    out.textContent = 'running...';
    out.textContent = formatKernelBench(await runKernelBench(gpu, { log: print }));
  });
  buttons.forEach((b) => (b.disabled = false));
} catch (e) {
  deviceEl.textContent = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}
