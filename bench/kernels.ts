/**
 * Kernel benchmark, runtime-neutral: the same code runs in Node (bench/kernels-node.ts) and in Chromium
 * (bench/kernels-page.ts driven by bench/kernels-chromium.ts). Sizes scale with the device: CPU
 * implementations (SwiftShader) get small shapes where only the ratios mean anything.
 */
import {
  adamwStep,
  addLowRank,
  dequantizeQ4,
  elementwise,
  gradNorm,
  gradNormScratchSize,
  int4Bytes,
  int4Layout,
  matmul,
  matmulFlops,
  matmulQ4,
  matmulQ4InputGrad,
  nf4Bytes,
  nf4Layout,
  quantizeNf4,
  quantizeInt4,
  reduceRows,
  sparseGrad,
  type CommandRecorder,
  type Gpu,
  type Q4Weight,
  type MatmulVariant,
} from '../src/index.js';
import { runVariantBench } from './kernel-variants.js';

export interface BenchRow {
  kernel: string;
  shape: string;
  ms: number;
  gflops?: number;
  gbps?: number;
  /** Fraction of the measured peak (compute for gflops rows, bandwidth for gbps rows). */
  ofPeak?: number;
}

export interface KernelBenchResult {
  runtime: string;
  device: string;
  adapter: Gpu['adapter'];
  features: Gpu['features'];
  /** The kernel choices this device got, and why (Gpu.tuningReasons). */
  tuning: Gpu['tuning'];
  tuningReasons: Gpu['tuningReasons'];
  timing: 'gpu-timestamps' | 'wall-clock';
  peaks: { bandwidthGBps: number; computeGflops: number; computeFrom: string };
  rows: BenchRow[];
  ratios: {
    adamw_fused_vs_unfused: number;
    sparse_grad_vs_dense_1pct: number;
    int4_fused_vs_dequant_then_matmul: number;
    [name: string]: number;
  };
  date: string;
}

interface Sizes {
  copyBytes: number;
  matmul: [number, number, number][];
  adamwN: number;
  int4: { M: number; N: number; K: number }[];
  sparse: { T: number; N: number; K: number };
  /** A LoRA linear layer: tokens, out, in, rank. */
  lora: { T: number; N: number; K: number; R: number };
  reduce: [number, number];
  /** The 16-bit-weight matmul of the variant comparisons (bench/kernel-variants.ts). */
  halfMatmul: [number, number, number];
  reps: number;
}

const SOFTWARE: Sizes = {
  copyBytes: 32 << 20,
  matmul: [
    [128, 128, 128],
    [256, 256, 256],
    [256, 1024, 256], // tokens x d_ff x d_model: an MLP up-projection
  ],
  adamwN: 1 << 20,
  int4: [
    { M: 1, N: 1024, K: 1024 },
    { M: 128, N: 512, K: 512 },
  ],
  sparse: { T: 256, N: 512, K: 512 },
  lora: { T: 256, N: 512, K: 512, R: 16 },
  reduce: [512, 2048],
  halfMatmul: [256, 1024, 256],
  reps: 3,
};

const HARDWARE: Sizes = {
  copyBytes: 256 << 20,
  matmul: [
    [1024, 1024, 1024],
    [2048, 2048, 2048],
    [4096, 4096, 4096],
    [4096, 11008, 4096],
  ],
  adamwN: 64 << 20,
  int4: [
    { M: 1, N: 4096, K: 4096 },
    { M: 2048, N: 4096, K: 4096 },
  ],
  sparse: { T: 4096, N: 4096, K: 4096 },
  lora: { T: 4096, N: 4096, K: 4096, R: 16 },
  reduce: [8192, 8192],
  halfMatmul: [4096, 4096, 4096],
  reps: 20,
};

/** Mean ms of one repetition of `record` on `gpu`; a warm-up run first (compiles pipelines). */
export async function timeKernel(gpu: Gpu, record: (rec: CommandRecorder) => void, reps: number): Promise<{ ms: number; timestamps: boolean }> {
  await gpu.run(record);
  const rec = gpu.recorder();
  for (let i = 0; i < reps; i++) record(rec);
  const t0 = performance.now();
  const gpuMs = await rec.submit({ timed: true });
  await gpu.sync();
  const wall = performance.now() - t0;
  return { ms: (gpuMs ?? wall) / reps, timestamps: gpuMs !== null };
}

