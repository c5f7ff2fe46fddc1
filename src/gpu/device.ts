/**
 * Acquiring a WebGPU device in any runtime. This is the only module of the GPU layer that knows
 * whether it runs in a browser (navigator.gpu, also in workers) or in Node (Dawn via the `webgpu`
 * package, imported lazily so browser bundles never see it).
 */
import { WebGPUUnavailableError } from '../errors.js';
import { Gpu, type GpuTuning } from './gpu.js';

export type Runtime = 'browser' | 'node';

export interface RequestDeviceOptions {
  /** Adapter power preference; 'high-performance' picks a discrete GPU where there is a choice. */
  powerPreference?: GPUPowerPreference;
  /**
   * Dawn instance options for Node. Default: `enable-dawn-features=allow_unsafe_apis,
   * vulkan_enable_f16_on_nvidia` (without the f16 toggle when allowF16 is false), because Dawn hides
   * shader-f16 on NVIDIA's Vulkan driver and the experimental subgroup-matrix feature (tensor cores)
   * behind them. Pass [] for Dawn's defaults. Ignored in browsers, where the page cannot choose.
   */
  dawnOptions?: string[];
  /** Use f16 features when present (default true). */
  allowF16?: boolean;
  /** Use subgroup operations when present (default true); false gives every device the workgroup-memory paths. */
  allowSubgroups?: boolean;
  /** Wrap every dispatch in an error scope and keep shader text in errors (slow; for debugging). */
  debug?: boolean;
  /** Label prefix for every GPU object this device creates. */
  label?: string;
  /** Override the kernel choices made for this kind of device. */
  tuning?: Partial<GpuTuning>;
  /**
   * Limits below what the adapter offers (never above): the device is requested with them, and the
   * engine keeps to them even where they are below WebGPU's defaults, which a device never goes under.
   * How a test sees what a device with small storage bindings does: { maxStorageBufferBindingSize: 8 << 20 }.
   */
  limits?: Partial<Record<'maxStorageBufferBindingSize' | 'maxBufferSize', number>>;
}

/** SwiftShader's Vulkan driver as shipped by Debian's `chromium` package: the CPU fallback on GPU-less machines. */
export const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

/** Features requested whenever the adapter has them; the kernels choose by what the device then reports. */
const OPTIONAL_FEATURES: GPUFeatureName[] = ['shader-f16', 'subgroups', 'timestamp-query', 'chromium-experimental-subgroup-matrix'] as GPUFeatureName[];

/** The Dawn options Node devices get unless the caller gives their own. */
export function defaultDawnOptions(allowF16 = true): string[] {
  return [`enable-dawn-features=allow_unsafe_apis${allowF16 ? ',vulkan_enable_f16_on_nvidia' : ''}`];
}

export function detectRuntime(): Runtime {
  const nav = (globalThis as { navigator?: Navigator }).navigator;
  if (nav && 'gpu' in nav && nav.gpu) return 'browser';
  const proc = (globalThis as { process?: { versions?: { node?: string } } }).process;
  if (proc?.versions?.node) return 'node';
  return 'browser';
}

