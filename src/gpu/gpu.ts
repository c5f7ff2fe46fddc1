/**
 * A WebGPU device with what the kernels need around it: recorded limits and features, labelled buffer
 * creation with limit checks and memory accounting, a temporary-buffer pool, the pipeline cache,
 * batched submission, asynchronous readback and GPU timestamps. Device loss and uncaptured errors are
 * turned into typed errors thrown at the next call that touches the device.
 */
import {
  BufferTooLargeError,
  DeviceLostError,
  FeatureUnavailableError,
  GPUOutOfMemoryError,
  GPUValidationFailedError,
  ShapeError,
  WebGPUFinetuneError,
} from '../errors.js';
import { SHADERS, SHADER_VARIANTS } from '../kernels/shaders.gen.js';
import type { AttentionVariant } from '../kernels/attention.js';
import { asView, BufferPool, MAP_READ_DST, STORAGE, UNIFORM_DST, type BufferLike, type TensorView } from './buffers.js';
import type { Runtime, RequestDeviceOptions } from './device.js';
import { BindGroupCache, PipelineCache } from './pipelines.js';
import { CommandRecorder } from './recorder.js';

export interface GpuFeatures {
  shaderF16: boolean;
  subgroups: boolean;
  timestampQuery: boolean;
  /** Dawn's experimental subgroup matrices (cooperative matrices: tensor cores on NVIDIA, simdgroups on Apple). */
  subgroupMatrix: boolean;
}

export interface GpuLimits {
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
  maxComputeWorkgroupStorageSize: number;
  maxComputeInvocationsPerWorkgroup: number;
  maxComputeWorkgroupSizeX: number;
  maxComputeWorkgroupSizeY: number;
  maxComputeWorkgroupsPerDimension: number;
  maxStorageBuffersPerShaderStage: number;
  minStorageBufferOffsetAlignment: number;
  minUniformBufferOffsetAlignment: number;
  [name: string]: number;
}

/**
 * What the device was asked to do, counted by the engine where it asks: per training step these are the
 * fixed costs that dominate small models (each dispatch costs microseconds on a GPU, milliseconds on a
 * CPU implementation), whatever the arithmetic.
 */
export interface WorkCounts {
  /** Compute dispatches encoded. */
  dispatches: number;
  /** Command buffers submitted. */
  submits: number;
  /** Bind groups created. */
  bindGroups: number;
  /** Bytes of uniforms and recorded tables written to the device. */
  uniformBytes: number;
  /** GPU buffers created (pooled temporaries count when the pool makes one). */
  buffersCreated: number;
  /** Dispatches by kernel (`shader.entryPoint`). */
  byKernel: Map<string, number>;
}

export function emptyWork(): WorkCounts {
  return { dispatches: 0, submits: 0, bindGroups: 0, uniformBytes: 0, buffersCreated: 0, byKernel: new Map() };
}

export interface AdapterDescription {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallbackAdapter: boolean;
  /** True for CPU implementations (SwiftShader, llvmpipe): only ratios are meaningful there. */
  isSoftware: boolean;
}

/**
 * Per-device kernel choices. CPU implementations (SwiftShader) run a workgroup's invocations as
 * coroutines on SIMD lanes, so barriers are very expensive and shared-memory tiling does not pay:
 * measured there, a 4-invocation tree reduction runs ~20x faster than a 256-invocation one, the
 * barrier-free 'direct' matmul ~2x faster than the tiled one, and element-wise kernels ~2x faster with
 * 8 elements per invocation. GPUs want the opposite. Attention is the exception: its tiles are reused
 * across a whole row of keys per barrier, and the tiled kernels measured 1.3x (forward) to 1.5x
 * (backward) faster there too at 256..1024 tokens, and even at 64.
 */
