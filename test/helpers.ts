/** Shared test utilities: seeded randomness (seed printed on failure), GPU setup, error metrics. */
import { requestDevice, type Gpu, type GpuTuning } from '../src/index.js';

export { rng, randn } from '../src/util/random.js';

/** A fresh seed per run; tests put it in their assertion messages so a failure can be replayed. */
export function freshSeed(): number {
  return Math.floor(Math.random() * 2 ** 31);
}

export interface ErrorReport {
  maxAbs: number;
  /** max |got - want| / max |want|: relative to the output's scale, robust to entries near zero. */
  rel: number;
  nonFinite: number;
}

/**
 * `minScale`: the smallest scale the error is taken relative to, for outputs whose values can cancel to
 * near zero (a moment that sums terms of both signs): then the natural scale is that of the terms.
 */
export function compare(got: ArrayLike<number>, want: ArrayLike<number>, minScale = 1e-30): ErrorReport {
  if (got.length < want.length) throw new Error(`got ${got.length} values, want ${want.length}`);
  let maxAbs = 0;
  let scale = 0;
  let nonFinite = 0;
  for (let i = 0; i < want.length; i++) {
    if (!Number.isFinite(got[i])) nonFinite++;
    maxAbs = Math.max(maxAbs, Math.abs(got[i] - want[i]));
    scale = Math.max(scale, Math.abs(want[i]));
  }
  return { maxAbs, rel: nonFinite ? Infinity : maxAbs / Math.max(scale, minScale), nonFinite };
}

const shared = new Map<string, Promise<Gpu>>();
/**
 * One device per test file (worker) and tuning, created on first use. Tests pass each tuning profile
 * explicitly so the GPU choices are exercised on CPU implementations too, and vice versa.
 */
export function testGpu(tuning?: Partial<GpuTuning>): Promise<Gpu> {
  const key = JSON.stringify(tuning ?? {});
  let gpu = shared.get(key);
  if (!gpu) shared.set(key, (gpu = requestDevice({ label: 'test', tuning })));
  return gpu;
}

/**
 * The tests run in Chromium, whose Dawn runs the same shader text on the same SwiftShader as Node's. Where
 * a file's variants differ only in which kernels or layouts run, Node runs them all and Chromium a few
 * (each of its devices compiles every pipeline anew, at several seconds apiece).
 */
export const IN_BROWSER = typeof window !== 'undefined';

/** The test projects on lavapipe, the second adapter (vite.config.ts sets its vector width for them). */
export const ON_LAVAPIPE = !IN_BROWSER && Boolean(process.env.LP_NATIVE_VECTOR_WIDTH);

export type ReductionProfile = Pick<GpuTuning, 'reductionWorkgroupSize' | 'reductions'>;
/**
 * Every reduction profile, with a label for test names: the CPU size (4 invocations) and the GPU size
 * (256), each as a workgroup tree and over subgroups (of whatever size the device under test has). In
 * Chromium, only the subgroup paths its devices choose: the shader text is the one Node's Dawn runs on the
 * same SwiftShader, where every profile runs, and each profile's device compiles every pipeline anew.
 */
export const REDUCTIONS: [string, ReductionProfile][] = [4, 256].flatMap((size) =>
  (IN_BROWSER ? (['subgroup'] as const) : (['workgroup', 'subgroup'] as const)).map((reductions): [string, ReductionProfile] => [`${reductions} reduction over ${size}`, { reductionWorkgroupSize: size, reductions }]),
);

/** A storage buffer of n floats filled with NaN: any element a kernel fails to write shows up. */
export function poisoned(gpu: Gpu, n: number, label = 'poisoned'): GPUBuffer {
  const b = gpu.createBuffer(n * 4, undefined, label);
  gpu.fill(b, NaN);
  return b;
}

/** Shapes that are not multiples of any tile size. */
export const AWKWARD = [1, 3, 17, 33, 100, 257];