/** Request an adapter and a device with the adapter's full limits and the optional features it has. */
export async function requestDevice(requested: RequestDeviceOptions = {}): Promise<Gpu> {
  const runtime = detectRuntime();
  const options = runtime === 'node' ? { ...requested, dawnOptions: requested.dawnOptions ?? defaultDawnOptions(requested.allowF16 !== false) } : requested;
  const adapter = runtime === 'node' ? await nodeAdapter(options) : await browserAdapter(options);
  const declined = new Set<string>([
    ...(options.allowF16 === false ? ['shader-f16'] : []),
    ...(options.allowSubgroups === false ? ['subgroups', 'chromium-experimental-subgroup-matrix'] : []),
  ]);
  const wanted = OPTIONAL_FEATURES.filter((f) => adapter.features.has(f) && !declined.has(f));
  const requiredLimits: Record<string, number> = {};
  // Ask for everything the adapter offers: the defaults (e.g. 128 MiB storage bindings) are far below real GPUs.
  for (const key in adapter.limits) {
    const value = (adapter.limits as unknown as Record<string, unknown>)[key];
    if (typeof value === 'number') requiredLimits[key] = value;
  }
  for (const [key, value] of Object.entries(options.limits ?? {})) {
    if (!(Number.isSafeInteger(value) && value > 0)) throw new RangeError(`requestDevice: limits.${key} must be a positive integer, got ${value}`);
    requiredLimits[key] = Math.min(requiredLimits[key], value);
  }
  let device: GPUDevice;
  try {
    device = await adapter.requestDevice({
      label: options.label ?? 'webgpu-finetune',
      requiredFeatures: wanted,
      requiredLimits,
    });
  } catch (cause) {
    throw new WebGPUUnavailableError(`The adapter refused to create a device: ${String(cause)}`, { cause });
  }
  return new Gpu(device, adapter, runtime, options);
}

async function browserAdapter(options: RequestDeviceOptions): Promise<GPUAdapter> {
  const gpu = (globalThis as { navigator?: Navigator }).navigator?.gpu;
  if (!gpu) {
    throw new WebGPUUnavailableError(
      'This browser has no WebGPU (navigator.gpu is missing). Use a recent Chromium, Edge or Safari, ' +
        'serve the page over https or localhost, and for headless Chromium pass --enable-unsafe-webgpu.',
    );
  }
  const adapter = await gpu.requestAdapter({ powerPreference: options.powerPreference });
  if (!adapter) {
    throw new WebGPUUnavailableError(
      'navigator.gpu.requestAdapter() returned null: WebGPU is disabled or blocklisted for this GPU. ' +
        'Check chrome://gpu; headless Chromium without a GPU needs --use-webgpu-adapter=swiftshader.',
    );
  }
  return adapter;
}

interface DawnModule {
  create(options: string[]): GPU;
  globals: Record<string, unknown>;
}

const liveDawnInstances: GPU[] = [];

async function nodeAdapter(options: RequestDeviceOptions): Promise<GPUAdapter> {
  // A variable specifier keeps bundlers from pulling Dawn into browser builds.
  const specifier = 'webgpu';
  let dawn: DawnModule;
  try {
    dawn = (await import(/* @vite-ignore */ specifier)) as DawnModule;
  } catch (cause) {
    throw new WebGPUUnavailableError('Could not load the `webgpu` package (Dawn for Node). Run `npm install webgpu`.', {
      cause,
    });
  }
  Object.assign(globalThis, dawn.globals);
  const env = (globalThis as unknown as { process: { env: Record<string, string | undefined> } }).process.env;
  env.XDG_RUNTIME_DIR ??= '/tmp';
  const tryAdapter = async () => {
    const instance = dawn.create(options.dawnOptions ?? []);
    // Dawn tears the instance down when its JS object is collected, even with devices alive: keep it.
    liveDawnInstances.push(instance);
    return instance.requestAdapter({ powerPreference: options.powerPreference });
  };

  let adapter = await tryAdapter();
  // No hardware driver: fall back to SwiftShader when Debian's chromium provides it. The Vulkan loader
  // reads VK_ICD_FILENAMES when a new instance is created, so setting it now affects the next create().
  if (!adapter && !env.VK_ICD_FILENAMES && (await fileExists(SWIFTSHADER_ICD))) {
    env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
    adapter = await tryAdapter();
  }
  if (!adapter) {
    throw new WebGPUUnavailableError(
      'Dawn found no WebGPU adapter. Install a Vulkan driver for your GPU, or on a machine without one ' +
        `install Debian's \`chromium\` and \`libvulkan1\` packages (SwiftShader at ${SWIFTSHADER_ICD}).`,
    );
  }
  return adapter;
}

async function fileExists(path: string): Promise<boolean> {
  const specifier = 'node:fs';
  const fs = (await import(/* @vite-ignore */ specifier)) as typeof import('node:fs');
  return fs.existsSync(path);
}