export interface GpuTuning {
  /** Matmul family variant: 'tiled' (workgroup-memory tiles) or 'direct' (registers only). */
  matmulVariant: 'tiled' | 'direct';
  /** Workgroup size of kernels built on workgroup-wide reductions (a power of two). */
  reductionWorkgroupSize: number;
  /**
   * How those kernels reduce across their workgroup: 'subgroup' (one subgroupAdd/subgroupMax per
   * subgroup, then the few partials: needs the `subgroups` feature, any subgroup size) or 'workgroup'
   * (a tree in workgroup memory, log2 of the size in barriers; every device).
   */
  reductions: 'subgroup' | 'workgroup';
  /**
   * How kernels read 16-bit operands (frozen bf16/f16 weights, 16-bit activations): 'native' (f16 loads:
   * needs `shader-f16`) or 'packed' (u32 words unpacked by shifts and unpack2x16float; every device). The
   * same values either way.
   */
  halfLoads: 'native' | 'packed';
  /**
   * The multi-adapter shrink (x A^T per row's adapter): 'direct' (one invocation per output, no
   * barriers) or 'cooperative' (one workgroup per output, reduced as `reductions` says).
   */
  multiLoraShrink: 'direct' | 'cooperative';
  /** Elements each invocation of an element-wise kernel (AdamW, element-wise ops) handles. */
  elementsPerInvocation: number;
  /**
   * Attention training kernels: 'tiled' (rows staged in workgroup memory), 'blocked' (32 x 32 score blocks
   * in workgroup memory, register-blocked like a matmul; CPU implementations) or 'direct' (one invocation
   * per row).
   */
  attentionVariant: AttentionVariant;
  /**
   * Products that share their buffers (a layer's q, k and v; a weight's and its bias's gradients; a
   * product and the residual it adds) in one dispatch of the grouped matmul (true), or each in its own,
   * matmul.wgsl's where it can (false). Fewer dispatches, each reading its shapes from a table.
   */
  groupedProducts: boolean;
}

/** The kernel choices for a kind of device, each with the reason it was made (see Gpu.tuningReasons). */
export function defaultTuning(isSoftware: boolean, features: Partial<Pick<GpuFeatures, 'subgroups' | 'shaderF16'>> = {}, swiftShader = false): GpuTuning {
  const reductions = features.subgroups ? 'subgroup' : 'workgroup';
  const halfLoads = features.shaderF16 ? 'native' : 'packed';
  const groupedProducts = !swiftShader;
  return isSoftware
    ? { matmulVariant: 'direct', reductionWorkgroupSize: 4, reductions, halfLoads, multiLoraShrink: 'direct', elementsPerInvocation: 8, attentionVariant: swiftShader ? 'blocked' : 'tiled', groupedProducts }
    : { matmulVariant: 'tiled', reductionWorkgroupSize: 256, reductions, halfLoads, multiLoraShrink: 'cooperative', elementsPerInvocation: 1, attentionVariant: 'tiled', groupedProducts };
}

function defaultReasons(isSoftware: boolean, features: GpuFeatures, subgroupSizes: string, swiftShader: boolean): Record<keyof GpuTuning, string> {
  const kind = isSoftware ? 'a CPU implementation: barriers and workgroup memory are dear' : 'a GPU';
  return {
    matmulVariant: `default for ${kind}`,
    reductionWorkgroupSize: `default for ${kind}`,
    reductions: features.subgroups
      ? `the device has 'subgroups' (subgroup size ${subgroupSizes}): one subgroup operation and three barriers per reduction`
      : `the device lacks 'subgroups': a tree in workgroup memory`,
    halfLoads: features.shaderF16 ? "the device has 'shader-f16': f16 loads" : "the device lacks 'shader-f16': packed u32 words",
    multiLoraShrink: `default for ${kind}`,
    elementsPerInvocation: `default for ${kind}`,
    attentionVariant: swiftShader
      ? 'SwiftShader: score blocks computed as matmuls are, with no per-invocation head-row arrays, measured faster than the tiled kernels'
      : 'the tiled kernels measured faster than one invocation per row on GPUs and lavapipe',
    groupedProducts: swiftShader
      ? 'SwiftShader: a dispatch costs little beside its arithmetic, and it runs the grouped kernel\'s table-driven loops 1.3 to 1.5x slower than matmul.wgsl\'s'
      : 'fewer dispatches, each a fixed cost on a GPU (lavapipe runs the grouped kernel as fast as matmul.wgsl)',
  };
}

export interface MemoryStats {
  /** Bytes in live buffers created through this device wrapper. */
  currentBytes: number;
  peakBytes: number;
  buffers: number;
}

type TypedArray = Float32Array | Uint32Array | Int32Array | Uint8Array | Uint16Array;

