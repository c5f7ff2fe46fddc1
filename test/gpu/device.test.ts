import { SHADER_INTERFACES } from '../../src/kernels/shaders.gen.js';
import { describe, expect, it } from 'vitest';
import {
  BufferTooLargeError,
  DeviceLostError,
  GPUValidationFailedError,
  detectRuntime,
  matmul,
  requestDevice,
  ShapeError,
  view,
  launch1d,
  PipelineCache,
  type CommandRecorder,
} from '../../src/index.js';
import { pipelineKey, sizedSource } from '../../src/gpu/pipelines.js';
import { testGpu } from '../helpers.js';

describe('device', () => {
  it('reports the runtime, the adapter, real limits and features', async () => {
    const gpu = await testGpu();
    const inBrowser = typeof window !== 'undefined';
    expect(gpu.runtime).toBe(inBrowser ? 'browser' : 'node');
    expect(detectRuntime()).toBe(gpu.runtime);
    // The adapter's limits are requested, not WebGPU's defaults (128 MiB bindings, 16 KiB workgroup storage).
    expect(gpu.limits.maxStorageBufferBindingSize).toBeGreaterThanOrEqual(128 * 1024 * 1024);
    expect(gpu.limits.maxComputeWorkgroupStorageSize).toBeGreaterThanOrEqual(16 * 1024);
    expect(typeof gpu.features.timestampQuery).toBe('boolean');
    expect(typeof gpu.features.subgroupMatrix).toBe('boolean');
    expect(gpu.describe()).toMatch(/\((node|browser)/);
    // In Node, Dawn is asked for what it hides by default (f16 on NVIDIA, experimental subgroup matrices).
    if (!inBrowser) expect(gpu.requested.dawnOptions).toEqual(['enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia']);
  });

  it.skipIf(typeof window !== 'undefined')('takes Dawn options from the caller, and leaves out the f16 toggle when f16 is not wanted', async () => {
    const { requestDevice, defaultDawnOptions } = await import('../../src/gpu/device.js');
    expect(defaultDawnOptions(false)).toEqual(['enable-dawn-features=allow_unsafe_apis']);
    const gpu = await requestDevice({ dawnOptions: [], allowF16: false });
    expect(gpu.requested.dawnOptions).toEqual([]);
    expect(gpu.features.shaderF16).toBe(false);
    gpu.destroy();
  });

  it('caches pipelines by shader, entry point and constants, never by shape beyond a kernel\'s few workgroup shapes', async () => {
    // A device of its own: the counts below assume no other test has made these pipelines yet.
    const gpu = await requestDevice({ label: 'pipeline cache' });
    const a = gpu.createBuffer(4 * 64);
    const b = gpu.createBuffer(4 * 64);
    const c = gpu.createBuffer(4 * 64);
    await gpu.run((rec) => matmul(rec, { a, b, c, M: 2, N: 3, K: 4, variant: 'direct' }));
    const after = gpu.pipelines.size;
    await gpu.run((rec) => matmul(rec, { a, b, c, M: 7, N: 5, K: 3, variant: 'direct' }));
    expect(gpu.pipelines.size).toBe(after);
    await gpu.run((rec) => matmul(rec, { a, b, c, M: 7, N: 5, K: 3, variant: 'direct', transA: true }));
    expect(gpu.pipelines.size).toBe(after + 1);
    // Products over 8 columns wide take the direct kernel's other workgroup shape, once.
    await gpu.run((rec) => matmul(rec, { a, b, c, M: 2, N: 9, K: 3, variant: 'direct' }));
    await gpu.run((rec) => matmul(rec, { a, b, c, M: 1, N: 40, K: 1, variant: 'direct' }));
    expect(gpu.pipelines.size).toBe(after + 2);
    gpu.destroy();
  });

  it('resizes a module constant in the WGSL text, and refuses a size the text does not declare once', () => {
    const code = 'const MAX_D = 256u;\nconst MAX_D4 = MAX_D / 4u;\nconst TILE = 8u;';
    expect(sizedSource('s', code, { MAX_D: 64 })).toBe('const MAX_D = 64u;\nconst MAX_D4 = MAX_D / 4u;\nconst TILE = 8u;');
    expect(sizedSource('s', code, undefined)).toBe(code);
    expect(() => sizedSource('s', code, { MAX_D4: 8 })).toThrow(/one 'const MAX_D4 = <integer>u;' line, found 0/);
    expect(() => sizedSource('s', code, { MAX_D: 1.5 })).toThrow(/positive integer/);
    expect(pipelineKey({ shader: 'attention', entryPoint: 'e', constants: { HD: 5 }, sizes: { MAX_D: 8 } })).toBe('attention[MAX_D=8]:e:HD=5');
    expect(pipelineKey({ shader: 'attention', entryPoint: 'e' })).toBe('attention:e');
  });

  it('compiles every entry point ahead of use, and reports compile errors', async () => {
    const gpu = await testGpu();
    const bools = [false, true];
    await gpu.pipelines.warm([
      ...bools.flatMap((TRANS_A) =>
        bools.flatMap((TRANS_B) =>
          ['matmul_tiled', 'matmul_direct'].map((entryPoint) => ({ shader: 'matmul', entryPoint, constants: { TRANS_A, TRANS_B, ACCUMULATE: true } })),
        ),
      ),
      { shader: 'adamw', entryPoint: 'adamw_step', constants: { PER: 8 } },
      { shader: 'sparse_adamw', entryPoint: 'sparse_adamw' },
      { shader: 'gradnorm', entryPoint: 'sumsq_partials', constants: { WG: 4 } },
      { shader: 'gradnorm', entryPoint: 'clip_factor', constants: { WG: 256 } },
      ...['int4', 'nf4'].flatMap((shader) =>
        ['quantize', 'dequantize', 'matmul_q4', 'matmul_q4_direct', 'matmul_q4_t', 'matmul_q4_t_direct'].map((entryPoint) => ({ shader, entryPoint })),
      ),
      ...['sparse_grad', 'scatter', 'gather'].map((entryPoint) => ({ shader: 'sparse', entryPoint, constants: { ADD: true } })),
      { shader: 'reduce', entryPoint: 'reduce_rows', constants: { OP: 1, WG: 64 } },
      { shader: 'elementwise', entryPoint: 'elementwise', constants: { OP: 4 } },
      ...['norm_forward', 'norm_backward', 'norm_backward_weight'].map((entryPoint) => ({ shader: 'norm', entryPoint, constants: { LAYERNORM: true } })),
      { shader: 'rope', entryPoint: 'rope', constants: { BACKWARD: true } },
      ...['swiglu_forward', 'swiglu_backward', 'gelu_forward', 'gelu_backward'].map((entryPoint) => ({ shader: 'activation', entryPoint })),
      ...['embedding_forward', 'embedding_backward'].map((entryPoint) => ({ shader: 'embedding', entryPoint })),
      ...['attention_forward', 'attention_backward_prep', 'attention_backward_dq', 'attention_backward_dkv'].map((entryPoint) => ({
        shader: 'attention',
        entryPoint,
        constants: { SEGMENTS: true },
      })),
      ...['ce_chunk_stats', 'ce_chunk_grad'].map((entryPoint) => ({ shader: 'cross_entropy', entryPoint })),
    ]);
    // Modules with a constant resized (attention's head rows) compile as modules of their own.
    const before = gpu.pipelines.size;
    await gpu.pipelines.warm([4, 32, 256].map((MAX_D) => ({ shader: 'attention', entryPoint: 'attention_forward_tiled', constants: { HD: MAX_D - 1 }, sizes: { MAX_D } })));
    expect(gpu.pipelines.size).toBe(before + 3);
    // And every entry point of every shader, from the generated interface, with its default constants.
    await gpu.pipelines.warm(Object.entries(SHADER_INTERFACES).flatMap(([shader, iface]) => Object.keys(iface.entryPoints).map((entryPoint) => ({ shader, entryPoint }))));
    const broken = new PipelineCache(gpu.device, { broken: '@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }' });
    await expect(broken.warm([{ shader: 'broken', entryPoint: 'main' }])).rejects.toThrow(/broken: \d+:\d+/);
  });

  it('binds by the names the WGSL declares: the generated interface matches what WebGPU expects', async () => {
    const gpu = await testGpu();
    // For every entry point, a bind group with exactly the bindings the interface lists must fit the
    // pipeline's automatic layout (a missing or extra binding is a validation error).
    for (const [shader, iface] of Object.entries(SHADER_INTERFACES)) {
      for (const [entryPoint, entry] of Object.entries(iface.entryPoints)) {
        const pipeline = gpu.pipelines.get({ shader, entryPoint });
        const buffer = gpu.placeholder();
        const entries: GPUBindGroupEntry[] = entry.storage.map((name) => ({ binding: iface.storage[name], resource: { buffer } }));
        if (entry.uniforms) entries.push({ binding: 0, resource: { buffer: gpu.uniformBuffer(256), size: Math.max(16, iface.uniforms!.fields.length * 4) } });
        gpu.device.pushErrorScope('validation');
        gpu.device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
        const error = await gpu.device.popErrorScope();
        expect(error?.message, `${shader}.${entryPoint}`).toBeUndefined();
      }
    }
  });

  it('refuses a binding or uniform name the shader does not declare, and a binding the entry point needs but lacks', async () => {
    const gpu = await testGpu();
    const buf = gpu.createBuffer(64);
    const rec = gpu.recorder();
    const base = { shader: 'reduce', entryPoint: 'reduce_rows', workgroups: [1] as [number] };
    expect(() => rec.dispatch({ ...base, uniforms: { rows: 1, cols: 1, alpha: 1 }, storage: { x: buf, output: buf } })).toThrow(/'output' is not a storage binding of shaders\/reduce.wgsl \(x, out\)/);
    expect(() => rec.dispatch({ ...base, uniforms: { rows: 1, cols: 1, alpha: 1 }, storage: { x: buf } })).toThrow(/uses binding 'out'/);
    expect(() => rec.dispatch({ ...base, uniforms: { rows: 1, columns: 1, alpha: 1 }, storage: { x: buf, out: buf } })).toThrow(/'columns' is not a uniform/);
    expect(() => rec.dispatch({ ...base, uniforms: { rows: 1, alpha: 1 }, storage: { x: buf, out: buf } })).toThrow(/uniform 'cols' is not set/);
    expect(() => rec.dispatch({ shader: 'norm', entryPoint: 'norm_backward', uniforms: { rows: 1, cols: 1, eps: 1 }, storage: { x: buf, w: buf, y: buf, stats: buf, dy: buf, dx: buf }, workgroups: [1] })).toThrow(/does not use binding 'y'/);
    expect(() => rec.dispatch({ ...base, entryPoint: 'reduce_columns', storage: {} })).toThrow(/has no entry point 'reduce_columns'/);
    expect(() => rec.dispatch({ ...base, uniforms: { rows: 1, cols: 1, alpha: 1 }, storage: { x: view(buf, 4, 32), out: buf } })).toThrow(/binding 'x' offset 4 is not a multiple of/);
    expect(() => rec.dispatch({ ...base, constants: { WG: 64, TILE: 8 }, uniforms: { rows: 1, cols: 1, alpha: 1 }, storage: { x: buf, out: buf } })).toThrow(/'TILE' is not an override constant of shaders\/reduce.wgsl/);
    expect(() => rec.dispatch({ ...base, sizes: { ROWS: 8 }, uniforms: { rows: 1, cols: 1, alpha: 1 }, storage: { x: buf, out: buf } })).toThrow(/size 'ROWS' is not a module constant of shaders\/reduce.wgsl/);
    gpu.destroyBuffer(buf);
  });

  it('batches many dispatches into one submission and times it', async () => {
    const gpu = await testGpu();
    const a = gpu.upload(new Float32Array(64).fill(1));
    const c = gpu.createBuffer(4 * 64);
    const before = gpu.work.submits;
    const rec = gpu.recorder();
    for (let i = 0; i < 10; i++) matmul(rec, { a, b: a, c, M: 8, N: 8, K: 8, accumulate: i > 0 });
    const ms = await rec.submit({ timed: true });
    await gpu.sync();
    expect(gpu.work.submits - before).toBe(1);
    if (gpu.features.timestampQuery) expect(ms === null || ms >= 0).toBe(true);
    else expect(ms).toBeNull();
    expect((await gpu.readF32(c))[0]).toBe(80);
  });

  it('counts its work, and a recording repeated over the same buffers creates no bind group again', async () => {
    const gpu = await testGpu();
    const a = gpu.upload(Float32Array.from({ length: 64 }, (_, i) => i % 7));
    const c = gpu.createBuffer(4 * 64);
    const record = (rec: CommandRecorder, b: GPUBuffer) => {
      matmul(rec, { a, b, c, M: 8, N: 8, K: 8 });
      matmul(rec, { a, b, c, M: 8, N: 8, K: 8, accumulate: true });
    };
    await gpu.run((rec) => record(rec, a));
    const before = gpu.workCounts();
    await gpu.run((rec) => record(rec, a));
    const work = gpu.workSince(before);
    expect([work.dispatches, work.submits, work.bindGroups, work.buffersCreated]).toEqual([2, 1, 0, 0]);
    expect(work.uniformBytes).toBeGreaterThan(0);
    expect(Object.fromEntries(work.byKernel)).toEqual({ [[...work.byKernel.keys()][0]]: 2 });
    // Another buffer in the same place binds anew, and the product is of its values, not the first one's.
    const b = gpu.upload(new Float32Array(64).fill(1));
    const again = gpu.workCounts();
    await gpu.run((rec) => record(rec, b));
    expect(gpu.workSince(again).bindGroups).toBe(2);
    const want = Array.from({ length: 8 }, (_, i) => 2 * Array.from({ length: 8 }, (_, k) => (i * 8 + k) % 7).reduce((x, y) => x + y, 0));
    expect(Array.from((await gpu.readF32(c)).filter((_, j) => j % 8 === 0))).toEqual(want);
  });

  it('folds large 1-D launches into two dimensions', () => {
    const fake = { limits: { maxComputeWorkgroupsPerDimension: 65535 } } as never;
    expect(launch1d(fake, 1000, 256)).toEqual([4, 1]);
    const [x, y] = launch1d(fake, 65535 * 256 * 3 + 1, 256);
    expect(x).toBeLessThanOrEqual(65535);
    expect(x * y * 256).toBeGreaterThanOrEqual(65535 * 256 * 3 + 1);
  });
});

describe('bad input and failures', () => {
  it('refuses buffers over maxBufferSize with a typed error', async () => {
    const gpu = await testGpu();
    expect(() => gpu.createBuffer(gpu.limits.maxBufferSize + 4, undefined, 'huge')).toThrow(BufferTooLargeError);
  });

  it('refuses misaligned views and oversized dispatches', async () => {
    const gpu = await testGpu();
    const buf = gpu.createBuffer(4096);
    const rec = gpu.recorder();
    // The device's own offset alignment (SwiftShader 256, lavapipe 16): 4 bytes is below either.
    const align = gpu.device.limits.minStorageBufferOffsetAlignment;
    expect(() => matmul(rec, { a: view(buf, 4, 64), b: buf, c: buf, M: 2, N: 2, K: 2 })).toThrow(new RegExp(`multiple of ${align}\\b`));
    expect(() =>
      rec.dispatch({ shader: 'reduce', entryPoint: 'reduce_rows', storage: { x: buf, out: buf }, uniforms: { rows: 1, cols: 1, alpha: 1 }, workgroups: [70000] }),
    ).toThrow(ShapeError);
    expect(() => rec.copy(view(buf, 0, 256), view(buf, 1024, 256))).toThrow(/one buffer/);
  });

  it('surfaces WebGPU validation errors as typed errors', async () => {
    const gpu = await testGpu();
    const ok = gpu.createBuffer(4 * 16);
    const notStorage = gpu.createBuffer(4 * 16, 0x0008 /* COPY_DST only */, 'not-storage');
    await expect(gpu.run((rec) => matmul(rec, { a: notStorage, b: ok, c: ok, M: 2, N: 2, K: 2 }))).rejects.toThrow(
      GPUValidationFailedError,
    );
    // The device stays usable afterwards.
    const out = gpu.createBuffer(4 * 16);
    await gpu.run((rec) => matmul(rec, { a: ok, b: ok, c: out, M: 1, N: 1, K: 1 }));
  });

  it('turns a lost device into DeviceLostError for every later call', async () => {
    const gpu = await requestDevice({ label: 'doomed' });
    const buf = gpu.upload(new Float32Array([1, 2, 3]));
    gpu.device.destroy();
    const lost = await gpu.lost;
    expect(lost).toBeInstanceOf(DeviceLostError);
    expect(lost.reason).toBe('destroyed');
    expect(gpu.isLost).toBe(true);
    await expect(gpu.read(buf)).rejects.toThrow(DeviceLostError);
    expect(() => gpu.createBuffer(16)).toThrow(DeviceLostError);
    expect(() => gpu.recorder().submit()).toThrow(DeviceLostError);
  });
});
