/**
 * Batched command recording: kernels append dispatches, copies and clears; `submit()` encodes them into
 * one command buffer (consecutive dispatches share one compute pass) and writes every dispatch's
 * uniforms with a single queue write, and its recorded tables (`table()`) with another. Uniforms and
 * tables live in two device-wide buffers; reusing them across submissions is safe because queue writes
 * and submissions execute in queue order. Bind groups come from the device's cache (BindGroupCache).
 */
import { ShapeError } from '../errors.js';
import { asView, alignUp, type BufferLike, type TensorView } from './buffers.js';
import type { Gpu } from './gpu.js';
import type { KernelId } from './pipelines.js';
import { SHADER_INTERFACES } from '../kernels/shaders.gen.js';

/**
 * Words a recorder uploads with its submission (a per-dispatch table: the segments of a multi-tensor
 * kernel), bound as a read-only storage range of the device's table buffer. Like the uniforms, every
 * table of a submission goes up in one queue write.
 */
export class RecordedTable {
  constructor(
    readonly offset: number,
    readonly size: number,
  ) {}
}

/** One 4-byte field of a uniform struct, typed as the WGSL declares it. */
export type UniformValue = { type: 'u32' | 'i32' | 'f32'; value: number };

export interface DispatchSpec extends KernelId {
  /** Shown in validation errors and debug output. */
  label?: string;
  /** The uniform struct's fields by name (`{ rows, cols, eps }`), typed by the WGSL struct. */
  uniforms?: Record<string, number>;
  /**
   * Storage buffers by the names the WGSL gives its bindings (`{ x, stats, dy, dx }`): every binding the
   * entry point uses, and no other (WebGPU's automatic layout holds exactly those).
   */
  storage: Record<string, BufferLike | RecordedTable>;
  workgroups: [number, number?, number?];
}

/** A dispatch with its bindings and uniforms laid out by binding number and field order. */
interface ResolvedSpec extends KernelId {
  label?: string;
  uniforms: UniformValue[];
  /** Index i is binding i + 1; holes are bindings the entry point does not use. */
  storage: (BufferLike | RecordedTable | undefined)[];
  /** The WGSL name of each bound binding, for messages. */
  bindingNames: (string | undefined)[];
  workgroups: [number, number?, number?];
}

/** Checks names against the shader's generated interface and lays them out for the bind group. */
export function resolveBindings(spec: DispatchSpec): ResolvedSpec {
  const where = spec.label ?? `${spec.shader}.${spec.entryPoint}`;
  const iface = SHADER_INTERFACES[spec.shader];
  const entry = iface?.entryPoints[spec.entryPoint];
  if (!iface || !entry) throw new ShapeError(`${where}: shaders/${spec.shader}.wgsl has no entry point '${spec.entryPoint}'`);
  for (const name of Object.keys(spec.constants ?? {})) {
    if (!iface.overrides.includes(name)) throw new ShapeError(`${where}: '${name}' is not an override constant of shaders/${spec.shader}.wgsl (${iface.overrides.join(', ') || 'none'})`);
  }
  for (const name of Object.keys(spec.sizes ?? {})) {
    if (!(name in iface.constants)) throw new ShapeError(`${where}: size '${name}' is not a module constant of shaders/${spec.shader}.wgsl`);
  }
  const given = spec.storage;
  for (const name of Object.keys(given)) {
    if (!Object.hasOwn(iface.storage, name)) throw new ShapeError(`${where}: '${name}' is not a storage binding of shaders/${spec.shader}.wgsl (${Object.keys(iface.storage).join(', ')})`);
    if (!entry.storage.includes(name)) throw new ShapeError(`${where}: entry point ${spec.entryPoint} does not use binding '${name}' (it uses ${entry.storage.join(', ')})`);
  }
  const storage: (BufferLike | RecordedTable | undefined)[] = [];
  const bindingNames: (string | undefined)[] = [];
  for (const name of entry.storage) {
    if (!given[name]) throw new ShapeError(`${where}: entry point ${spec.entryPoint} uses binding '${name}': bind a buffer (the placeholder where the mode ignores it)`);
    const format = (given[name] as TensorView).format;
    if (format && iface.f32Storage.includes(name)) throw new ShapeError(`${where}: binding '${name}' reads f32, and the view bound there holds packed ${format} values`);
    storage[iface.storage[name] - 1] = given[name];
    bindingNames[iface.storage[name] - 1] = name;
  }
  const values = spec.uniforms ?? {};
  const fields = entry.uniforms ? (iface.uniforms?.fields ?? []) : [];
  for (const name of Object.keys(values)) {
    if (!fields.some(([f]) => f === name)) throw new ShapeError(`${where}: '${name}' is not a uniform of ${spec.entryPoint} in shaders/${spec.shader}.wgsl (${fields.map(([f]) => f).join(', ') || 'none'})`);
  }
  const uniforms = fields.map(([name, type]): UniformValue => {
    const value = values[name];
    if (value === undefined) throw new ShapeError(`${where}: uniform '${name}' is not set`);
    return { type, value };
  });
  return { shader: spec.shader, entryPoint: spec.entryPoint, constants: spec.constants, sizes: spec.sizes, label: spec.label, uniforms, storage, bindingNames, workgroups: spec.workgroups };
}

