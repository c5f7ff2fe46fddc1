/**
 * The feature variants of the kernels, each against the path every device has, measured on twin devices
 * of the same adapter that differ only in that choice of tuning (a device compiles one variant of a
 * shader): subgroup against workgroup-tree reductions, at the device's reduction width and at a GPU's
 * 256; and frozen f16 weights read by f16 loads against packed u32 words, with the f32-weight matmul of
 * the same shape beside them. Variants alternate over rounds and the median counts, so a noisy machine
 * shifts both alike. On a CPU implementation the ratios say nothing of a GPU's.
 */
import { requestDevice } from '../src/gpu/device.js';
import type { Gpu, GpuTuning } from '../src/gpu/gpu.js';
import { f32ToF16, matmul, matmulFlops, normForward, reduceRows, type CommandRecorder } from '../src/index.js';
import { timeKernel, type BenchRow } from './kernels.js';

export interface VariantSizes {
  /** Rows and columns of the reductions (a row per workgroup). */
  reduce: [number, number];
  /** M, N, K of the 16-bit-weight matmul (the forward product x W^T). */
  matmul: [number, number, number];
  reps: number;
}

const ROUNDS = 3;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Median ms of each recording on its own device, the devices taking turns. */
async function alternate(runs: { gpu: Gpu; record: (rec: CommandRecorder) => void }[], reps: number): Promise<number[]> {
  const times: number[][] = runs.map(() => []);
  for (let round = 0; round < ROUNDS; round++) {
    for (const [i, { gpu, record }] of runs.entries()) times[i].push((await timeKernel(gpu, record, reps)).ms);
  }
  return times.map(median);
}

function random(n: number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.random() * 2 - 1;
  return a;
}

export async function runVariantBench(gpu: Gpu, sizes: VariantSizes, log: (line: string) => void): Promise<{ rows: BenchRow[]; ratios: Record<string, number> }> {
  const rows: BenchRow[] = [];
  const ratios: Record<string, number> = {};
  const twins: Gpu[] = [];
  const twin = async (tuning: Partial<GpuTuning>) => {
    const device = await requestDevice({ ...gpu.requested, label: 'variant', tuning: { ...gpu.requested.tuning, ...tuning } });
    twins.push(device);
    return device;
  };
  try {
    if (gpu.features.subgroups) {
      const [R, C] = sizes.reduce;
      const x = random(R * C);
      for (const wg of [...new Set([gpu.tuning.reductionWorkgroupSize, 256])]) {
        const devices = [await twin({ reductions: 'subgroup', reductionWorkgroupSize: wg }), await twin({ reductions: 'workgroup', reductionWorkgroupSize: wg })];
        const reduce = devices.map((d) => {
          const [input, out] = [d.upload(x), d.createBuffer(R * 4)];
          return { gpu: d, record: (rec: CommandRecorder) => reduceRows(rec, { x: input, out, rows: R, cols: C, op: 'sumsq' }) };
        });
        const norm = devices.map((d) => {
          const [input, weight, y, stats] = [d.upload(x), d.upload(random(C)), d.createBuffer(R * C * 4), d.createBuffer(2 * R * 4)];
          return { gpu: d, record: (rec: CommandRecorder) => normForward(rec, { kind: 'rmsnorm', rows: R, cols: C, eps: 1e-5, weightOffset: 0, x: input, weight, y, stats }) };
        });
        for (const [name, runs, bytes] of [['reduce rows (sumsq)', reduce, 4 * R * C], ['rmsnorm forward', norm, 8 * R * C]] as const) {
          const [sub, tree] = await alternate(runs, sizes.reps);
          rows.push({ kernel: `${name}, subgroups, wg ${wg}`, shape: `${R}x${C}`, ms: sub, gbps: bytes / sub / 1e6 });
          rows.push({ kernel: `${name}, tree, wg ${wg}`, shape: `${R}x${C}`, ms: tree, gbps: bytes / tree / 1e6 });
          ratios[`${name.startsWith('reduce') ? 'reduce' : 'rmsnorm'}_subgroup_vs_workgroup_wg${wg}`] = tree / sub;
          log(`${name} wg ${wg}: subgroups ${sub.toFixed(3)} ms, tree ${tree.toFixed(3)} ms`);
        }
      }
    }
    if (gpu.features.shaderF16) {
      const [M, N, K] = sizes.matmul;
      const a = random(M * K);
      const w = random(N * K);
      const packed = new Uint16Array(N * K + ((N * K) % 2));
      packed.set(f32ToF16(w));
      const devices = [await twin({ halfLoads: 'native' }), await twin({ halfLoads: 'packed' })];
      const runs = devices.map((d) => {
        const [x, b, c] = [d.upload(a), d.upload(packed), d.createBuffer(M * N * 4)];
        return { gpu: d, record: (rec: CommandRecorder) => matmul(rec, { a: x, b, bFormat: 'f16', c, M, N, K, transB: true }) };
      });
      const [x32, b32, c32] = [devices[1].upload(a), devices[1].upload(w), devices[1].createBuffer(M * N * 4)];
      runs.push({ gpu: devices[1], record: (rec) => matmul(rec, { a: x32, b: b32, c: c32, M, N, K, transB: true }) });
      const [native, packedMs, f32] = await alternate(runs, sizes.reps);
      const flops = matmulFlops(M, N, K);
      const shape = `${M}x${N}x${K}`;
      rows.push({ kernel: 'matmul, f16 weights, f16 loads', shape, ms: native, gflops: flops / native / 1e6 });
      rows.push({ kernel: 'matmul, f16 weights, packed', shape, ms: packedMs, gflops: flops / packedMs / 1e6 });
      rows.push({ kernel: 'matmul, f32 weights', shape, ms: f32, gflops: flops / f32 / 1e6 });
      ratios.matmul_f16_weights_native_vs_packed = packedMs / native;
      ratios.matmul_f16_weights_native_vs_f32_weights = f32 / native;
      log(`matmul ${shape}: f16 weights by f16 loads ${native.toFixed(2)} ms, packed ${packedMs.toFixed(2)} ms, f32 weights ${f32.toFixed(2)} ms`);
    }
  } finally {
    for (const d of twins) d.destroy();
  }
  return { rows, ratios };
}