export interface KernelBenchOptions {
  /** Override the size preset: 'software' or 'hardware' (default from the adapter). */
  preset?: 'software' | 'hardware';
  log?: (line: string) => void;
}

export async function runKernelBench(gpu: Gpu, options: KernelBenchOptions = {}): Promise<KernelBenchResult> {
  const sizes = (options.preset ?? (gpu.adapter.isSoftware ? 'software' : 'hardware')) === 'software' ? SOFTWARE : HARDWARE;
  const log = options.log ?? (() => {});
  const rows: BenchRow[] = [];
  let usedTimestamps = gpu.features.timestampQuery;

  async function time(record: (rec: CommandRecorder) => void, reps = sizes.reps): Promise<number> {
    const { ms, timestamps } = await timeKernel(gpu, record, reps);
    if (!timestamps) usedTimestamps = false;
    return ms;
  }
  const random = (n: number) => {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = Math.random() * 2 - 1;
    return a;
  };
  const temps: GPUBuffer[] = [];
  const buf = (n: number, data?: Float32Array | Uint32Array) => {
    const b = data ? gpu.upload(data) : gpu.createBuffer(n * 4);
    temps.push(b);
    return b;
  };

  // Bandwidth peak: a large buffer-to-buffer copy (read + write). Copies sit outside compute passes, so wall clock.
  const copyN = sizes.copyBytes / 4;
  const src = buf(copyN);
  const dst = buf(copyN);
  await gpu.run((rec) => rec.copy(src, dst));
  const t0 = performance.now();
  await gpu.run((rec) => {
    for (let i = 0; i < sizes.reps; i++) rec.copy(src, dst);
  });
  const copyMs = (performance.now() - t0) / sizes.reps;
  const bandwidth = (2 * sizes.copyBytes) / copyMs / 1e6;
  rows.push({ kernel: 'buffer copy', shape: `${sizes.copyBytes >> 20} MiB`, ms: copyMs, gbps: bandwidth });
  log(`copy ${bandwidth.toFixed(2)} GB/s`);

  // Matmul, both variants; the best becomes the compute peak.
  let best = { gflops: 0, from: '' };
  const matmulMs = new Map<string, number>();
  for (const [M, N, K] of sizes.matmul) {
    const a = buf(M * K, random(M * K));
    const b = buf(K * N, random(K * N));
    const c = buf(M * N);
    for (const variant of ['tiled', 'direct'] as MatmulVariant[]) {
      const ms = await time((rec) => matmul(rec, { a, b, c, M, N, K, transB: true, variant }));
      const gflops = matmulFlops(M, N, K) / ms / 1e6;
      rows.push({ kernel: `matmul ${variant}`, shape: `${M}x${N}x${K}`, ms, gflops });
      matmulMs.set(`${variant} ${M}x${N}x${K}`, ms);
      if (gflops > best.gflops) best = { gflops, from: `matmul ${variant} ${M}x${N}x${K}` };
      log(`matmul ${variant} ${M}x${N}x${K}: ${ms.toFixed(2)} ms, ${gflops.toFixed(2)} GFLOP/s`);
    }
  }

  // AdamW: fused single pass vs the same update as separate element-wise dispatches (torch's for-loop form).
  const n = sizes.adamwN;
  const params = buf(n, random(n));
  const grads = buf(n, random(n));
  const m = buf(n);
  const v = buf(n);
  const denom = buf(n);
  const clip = buf(2, new Float32Array([1, 0]));
  const hyper = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
  const fusedMs = await time((rec) => adamwStep(rec, { params, grads, m, v, clip, n, step: 10, ...hyper }));
  const bc1 = 1 - hyper.beta1 ** 10;
  const bc2 = 1 - hyper.beta2 ** 10;
  const unfusedMs = await time((rec) => {
    elementwise(rec, { op: 'scale', y: m, n, s0: hyper.beta1 });
    elementwise(rec, { op: 'axpy', y: m, x: grads, n, s0: 1 - hyper.beta1 });
    elementwise(rec, { op: 'scale', y: v, n, s0: hyper.beta2 });
    elementwise(rec, { op: 'addcmul', y: v, x: grads, z: grads, n, s0: 1 - hyper.beta2 });
    elementwise(rec, { op: 'sqrtAffine', y: denom, x: v, n, s0: 1 / Math.sqrt(bc2), s1: hyper.eps });
    elementwise(rec, { op: 'scale', y: params, n, s0: 1 - hyper.lr * hyper.weightDecay });
    elementwise(rec, { op: 'addcdiv', y: params, x: m, z: denom, n, s0: -hyper.lr / bc1 });
  });
  const adamBytes = 7 * 4 * n; // read p, g, m, v; write p, m, v
  rows.push({ kernel: 'adamw fused', shape: `${n}`, ms: fusedMs, gbps: adamBytes / fusedMs / 1e6 });
  rows.push({ kernel: 'adamw unfused (7 dispatches)', shape: `${n}`, ms: unfusedMs, gbps: adamBytes / unfusedMs / 1e6 });
  log(`adamw fused ${fusedMs.toFixed(2)} ms, unfused ${unfusedMs.toFixed(2)} ms`);

  const partials = buf(gradNormScratchSize([n]));
  const normOut = buf(2);
  const normMs = await time((rec) => gradNorm(rec, { tensors: [{ buffer: grads, n }], partials, out: normOut, maxNorm: 1 }));
  rows.push({ kernel: 'grad norm + clip factor', shape: `${n}`, ms: normMs, gbps: (4 * n) / normMs / 1e6 });

  const [rr, rc] = sizes.reduce;
  const rx = buf(rr * rc, random(rr * rc));
  const rout = buf(rr);
  const reduceMs = await time((rec) => reduceRows(rec, { x: rx, out: rout, rows: rr, cols: rc, op: 'sumsq' }));
  rows.push({ kernel: 'reduce rows (sumsq)', shape: `${rr}x${rc}`, ms: reduceMs, gbps: (4 * rr * rc) / reduceMs / 1e6 });

  // Subgroup reductions and f16 loads against the paths every device has, on twin devices.
  const variants = await runVariantBench(gpu, { reduce: sizes.reduce, matmul: sizes.halfMatmul, reps: sizes.reps }, log);
  rows.push(...variants.rows);

  // 4-bit weights (int4 group 128, NF4): the fused products vs dequantizing into an f32 scratch and then
  // a plain matmul; forward (x @ W^T) and input gradient (dy @ W).
  const q4Ratios: Record<string, number[]> = { int4: [], nf4: [], nf4_input_grad: [] };
  for (const { M, N, K } of sizes.int4) {
    const w = buf(N * K, random(N * K));
    const int4 = int4Layout(N, K, 128);
    const nf4 = nf4Layout(N, K);
    const weights: Q4Weight[] = [
      { format: 'int4', layout: int4, qweight: buf(int4Bytes(int4).qweight / 4), scales: buf(int4Bytes(int4).scales / 4), zeros: buf(int4Bytes(int4).zeros / 4) },
      { format: 'nf4', layout: nf4, qweight: buf(nf4Bytes(nf4).qweight / 4), absmax: buf(nf4Bytes(nf4).absmax / 4) },
    ];
    const x = buf(M * K, random(M * K));
    const y = buf(M * N, random(M * N));
    const flops = matmulFlops(M, N, K);
    for (const weight of weights) {
      await gpu.run((rec) => (weight.format === 'int4' ? quantizeInt4(rec, { w, out: weight }) : quantizeNf4(rec, { w, out: weight })));
      const name = weight.format === 'int4' ? 'int4 g128' : 'nf4';
      const fused = await time((rec) => matmulQ4(rec, { x, weight, y, M }));
      const twoStep = await time((rec) => {
        dequantizeQ4(rec, { weight, out: w });
        matmul(rec, { a: x, b: w, c: y, M, N, K, transB: true });
      });
      rows.push({ kernel: `${name} fused dequant-matmul`, shape: `${M}x${N}x${K}`, ms: fused, gflops: flops / fused / 1e6 });
      rows.push({ kernel: `${name} dequantize then matmul`, shape: `${M}x${N}x${K}`, ms: twoStep, gflops: flops / twoStep / 1e6 });
      q4Ratios[weight.format].push(twoStep / fused);
      log(`${name} ${M}x${N}x${K}: fused ${fused.toFixed(2)} ms, dequant+matmul ${twoStep.toFixed(2)} ms`);
      if (weight.format === 'nf4') {
        const grad = await time((rec) => matmulQ4InputGrad(rec, { dy: y, weight, dx: x, M }));
        const gradTwoStep = await time((rec) => {
          dequantizeQ4(rec, { weight, out: w });
          matmul(rec, { a: y, b: w, c: x, M, N: K, K: N });
        });
        rows.push({ kernel: 'nf4 fused input gradient', shape: `${M}x${N}x${K}`, ms: grad, gflops: flops / grad / 1e6 });
        rows.push({ kernel: 'nf4 dequantize then input gradient', shape: `${M}x${N}x${K}`, ms: gradTwoStep, gflops: flops / gradTwoStep / 1e6 });
        q4Ratios.nf4_input_grad.push(gradTwoStep / grad);
      }
    }
  }

  // A LoRA linear layer's forward, y = x W^T + s (x A^T) B^T: the adapter term fused into the base
  // matmul's store vs a separate pass over y.
  const lo = sizes.lora;
  const lx = buf(lo.T * lo.K, random(lo.T * lo.K));
  const lw = buf(lo.N * lo.K, random(lo.N * lo.K));
  const la = buf(lo.R * lo.K, random(lo.R * lo.K));
  const lb = buf(lo.N * lo.R, random(lo.N * lo.R));
  const lu = buf(lo.T * lo.R);
  const ly = buf(lo.T * lo.N);
  const term = { u: lu, v: lb, rank: lo.R, transV: true, scale: 2 };
  const loraInput = (rec: CommandRecorder) => matmul(rec, { a: lx, b: la, c: lu, M: lo.T, N: lo.R, K: lo.K, transB: true });
  const loraFusedMs = await time((rec) => {
    loraInput(rec);
    matmul(rec, { a: lx, b: lw, c: ly, M: lo.T, N: lo.N, K: lo.K, transB: true, lowRank: term });
  });
  const loraSeparateMs = await time((rec) => {
    loraInput(rec);
    matmul(rec, { a: lx, b: lw, c: ly, M: lo.T, N: lo.N, K: lo.K, transB: true });
    addLowRank(rec, ly, lo.T, lo.N, term);
  });
  const loraShape = `${lo.T}x${lo.N}x${lo.K} r${lo.R}`;
  const loraFlops = matmulFlops(lo.T, lo.N, lo.K) + 2 * matmulFlops(lo.T, lo.R, lo.K);
  rows.push({ kernel: 'LoRA linear, adapter fused', shape: loraShape, ms: loraFusedMs, gflops: loraFlops / loraFusedMs / 1e6 });
  rows.push({ kernel: 'LoRA linear, adapter separate', shape: loraShape, ms: loraSeparateMs, gflops: loraFlops / loraSeparateMs / 1e6 });
  log(`LoRA linear ${loraShape}: fused ${loraFusedMs.toFixed(2)} ms, separate ${loraSeparateMs.toFixed(2)} ms`);

  // Sparse gradient at 1% density vs the dense dW = dY^T X it replaces.
  const { T, N: SN, K: SK } = sizes.sparse;
  const dY = buf(T * SN, random(T * SN));
  const sx = buf(T * SK, random(T * SK));
  const dW = buf(SN * SK);
  const denseMs = await time((rec) => matmul(rec, { a: dY, b: sx, c: dW, M: SN, N: SK, K: T, transA: true }));
  rows.push({ kernel: 'dense dW (dY^T X)', shape: `${SN}x${SK}, T=${T}`, ms: denseMs, gflops: matmulFlops(SN, SK, T) / denseMs / 1e6 });
  const ratios: Record<string, number> = {};
  for (const density of [0.01, 0.05]) {
    const size = SN * SK;
    const stride = Math.round(1 / density);
    // A strided mask of the given density; sorted, as masks always are.
    const idx = new Uint32Array(Math.floor(size / stride));
    const offset = Math.floor(Math.random() * stride);
    for (let i = 0; i < idx.length; i++) idx[i] = i * stride + ((offset + i * 7) % stride);
    const indices = buf(idx.length, idx);
    const out = buf(idx.length);
    const ms = await time((rec) => sparseGrad(rec, { indices, nnz: idx.length, dY, x: sx, T, N: SN, K: SK, out }));
    rows.push({ kernel: `sparse grad ${density * 100}%`, shape: `${SN}x${SK}, T=${T}`, ms, gflops: (2 * idx.length * T) / ms / 1e6 });
    ratios[`sparse_grad_vs_dense_${density * 100}pct`] = denseMs / ms;
    log(`sparse grad ${density * 100}%: ${ms.toFixed(3)} ms vs dense ${denseMs.toFixed(2)} ms`);
  }

  for (const r of rows) {
    if (r.gflops !== undefined) r.ofPeak = r.gflops / best.gflops;
    else if (r.gbps !== undefined) r.ofPeak = r.gbps / bandwidth;
  }
  for (const b of temps) gpu.destroyBuffer(b);
  return {
    runtime: gpu.runtime === 'node' ? 'node' : 'chromium',
    device: gpu.describe(),
    adapter: gpu.adapter,
    features: gpu.features,
    tuning: gpu.tuning,
    tuningReasons: gpu.tuningReasons,
    timing: usedTimestamps ? 'gpu-timestamps' : 'wall-clock',
    peaks: { bandwidthGBps: bandwidth, computeGflops: best.gflops, computeFrom: best.from },
    rows,
    ratios: {
      adamw_fused_vs_unfused: unfusedMs / fusedMs,
      sparse_grad_vs_dense_1pct: ratios.sparse_grad_vs_dense_1pct,
      // The training-sized shape (M = tokens) is the headline; decoding (M = 1) is reported beside it.
      int4_fused_vs_dequant_then_matmul: q4Ratios.int4[1],
      int4_fused_vs_dequant_then_matmul_decode: q4Ratios.int4[0],
      nf4_fused_vs_dequant_then_matmul: q4Ratios.nf4[1],
      nf4_fused_vs_dequant_then_matmul_decode: q4Ratios.nf4[0],
      nf4_input_grad_fused_vs_dequant_then_matmul: q4Ratios.nf4_input_grad[1],
      sparse_grad_vs_dense_5pct: ratios.sparse_grad_vs_dense_5pct,
      lora_fused_vs_separate: loraSeparateMs / loraFusedMs,
      matmul_tiled_vs_direct_largest: (() => {
        const [M, N, K] = sizes.matmul[sizes.matmul.length - 1];
        return matmulMs.get(`direct ${M}x${N}x${K}`)! / matmulMs.get(`tiled ${M}x${N}x${K}`)!;
      })(),
      ...variants.ratios,
    },
    date: new Date().toISOString(),
  };
}