type Command =
  | { kind: 'dispatch'; spec: ResolvedSpec; uniformOffset: number; uniformSize: number }
  | { kind: 'copy'; src: TensorView; dst: TensorView; size: number }
  | { kind: 'clear'; dst: TensorView };

export interface SubmitOptions {
  /** Measure the GPU time of this submission with timestamp queries (when the device has them). */
  timed?: boolean;
}

export class CommandRecorder {
  private commands: Command[] = [];
  private uniformBytes = 0;
  private readonly tables: { words: Uint32Array; offset: number }[] = [];
  private tableBytes = 0;
  private submitted = false;

  constructor(readonly gpu: Gpu) {}

  get length(): number {
    return this.commands.length;
  }

  /**
   * One line per recorded command: kernel, constants, uniforms, workgroups and each binding's buffer
   * (by label), offset and size. Two recordings of the same work give the same lines (tests use it).
   */
  describe(): string[] {
    const at = (b: BufferLike | RecordedTable | undefined) => {
      if (!b) return '-';
      if (b instanceof RecordedTable) return `table@${b.offset}+${b.size}`;
      const v = asView(b);
      return `${v.buffer.label}@${v.offset}+${v.size}`;
    };
    return this.commands.map((c) => {
      if (c.kind === 'copy') return `copy ${at(c.src)} -> ${at(c.dst)} ${c.size}`;
      if (c.kind === 'clear') return `clear ${at(c.dst)}`;
      const s = c.spec;
      return `${s.shader}.${s.entryPoint} ${JSON.stringify(s.constants ?? {})}${s.sizes ? ` sizes=${JSON.stringify(s.sizes)}` : ''} u=${JSON.stringify(s.uniforms)} wg=${s.workgroups.join('x')} ${s.storage.map(at).join(' ')}`;
    });
  }

  dispatch(named: DispatchSpec): this {
    const spec = resolveBindings(named);
    const [x, y = 1, z = 1] = spec.workgroups;
    const maxDim = this.gpu.limits.maxComputeWorkgroupsPerDimension;
    if (x > maxDim || y > maxDim || z > maxDim) {
      throw new ShapeError(`${spec.label ?? spec.entryPoint}: dispatch ${x}x${y}x${z} exceeds ${maxDim} workgroups per dimension`);
    }
    const align = this.gpu.limits.minStorageBufferOffsetAlignment;
    const maxBinding = this.gpu.limits.maxStorageBufferBindingSize;
    spec.storage.forEach((b, i) => {
      if (!b || b instanceof RecordedTable) return;
      const v = asView(b);
      if (v.offset % align !== 0) {
        throw new ShapeError(`${spec.label ?? spec.entryPoint}: binding '${spec.bindingNames[i]}' offset ${v.offset} is not a multiple of ${align}`);
      }
      if (v.size > maxBinding) {
        throw new ShapeError(
          `${spec.label ?? spec.entryPoint}: binding '${spec.bindingNames[i]}' is ${v.size} bytes, over maxStorageBufferBindingSize ${maxBinding}`,
        );
      }
    });
    const uniformSize = spec.uniforms.length * 4;
    const uniformOffset = this.uniformBytes;
    if (uniformSize) this.uniformBytes = alignUp(uniformOffset + uniformSize, this.gpu.limits.minUniformBufferOffsetAlignment);
    if (x * y * z > 0) this.commands.push({ kind: 'dispatch', spec, uniformOffset, uniformSize });
    return this;
  }