export class Gpu {
  readonly device: GPUDevice;
  readonly runtime: Runtime;
  readonly adapter: AdapterDescription;
  readonly features: GpuFeatures;
  readonly limits: GpuLimits;
  readonly pipelines: PipelineCache;
  /** Bind groups reused across submissions (see BindGroupCache). */
  readonly bindGroups = new BindGroupCache();
  readonly pool: BufferPool;
  readonly tuning: GpuTuning;
  /** Why each kernel choice of `tuning` was made: the device's kind and features, or the caller's override. */
  readonly tuningReasons: Record<keyof GpuTuning, string>;
  readonly debug: boolean;
  /** Resolves when the device is lost, with the typed error every later call throws. */
  readonly lost: Promise<DeviceLostError>;
  /** The options the device was made with (in Node, with the Dawn options it got by default). */
  readonly requested: RequestDeviceOptions;
  /** What was asked of the device so far, counted where it happens (see WorkCounts). */
  readonly work: WorkCounts = emptyWork();

  private lostError: DeviceLostError | null = null;
  /** Rejections of the operations now waiting on the device, called if it is lost (see untilLost). */
  private readonly lostWaiters = new Set<(e: DeviceLostError) => void>();
  private pendingErrors: WebGPUFinetuneError[] = [];
  private scopeChecks = new Set<Promise<void>>();
  private uniforms: GPUBuffer | null = null;
  private tables: GPUBuffer | null = null;
  private querySet: GPUQuerySet | null = null;
  private readonly placeholders = new Map<'read' | 'write', GPUBuffer>();
  private memory: MemoryStats = { currentBytes: 0, peakBytes: 0, buffers: 0 };
  private readonly labelPrefix: string;