/** A fixed-width table of the rows and the ratios. */
export function formatKernelBench(r: KernelBenchResult): string {
  const lines = [
    `device: ${r.device}   timing: ${r.timing}`,
    `peaks: copy ${r.peaks.bandwidthGBps.toFixed(2)} GB/s, compute ${r.peaks.computeGflops.toFixed(2)} GFLOP/s (${r.peaks.computeFrom})`,
    '',
    `${'kernel'.padEnd(32)} ${'shape'.padEnd(20)} ${'ms'.padStart(10)} ${'GFLOP/s'.padStart(9)} ${'GB/s'.padStart(9)} ${'of peak'.padStart(8)}`,
  ];
  for (const row of r.rows) {
    lines.push(
      `${row.kernel.padEnd(32)} ${row.shape.padEnd(20)} ${row.ms.toFixed(3).padStart(10)} ${(row.gflops?.toFixed(2) ?? '').padStart(9)} ${(row.gbps?.toFixed(2) ?? '').padStart(9)} ${(row.ofPeak === undefined ? '' : `${(row.ofPeak * 100).toFixed(0)}%`).padStart(8)}`,
    );
  }
  lines.push('', 'ratios (times faster):');
  for (const [k, v] of Object.entries(r.ratios)) lines.push(`  ${k.padEnd(44)} ${v.toFixed(2)}x`);
  return lines.join('\n');
}