  /** `words` uploaded with this submission, to bind as a read-only storage binding of a later dispatch. */
  table(words: Uint32Array): RecordedTable {
    if (this.submitted) throw new Error('CommandRecorder.table() after submit()');
    const offset = this.tableBytes;
    const size = Math.max(words.byteLength, 4);
    if (size > this.gpu.limits.maxStorageBufferBindingSize) throw new ShapeError(`a recorded table of ${size} bytes exceeds maxStorageBufferBindingSize`);
    this.tables.push({ words, offset });
    this.tableBytes = alignUp(offset + size, this.gpu.limits.minStorageBufferOffsetAlignment);
    return new RecordedTable(offset, size);
  }

  copy(src: BufferLike, dst: BufferLike, size?: number): this {
    const s = asView(src);
    const d = asView(dst);
    const n = size ?? Math.min(s.size, d.size);
    if (n > s.size || n > d.size) throw new ShapeError(`copy of ${n} bytes does not fit (src ${s.size}, dst ${d.size})`);
    if (s.buffer === d.buffer) throw new ShapeError('copy: WebGPU cannot copy between ranges of one buffer; use separate buffers');
    this.commands.push({ kind: 'copy', src: s, dst: d, size: n });
    return this;
  }

  /** Zero a buffer range. */
  clear(dst: BufferLike): this {
    this.commands.push({ kind: 'clear', dst: asView(dst) });
    return this;
  }

  /** Encode and submit everything recorded. With `timed`, resolves to the GPU time in ms (null without timestamps). */
  submit(options: SubmitOptions = {}): Promise<number | null> {
    if (this.submitted) throw new Error('CommandRecorder.submit() called twice');
    this.submitted = true;
    const gpu = this.gpu;
    gpu.throwIfFailed();
    const device = gpu.device;

    let uniformBuffer: GPUBuffer | undefined;
    if (this.uniformBytes > 0) {
      const data = new ArrayBuffer(this.uniformBytes);
      const u = new Uint32Array(data);
      const i = new Int32Array(data);
      const f = new Float32Array(data);
      for (const c of this.commands) {
        if (c.kind !== 'dispatch' || !c.spec.uniforms) continue;
        c.spec.uniforms.forEach((uv, k) => {
          const at = c.uniformOffset / 4 + k;
          if (uv.type === 'f32') f[at] = uv.value;
          else if (uv.type === 'i32') i[at] = uv.value;
          else u[at] = uv.value;
        });
      }
      uniformBuffer = gpu.uniformBuffer(this.uniformBytes);
      device.queue.writeBuffer(uniformBuffer, 0, data);
      gpu.work.uniformBytes += this.uniformBytes;
    }

    let tableBuffer: GPUBuffer | undefined;
    if (this.tableBytes > 0) {
      const data = new Uint32Array(this.tableBytes / 4);
      for (const t of this.tables) data.set(t.words, t.offset / 4);
      tableBuffer = gpu.tableBuffer(this.tableBytes);
      device.queue.writeBuffer(tableBuffer, 0, data);
      gpu.work.uniformBytes += this.tableBytes;
    }

    // Errors of this submission are caught by scopes and thrown by the next sync() or device call.
    device.pushErrorScope('out-of-memory');
    device.pushErrorScope('validation');
    let result: (() => Promise<number | null>) | null = null;
    try {
      result = this.encodeAndSubmit(uniformBuffer, tableBuffer, options.timed ?? false);
    } finally {
      gpu.watchErrorScope('submit');
      gpu.watchErrorScope('submit');
    }
    gpu.work.submits++;
    return result ? result() : Promise.resolve(null);
  }