  constructor(device: GPUDevice, adapter: GPUAdapter, runtime: Runtime, options: RequestDeviceOptions = {}) {
    this.device = device;
    this.runtime = runtime;
    this.debug = options.debug ?? false;
    this.labelPrefix = options.label ?? 'wgft';
    const info = (adapter as GPUAdapter & { info?: GPUAdapterInfo }).info;
    const vendor = info?.vendor ?? '';
    const architecture = info?.architecture ?? '';
    const isFallbackAdapter = Boolean(
      (info as { isFallbackAdapter?: boolean } | undefined)?.isFallbackAdapter ??
        (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter,
    );
    this.adapter = {
      vendor,
      architecture,
      device: info?.device ?? '',
      description: info?.description ?? '',
      isFallbackAdapter,
      isSoftware: isFallbackAdapter || /swiftshader|llvmpipe|lavapipe/i.test(`${vendor} ${architecture} ${info?.description ?? ''}`),
    };
    this.features = {
      shaderF16: device.features.has('shader-f16'),
      subgroups: device.features.has('subgroups'),
      timestampQuery: device.features.has('timestamp-query'),
      subgroupMatrix: device.features.has('chromium-experimental-subgroup-matrix' as GPUFeatureName),
    };
    if (options.tuning?.reductions === 'subgroup' && !this.features.subgroups) {
      device.destroy();
      throw new FeatureUnavailableError('subgroups', "tuning.reductions 'subgroup'");
    }
    if (options.tuning?.halfLoads === 'native' && !this.features.shaderF16) {
      device.destroy();
      throw new FeatureUnavailableError('shader-f16', "tuning.halfLoads 'native'");
    }
    const sizes = (device as GPUDevice & { adapterInfo?: { subgroupMinSize?: number; subgroupMaxSize?: number } }).adapterInfo ?? info;
    const { subgroupMinSize: lo, subgroupMaxSize: hi } = (sizes ?? {}) as { subgroupMinSize?: number; subgroupMaxSize?: number };
    const subgroupSizes = lo === undefined ? 'unknown' : lo === hi ? `${lo}` : `${lo}..${hi}`;
    const swiftShader = /swiftshader/i.test(`${vendor} ${architecture} ${info?.description ?? ''}`);
    this.tuning = { ...defaultTuning(this.adapter.isSoftware, this.features, swiftShader), ...options.tuning };
    const reasons = defaultReasons(this.adapter.isSoftware, this.features, subgroupSizes, swiftShader);
    for (const key of Object.keys(options.tuning ?? {}) as (keyof GpuTuning)[]) reasons[key] = 'set by the caller';
    this.tuningReasons = reasons;
    this.requested = options;
    const limits: Record<string, number> = {};
    for (const key in device.limits) {
      const v = (device.limits as unknown as Record<string, unknown>)[key];
      if (typeof v === 'number') limits[key] = v;
    }
    // Limits asked below the device's defaults (which a device never goes under) hold for the engine's own checks.
    for (const [key, v] of Object.entries(options.limits ?? {})) limits[key] = Math.min(limits[key], v);
    this.limits = limits as GpuLimits;
    // Shaders with a variant for a feature the tuning uses compile that variant, under the same name.
    this.pipelines = new PipelineCache(device, {
      ...SHADERS,
      ...(this.tuning.reductions === 'subgroup' ? SHADER_VARIANTS.subgroups : {}),
      ...(this.tuning.halfLoads === 'native' ? SHADER_VARIANTS.f16 : {}),
    });
    this.pool = new BufferPool(this);
    this.lost = device.lost.then((info) => {
      const error = (this.lostError = new DeviceLostError(String(info.reason ?? 'unknown'), info.message));
      for (const reject of this.lostWaiters) reject(error);
      this.lostWaiters.clear();
      return error;
    });
    device.onuncapturederror = (event: GPUUncapturedErrorEvent) => {
      this.pendingErrors.push(toTypedError(event.error));
    };
  }

  /** Human-readable one-line description. */
  describe(): string {
    const a = this.adapter;
    const name = [a.vendor, a.architecture, a.device, a.description].filter(Boolean).join(' ');
    return `${name || 'unknown adapter'} (${this.runtime}${a.isSoftware ? ', software' : ''})`;
  }

  get isLost(): boolean {
    return this.lostError !== null;
  }

  memoryStats(): MemoryStats {
    return { ...this.memory };
  }

  resetPeakMemory(): void {
    this.memory.peakBytes = this.memory.currentBytes;
  }

  /**
   * Throws the device-lost error, or the oldest uncaptured GPU error if any. One mistake usually cascades
   * (invalid bind group, then invalid pass, then invalid command buffer), so the rest are dropped with it.
   */
  throwIfFailed(): void {
    if (this.lostError) throw this.lostError;
    const [first, ...rest] = this.pendingErrors;
    this.pendingErrors = [];
    if (first) {
      if (rest.length) first.message += ` (followed by ${rest.length} more error${rest.length > 1 ? 's' : ''})`;
      throw first;
    }
  }

  /** Throws BufferTooLargeError when a buffer of `size` bytes exceeds the device's maxBufferSize. */
  checkBufferSize(size: number, label = 'buffer'): void {
    const bytes = Math.max(4, Math.ceil(size / 4) * 4);
    if (bytes > this.limits.maxBufferSize) {
      throw new BufferTooLargeError(`buffer '${label}'`, bytes, this.limits.maxBufferSize, 'maxBufferSize');
    }
  }

  createBuffer(size: number, usage: number = STORAGE, label = 'buffer'): GPUBuffer {
    this.throwIfFailed();
    this.checkBufferSize(size, label);
    const bytes = Math.max(4, Math.ceil(size / 4) * 4);
    const buffer = this.device.createBuffer({ size: bytes, usage, label: `${this.labelPrefix}:${label}` });
    this.memory.currentBytes += bytes;
    this.memory.buffers++;
    this.work.buffersCreated++;
    this.memory.peakBytes = Math.max(this.memory.peakBytes, this.memory.currentBytes);
    return buffer;
  }

  /** Like createBuffer, but waits for the allocation and reports out-of-memory as a typed error. */
  async allocate(size: number, usage: number = STORAGE, label = 'buffer'): Promise<GPUBuffer> {
    this.device.pushErrorScope('out-of-memory');
    const buffer = this.createBuffer(size, usage, label);
    const error = await this.device.popErrorScope();
    if (error) {
      this.destroyBuffer(buffer);
      throw new GPUOutOfMemoryError(`allocating ${size} bytes for '${label}': ${error.message}`);
    }
    return buffer;
  }

  destroyBuffer(buffer: GPUBuffer): void {
    this.memory.currentBytes -= buffer.size;
    this.memory.buffers--;
    buffer.destroy();
  }

  /** A new storage buffer holding `data`. */
  upload(data: TypedArray, label = 'upload', usage: number = STORAGE): GPUBuffer {
    const buffer = this.createBuffer(data.byteLength, usage, label);
    this.write(buffer, data);
    return buffer;
  }

  write(target: BufferLike, data: TypedArray, byteOffset = 0): void {
    this.throwIfFailed();
    const v = asView(target);
    if (byteOffset + data.byteLength > v.size) {
      throw new RangeError(`writing ${data.byteLength} bytes at ${byteOffset} overflows a ${v.size}-byte view`);
    }
    // writeBuffer needs a multiple of 4 bytes; every dtype here is 4-byte aligned in practice.
    this.device.queue.writeBuffer(v.buffer, v.offset + byteOffset, data.buffer, data.byteOffset, data.byteLength);
  }

  /** Fill a view with copies of a 32-bit pattern (e.g. NaN to poison outputs in tests). */
  fill(target: BufferLike, value: number, as: 'f32' | 'u32' = 'f32'): void {
    const v = asView(target);
    const n = v.size / 4;
    const data = as === 'f32' ? new Float32Array(n).fill(value) : new Uint32Array(n).fill(value);
    this.write(v, data);
  }

  /** Read a view back to the host. Resolves after all previously submitted work. */
  async read(source: BufferLike, byteOffset = 0, byteSize?: number): Promise<ArrayBuffer> {
    this.throwIfFailed();
    const v = asView(source);
    const size = byteSize ?? v.size - byteOffset;
    const staging = this.pool.acquire(size, MAP_READ_DST, 'readback');
    const encoder = this.device.createCommandEncoder({ label: 'readback' });
    encoder.copyBufferToBuffer(v.buffer, v.offset + byteOffset, staging, 0, Math.ceil(size / 4) * 4);
    this.device.queue.submit([encoder.finish()]);
    try {
      await this.mapOrFail(staging);
      const out = staging.getMappedRange(0, Math.ceil(size / 4) * 4).slice(0, size);
      staging.unmap();
      this.pool.release(staging);
      await Promise.all(this.scopeChecks);
      this.throwIfFailed();
      return out;
    } catch (e) {
      throw (await this.lostWithin(100)) ?? e;
    }
  }

  async readF32(source: BufferLike, byteOffset = 0, count?: number): Promise<Float32Array> {
    const format = (source as TensorView).format;
    if (format) throw new ShapeError(`readF32: this view holds packed ${format} values; read() its words`);
    return new Float32Array(await this.read(source, byteOffset, count === undefined ? undefined : count * 4));
  }

  async readU32(source: BufferLike, byteOffset = 0, count?: number): Promise<Uint32Array> {
    return new Uint32Array(await this.read(source, byteOffset, count === undefined ? undefined : count * 4));
  }

  /** Start recording a batch of commands. */
  recorder(): CommandRecorder {
    return new CommandRecorder(this);
  }

  /** Record with `fn`, submit, and wait for completion. */
  async run(fn: (rec: CommandRecorder) => void): Promise<void> {
    const rec = this.recorder();
    fn(rec);
    await rec.submit();
    await this.sync();
  }

  /** Wait for all submitted work; surfaces device loss and uncaptured errors. */
  async sync(): Promise<void> {
    this.throwIfFailed();
    await this.untilLost(this.device.queue.onSubmittedWorkDone());
    await Promise.all(this.scopeChecks);
    this.throwIfFailed();
  }

  /**
   * Pop the innermost error scope without blocking; its error (only the first inside a scope is kept,
   * which drops the cascade one mistake causes) is thrown by the next sync() or device call.
   */
  watchErrorScope(label: string): void {
    const check: Promise<void> = this.device.popErrorScope().then(
      (error) => {
        this.scopeChecks.delete(check);
        if (error) this.pendingErrors.push(toTypedError(error, label));
      },
      () => {
        this.scopeChecks.delete(check); // popping fails only once the device is lost, reported elsewhere
      },
    );
    this.scopeChecks.add(check);
  }

  /** A tiny storage buffer bound where an entry point declares a binding that the chosen mode ignores. */
  placeholder(use: 'read' | 'write' = 'read'): GPUBuffer {
    // A dispatch may leave both a read-only and a writable binding unused: WebGPU forbids one buffer
    // in both roles within a dispatch, so writable bindings get a placeholder of their own.
    let b = this.placeholders.get(use);
    if (!b) this.placeholders.set(use, (b = this.createBuffer(256, STORAGE, use === 'read' ? 'placeholder' : 'writable placeholder')));
    return b;
  }

  /** The device-wide uniform buffer, grown to at least `bytes`. */
  uniformBuffer(bytes: number): GPUBuffer {
    if (!this.uniforms || this.uniforms.size < bytes) {
      let size = 64 * 1024;
      while (size < bytes) size *= 2;
      const grown = this.createBuffer(size, UNIFORM_DST, 'uniforms'); // the old one stays if this fails
      if (this.uniforms) this.destroyBuffer(this.uniforms);
      this.uniforms = grown;
    }
    return this.uniforms;
  }

  /** The device-wide buffer of recorded tables (CommandRecorder.table), grown to at least `bytes`. */
  tableBuffer(bytes: number): GPUBuffer {
    if (!this.tables || this.tables.size < bytes) {
      let size = 64 * 1024;
      while (size < bytes) size *= 2;
      const grown = this.createBuffer(size, STORAGE, 'recorded tables'); // the old one stays if this fails
      if (this.tables) this.destroyBuffer(this.tables);
      this.tables = grown;
    }
    return this.tables;
  }

  timestampQuerySet(): GPUQuerySet {
    this.querySet ??= this.device.createQuerySet({ type: 'timestamp', count: 2, label: 'timestamps' });
    return this.querySet;
  }

  /** Encode the timestamp resolve; the returned function (call after submit) reads the elapsed ms. */
  resolveTimestamps(encoder: GPUCommandEncoder, querySet: GPUQuerySet): () => Promise<number | null> {
    const resolve = this.createBuffer(16, 0x0200 | 0x0004, 'timestamps-resolve'); // QUERY_RESOLVE | COPY_SRC
    const staging = this.pool.acquire(16, MAP_READ_DST, 'timestamps-read');
    encoder.resolveQuerySet(querySet, 0, 2, resolve, 0);
    encoder.copyBufferToBuffer(resolve, 0, staging, 0, 16);
    return async () => {
      try {
        await this.mapOrFail(staging);
        const t = new BigUint64Array(staging.getMappedRange(0, 16).slice(0));
        staging.unmap();
        this.pool.release(staging);
        const ns = Number(t[1] - t[0]);
        // Some implementations report zeros or non-monotonic values; callers then fall back to wall clock.
        return t[1] > t[0] && Number.isFinite(ns) ? ns / 1e6 : null;
      } finally {
        this.destroyBuffer(resolve);
      }
    };
  }

  /** A copy of the counts so far; `workSince(before)` gives what was asked of the device since a copy. */
  workCounts(): WorkCounts {
    return { ...this.work, byKernel: new Map(this.work.byKernel) };
  }

  workSince(before: WorkCounts): WorkCounts {
    const now = this.work;
    const byKernel = new Map<string, number>();
    for (const [k, n] of now.byKernel) if (n - (before.byKernel.get(k) ?? 0) > 0) byKernel.set(k, n - (before.byKernel.get(k) ?? 0));
    return {
      dispatches: now.dispatches - before.dispatches,
      submits: now.submits - before.submits,
      bindGroups: now.bindGroups - before.bindGroups,
      uniformBytes: now.uniformBytes - before.uniformBytes,
      buffersCreated: now.buffersCreated - before.buffersCreated,
      byKernel,
    };
  }

  /** Release pooled temporaries and the device. */
  destroy(): void {
    this.pool.trim();
    this.bindGroups.clear();
    this.device.destroy();
  }

  private async mapOrFail(buffer: GPUBuffer): Promise<void> {
    await this.untilLost(buffer.mapAsync(0x0001 /* GPUMapMode.READ */));
  }

  /**
   * `work`, or the device-lost error if the device is lost first. Racing `work` against the `lost`
   * promise would leave a reaction on that never-settling promise per call (a heap leak of every
   * readback); a waiter set entry is removed as soon as `work` settles.
   */
  private untilLost<T>(work: Promise<T>): Promise<T> {
    if (this.lostError) return Promise.reject(this.lostError);
    return new Promise<T>((resolve, reject) => {
      this.lostWaiters.add(reject);
      work.then(
        (value) => {
          this.lostWaiters.delete(reject);
          resolve(value);
        },
        (error) => {
          this.lostWaiters.delete(reject);
          reject(error);
        },
      );
    });
  }

  private async lostWithin(ms: number): Promise<DeviceLostError | null> {
    try {
      await this.untilLost(new Promise((r) => setTimeout(r, ms)));
      return null;
    } catch (e) {
      return e instanceof DeviceLostError ? e : null;
    }
  }
}

function toTypedError(error: GPUError, label?: string): WebGPUFinetuneError {
  const name = (error as { constructor?: { name?: string } }).constructor?.name ?? '';
  const message = label ? `${label}: ${error.message}` : error.message;
  if (name.includes('OutOfMemory')) return new GPUOutOfMemoryError(message);
  return new GPUValidationFailedError(message);
}
