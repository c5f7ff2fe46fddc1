/**
 * Compute pipelines built once per (shader, entry point, override constants). Shapes never enter the
 * key: they travel as uniforms, so one pipeline serves every size.
 */
export type Constants = Record<string, number | boolean>;

export interface KernelId {
  shader: string;
  entryPoint: string;
  constants?: Constants;
}

export function pipelineKey({ shader, entryPoint, constants }: KernelId): string {
  const parts = Object.keys(constants ?? {})
    .sort()
    .map((k) => `${k}=${Number(constants![k])}`);
  return `${shader}:${entryPoint}${parts.length ? `:${parts.join(',')}` : ''}`;
}

function numericConstants(constants: Constants | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(constants ?? {})) out[k] = Number(v);
  return out;
}

export class PipelineCache {
  private modules = new Map<string, GPUShaderModule>();
  private pipelines = new Map<string, GPUComputePipeline>();

  constructor(
    private readonly device: GPUDevice,
    private readonly sources: Record<string, string>,
  ) {}

  get size(): number {
    return this.pipelines.size;
  }

  module(shader: string): GPUShaderModule {
    let m = this.modules.get(shader);
    if (!m) {
      const code = this.sources[shader];
      if (code === undefined) throw new Error(`unknown shader '${shader}'`);
      m = this.device.createShaderModule({ label: shader, code });
      this.modules.set(shader, m);
    }
    return m;
  }

  get(id: KernelId): GPUComputePipeline {
    const key = pipelineKey(id);
    let p = this.pipelines.get(key);
    if (!p) {
      p = this.device.createComputePipeline({
        label: key,
        layout: 'auto',
        compute: { module: this.module(id.shader), entryPoint: id.entryPoint, constants: numericConstants(id.constants) },
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
        const module = this.module(id.shader);
        const info = await module.getCompilationInfo();
        const errors = info.messages.filter((m) => m.type === 'error');
        if (errors.length) {
          throw new Error(`${id.shader}: ${errors.map((e) => `${e.lineNum}:${e.linePos} ${e.message}`).join('; ')}`);
        }
        const p = await this.device.createComputePipelineAsync({
          label: key,
          layout: 'auto',
          compute: { module, entryPoint: id.entryPoint, constants: numericConstants(id.constants) },
        });
        this.pipelines.set(key, p);
      }),
    );
  }
}
