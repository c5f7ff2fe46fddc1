import { FineTuner, METHODS, methodNames, openCheckpoint, PRETRAINED_BASE, requestDevice, fineTuneOnTask, taskDefaults, taskFineTuneOptions, urlSource, type Gpu, type MethodName } from '../src/index.js';
import { formatKernelBench, runKernelBench } from '../bench/kernels.js';

const deviceEl = document.getElementById('device')!;
const out = document.getElementById('out')!;
const buttons = ['train', 'bench'].map((id) => document.getElementById(id) as HTMLButtonElement);
// Every registered method, LoRA first selected.
const methodSelect = document.getElementById('method') as HTMLSelectElement;
for (const name of methodNames()) methodSelect.add(new Option(`${name}: ${METHODS[name].summary}`, name, name === 'lora', name === 'lora'));

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

async function finetune(gpu: Gpu, method: MethodName): Promise<void> {
  out.textContent = '';
  const source = urlSource(new URL(`/models/${PRETRAINED_BASE.name}`, location.href).href);
  const ckpt = await openCheckpoint(source);
  print(`model: ${source.description} (${ckpt.config.architecture}, ${ckpt.config.numLayers} layers)`);
  const ft = await FineTuner.create(gpu, ckpt, await taskFineTuneOptions(gpu, ckpt, method, { ...taskDefaults(method), rows: 8, log: print }));
  try {
    await fineTuneOnTask(ft, { steps: taskDefaults(method).steps, rows: 8, log: print });
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
  buttons[0].onclick = run(() => finetune(gpu, methodSelect.value as MethodName));
  buttons[1].onclick = run(async () => {
    out.textContent = 'running...';
    out.textContent = formatKernelBench(await runKernelBench(gpu, { log: print }));
  });
  buttons.forEach((b) => (b.disabled = false));
} catch (e) {
  deviceEl.textContent = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}
