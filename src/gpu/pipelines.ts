/**
 * Compute pipelines built once per (shader, entry point, override constants, sizes). Shapes never enter
 * the key: they travel as uniforms, so one pipeline serves every size.
 */
export type Constants = Record<string, number | boolean>;

export interface KernelId {
  shader: string;
  entryPoint: string;
  constants?: Constants;
  /**
   * Module constants (`const NAME = 256u;`) given other values in the WGSL text: a function-scope array's
   * length must be a constant expression, which an override constant is not, so an array sized to the
   * problem (attention's head rows) takes a size here. Each distinct set compiles a module of its own.
   */
  sizes?: Record<string, number>;
}

function sortedPairs(values: Record<string, number | boolean> | undefined): string {
  return Object.keys(values ?? {})
    .sort()
    .map((k) => `${k}=${Number(values![k])}`)
    .join(',');
}

/** The module a kernel's sizes select: the shader's name, with its sizes when it has any. */
export function moduleKey(shader: string, sizes?: Record<string, number>): string {
  const s = sortedPairs(sizes);
  return s ? `${shader}[${s}]` : shader;
}

export function pipelineKey({ shader, entryPoint, constants, sizes }: KernelId): string {
  const parts = sortedPairs(constants);
  return `${moduleKey(shader, sizes)}:${entryPoint}${parts ? `:${parts}` : ''}`;
}

/** The WGSL with each named module constant's value replaced; every name must be declared `const NAME = <integer>u;` once. */
export function sizedSource(shader: string, code: string, sizes: Record<string, number> | undefined): string {
  let out = code;
  for (const [name, value] of Object.entries(sizes ?? {})) {
    if (!Number.isInteger(value) || value < 1) throw new Error(`${shader}: size ${name} must be a positive integer, got ${value}`);
    const declaration = new RegExp(`^const ${name} = \\d+u;`, 'gm');
    const found = out.match(declaration)?.length ?? 0;
    if (found !== 1) throw new Error(`${shader}: size ${name} needs one 'const ${name} = <integer>u;' line, found ${found}`);
    out = out.replace(declaration, `const ${name} = ${value}u;`);
  }
  return out;
}

function numericConstants(constants: Constants | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(constants ?? {})) out[k] = Number(v);
  return out;
}

export class PipelineCache {
  private modules = new Map<string, GPUShaderModule>();
  private pipelines = new Map<string, GPUComputePipeline>();
  private compiling = new Map<string, Promise<GPUShaderModule>>();

  constructor(
    private readonly device: GPUDevice,
    private readonly sources: Record<string, string>,
  ) {}

  get size(): number {
    return this.pipelines.size;
  }

  module(shader: string, sizes?: Record<string, number>): GPUShaderModule {
    const key = moduleKey(shader, sizes);
    let m = this.modules.get(key);
    if (!m) {
      m = this.device.createShaderModule({ label: key, code: this.source(shader, sizes) });
      this.modules.set(key, m);
    }
    return m;
  }

  private source(shader: string, sizes?: Record<string, number>): string {
    const code = this.sources[shader];
    if (code === undefined) throw new Error(`unknown shader '${shader}'`);
    return sizedSource(shader, code, sizes);
  }

  get(id: KernelId): GPUComputePipeline {
    const key = pipelineKey(id);
    let p = this.pipelines.get(key);
    if (!p) {
      p = this.device.createComputePipeline({
        label: key,
        layout: 'auto',
        compute: { module: this.module(id.shader, id.sizes), entryPoint: id.entryPoint, constants: numericConstants(id.constants) },
      });
      this.pipelines.set(key, p);
    }
    return p;
  }

  /** Compile pipelines ahead of use without blocking; failures reject with the compiler's messages. */
  async warm(ids: KernelId[]): Promise<void> {
    await Promise.all(
      ids.map(async (id) => {
        const key = pipelineKey(id);
        if (this.pipelines.has(key)) return;
        const module = await this.checkedModule(id.shader, id.sizes);
        const p = await this.device.createComputePipelineAsync({
          label: key,
          layout: 'auto',
          compute: { module, entryPoint: id.entryPoint, constants: numericConstants(id.constants) },
        });
        this.pipelines.set(key, p);
      }),
    );
  }

  /**
   * Compile shader modules ahead of use (default: every shader), so a model's first step does not pay
   * for WGSL compilation; pipelines for the constants a kernel picks are then quick to create.
   */
  async warmModules(shaders: string[] = Object.keys(this.sources)): Promise<void> {
    await Promise.all(shaders.map((shader) => this.checkedModule(shader)));
  }

  /** The shader module, compiled inside an error scope so a broken shader rejects here, with line numbers. */
  private checkedModule(shader: string, sizes?: Record<string, number>): Promise<GPUShaderModule> {
    const key = moduleKey(shader, sizes);
    const cached = this.modules.get(key);
    if (cached) return Promise.resolve(cached);
    // Concurrent warm-ups of one shader share a single compilation.
    let pending = this.compiling.get(key);
    if (!pending) {
      pending = this.compileChecked(shader, sizes).finally(() => this.compiling.delete(key));
      this.compiling.set(key, pending);
    }
    return pending;
  }

  private async compileChecked(shader: string, sizes?: Record<string, number>): Promise<GPUShaderModule> {
    const key = moduleKey(shader, sizes);
    const code = this.source(shader, sizes);
    this.device.pushErrorScope('validation');
    const m = this.device.createShaderModule({ label: key, code });
    const [info, error] = await Promise.all([m.getCompilationInfo(), this.device.popErrorScope()]);
    const errors = info.messages.filter((msg) => msg.type === 'error');
    if (errors.length || error) {
      const detail = errors.map((e) => `${e.lineNum}:${e.linePos} ${e.message}`).join('; ') || error!.message;
      throw new Error(`${key}: ${detail}`);
    }
    this.modules.set(key, m);
    return m;
  }
}

/**
 * Bind groups by pipeline and bound ranges: a training step records the same dispatches over the same
 * buffers every time (uniforms and tables at the same offsets of the device's buffers), so after the
 * first step none is created. Buffers and pipelines are told apart by identity (an id per object, never
 * reused), so a destroyed buffer's groups are never found again; the cache is dropped whole when it grows
 * past `capacity`, which bounds what such groups hold on to.
 */
export class BindGroupCache {
  private readonly groups = new Map<string, GPUBindGroup>();
  private readonly ids = new WeakMap<object, number>();
  private nextId = 1;

  constructor(private readonly capacity = 8192) {}

  private id(o: object): number {
    let id = this.ids.get(o);
    if (id === undefined) this.ids.set(o, (id = this.nextId++));
    return id;
  }

  get(pipeline: GPUComputePipeline, entries: GPUBindGroupEntry[], create: () => GPUBindGroup): GPUBindGroup {
    let key = String(this.id(pipeline));
    for (const e of entries) {
      const r = e.resource as GPUBufferBinding;
      key += `|${e.binding}:${this.id(r.buffer)}:${r.offset ?? 0}:${r.size ?? ''}`;
    }
    let group = this.groups.get(key);
    if (!group) {
      if (this.groups.size >= this.capacity) this.groups.clear();
      group = create();
      this.groups.set(key, group);
    }
    return group;
  }

  get size(): number {
    return this.groups.size;
  }

  clear(): void {
    this.groups.clear();
  }
}