  private encodeAndSubmit(uniformBuffer: GPUBuffer | undefined, tableBuffer: GPUBuffer | undefined, timed: boolean): (() => Promise<number | null>) | null {
    const gpu = this.gpu;
    const device = gpu.device;
    const timing = timed && gpu.features.timestampQuery ? gpu.timestampQuerySet() : undefined;
    const encoder = device.createCommandEncoder({ label: 'webgpu-finetune batch' });
    let pass: GPUComputePassEncoder | undefined;
    let passCount = 0;
    const lastPass = this.lastPassIndex();
    const endPass = () => {
      pass?.end();
      pass = undefined;
    };
    for (const c of this.commands) {
      if (c.kind === 'dispatch') {
        if (!pass) {
          const tw: GPUComputePassTimestampWrites | undefined = timing
            ? {
                querySet: timing,
                ...(passCount === 0 ? { beginningOfPassWriteIndex: 0 } : {}),
                ...(passCount === lastPass ? { endOfPassWriteIndex: 1 } : {}),
              }
            : undefined;
          pass = encoder.beginComputePass(
            tw && (tw.beginningOfPassWriteIndex !== undefined || tw.endOfPassWriteIndex !== undefined)
              ? { timestampWrites: tw }
              : {},
          );
          passCount++;
        }
        this.encodeDispatch(pass, c.spec, uniformBuffer, tableBuffer, c.uniformOffset, c.uniformSize);
      } else {
        endPass();
        if (c.kind === 'copy') encoder.copyBufferToBuffer(c.src.buffer, c.src.offset, c.dst.buffer, c.dst.offset, c.size);
        else encoder.clearBuffer(c.dst.buffer, c.dst.offset, c.dst.size);
      }
    }
    endPass();
    const result = timing && passCount > 0 ? gpu.resolveTimestamps(encoder, timing) : null;
    device.queue.submit([encoder.finish()]);
    return result;
  }

  private lastPassIndex(): number {
    let passes = 0;
    let inPass = false;
    for (const c of this.commands) {
      if (c.kind === 'dispatch') {
        if (!inPass) passes++;
        inPass = true;
      } else inPass = false;
    }
    return passes - 1;
  }

  private encodeDispatch(
    pass: GPUComputePassEncoder,
    spec: ResolvedSpec,
    uniformBuffer: GPUBuffer | undefined,
    tableBuffer: GPUBuffer | undefined,
    uniformOffset: number,
    uniformSize: number,
  ): void {
    const gpu = this.gpu;
    const pipeline = gpu.pipelines.get(spec);
    const entries: GPUBindGroupEntry[] = [];
    if (uniformSize > 0) entries.push({ binding: 0, resource: { buffer: uniformBuffer!, offset: uniformOffset, size: uniformSize } });
    spec.storage.forEach((b, i) => {
      if (!b) return;
      const v = b instanceof RecordedTable ? { buffer: tableBuffer!, offset: b.offset, size: b.size } : asView(b);
      entries.push({ binding: i + 1, resource: { buffer: v.buffer, offset: v.offset, size: v.size } });
    });
    const label = spec.label ?? `${spec.shader}:${spec.entryPoint}`;
    if (gpu.debug) gpu.device.pushErrorScope('validation');
    const work = gpu.work;
    const bindGroup = gpu.bindGroups.get(pipeline, entries, () => {
      work.bindGroups++;
      return gpu.device.createBindGroup({ label, layout: pipeline.getBindGroupLayout(0), entries });
    });
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    const [x, y = 1, z = 1] = spec.workgroups;
    pass.dispatchWorkgroups(x, y, z);
    work.dispatches++;
    const kernel = `${spec.shader}.${spec.entryPoint}`;
    work.byKernel.set(kernel, (work.byKernel.get(kernel) ?? 0) + 1);
    if (gpu.debug) gpu.watchErrorScope(label);
  }
}
