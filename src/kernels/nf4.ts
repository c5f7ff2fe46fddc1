/**
 * NF4 weights, QLoRA's 4-bit NormalFloat (shaders/nf4.wgsl): the layout and quantization. The packed
 * format and the code rule are documented at the top of the shader; dequantization and the products are
 * the 4-bit family's (q4-matmul.ts).
 */
import type { BufferLike } from '../gpu/buffers.js';
import type { CommandRecorder } from '../gpu/recorder.js';
import { ShapeError } from '../errors.js';
import { launch1d, requireDims, requireElements } from './common.js';

/** Values per absmax block (QLoRA's and bitsandbytes' default). */
export const NF4_BLOCK = 64;
const WG = 64;

/** The 16 code values, as bitsandbytes' nf4 lookup table (f32). */
export const NF4_CODES: readonly number[] = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
  0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
].map(Math.fround);

/** The code table of a 4-bit weight: NF4, or bitsandbytes' FP4 (1 sign, 2 exponent, 1 mantissa bit). */
export type Nf4Codes = 'nf4' | 'fp4';

/**
 * bitsandbytes' FP4 code values, as get_4bit_type('fp4') makes them: the values divided by 12 in f32
 * (code 8, Python's integer -0, is +0).
 */
export const FP4_CODES: readonly number[] = [0, 0.0625, 8, 12, 4, 6, 2, 3, 0, -0.0625, -8, -12, -4, -6, -2, -3].map((v) => Math.fround(v / 12));

/** Word counts of the packed arrays for a weight of shape [N, K]. */
export interface Nf4Layout {
  N: number;
  K: number;
  /** u32 words of packed codes per row: ceil(K / 8). */
  wordsPerRow: number;
  /** absmax blocks per row: ceil(K / 64) (per-row blocking). */
  blocksPerRow: number;
  /** absmax blocks in all: N * blocksPerRow, or ceil(N * K / 64) with flatBlocks. */
  blocks: number;
  /** The absmax array double-quantized (8-bit codes, a scale per 256 blocks, their mean). */
  doubleQuant: boolean;
  /**
   * Blocks of 64 over the flattened weight (bitsandbytes' blocking) rather than per row; only where the
   * two differ (K not a multiple of 64), and K a multiple of 8.
   */
  flatBlocks: boolean;
  codes: Nf4Codes;
  /**
   * Double quantization as bitsandbytes stores it: u8 codes into a 256-value map held after the mean.
   * dqOffset blocks of the first 256-block group belong to the weight before this one (a part of a
   * weight bitsandbytes quantized whole, such as GPT-2's c_attn).
   */
  dqMap: boolean;
  dqOffset: number;
  /** u32 words of the absmax array: one per block, or ceil(T / 4) + ceil((T + dqOffset) / 256) + 1 (+ 256 with dqMap) for T blocks double-quantized. */
  absmaxWords: number;
}

export interface Nf4LayoutOptions {
  doubleQuant?: boolean;
  /** The layout of a checkpoint bitsandbytes saved: flat blocks where they differ, and its double-quantization map. */
  bitsandbytes?: { codes: Nf4Codes; dqOffset?: number };
}

export function nf4Layout(N: number, K: number, o: Nf4LayoutOptions = {}): Nf4Layout {
  requireDims('nf4', { N, K });
  const blocksPerRow = Math.ceil(K / NF4_BLOCK);
  const bnb = o.bitsandbytes;
  const flatBlocks = !!bnb && K % NF4_BLOCK !== 0;
  if (flatBlocks && K % 8) throw new ShapeError(`nf4: bitsandbytes' flat blocks need an in-width that is a multiple of 8, got ${K}`);
  const blocks = flatBlocks ? Math.ceil((N * K) / NF4_BLOCK) : N * blocksPerRow;
  const doubleQuant = o.doubleQuant ?? false;
  const dqMap = !!bnb && doubleQuant;
  const dqOffset = dqMap ? bnb!.dqOffset ?? 0 : 0;
  const absmaxWords = doubleQuant ? Math.ceil(blocks / 4) + Math.ceil((blocks + dqOffset) / 256) + 1 + (dqMap ? 256 : 0) : blocks;
  return { N, K, wordsPerRow: Math.ceil(K / 8), blocksPerRow, blocks, doubleQuant, flatBlocks, codes: bnb?.codes ?? 'nf4', dqMap, dqOffset, absmaxWords };
}

/** Whether the engine's quantizer writes this layout (NF4 per row); bitsandbytes' variants are only loaded. */
export function nf4Quantizable(l: Nf4Layout): boolean {
  return !l.flatBlocks && l.codes === 'nf4' && !l.dqMap;
}

/** Bytes of the two packed arrays. */
export function nf4Bytes(l: Nf4Layout): { qweight: number; absmax: number; total: number } {
  const qweight = l.N * l.wordsPerRow * 4;
  const absmax = l.absmaxWords * 4;
  return { qweight, absmax, total: qweight + absmax };
}

export interface Nf4Weight {
  format: 'nf4';
  layout: Nf4Layout;
  qweight: BufferLike;
  /** f32 per block, or the double-quantized words. */
  absmax: BufferLike;
}

/** The packed arrays by their shader names, each checked to hold its layout's words. */
export function nf4Arrays(kernel: string, w: Nf4Weight): Record<string, BufferLike> {
  const l = w.layout;
  requireElements(kernel, 'qweight', w.qweight, l.N * l.wordsPerRow);
  requireElements(kernel, 'absmax', w.absmax, l.absmaxWords);
  return { qweight: w.qweight, absmax: w.absmax };
}

/** Override constants of every NF4 dispatch (bitsandbytes' variants only where they apply). */
export function nf4Constants(l: Nf4Layout): Record<string, boolean | number> {
  return {
    DOUBLE_QUANT: l.doubleQuant,
    ...(l.flatBlocks ? { FLAT_BLOCKS: true } : {}),
    ...(l.codes === 'fp4' ? { FP4: true } : {}),
    ...(l.dqMap ? { DQ_MAP: true, DQ_OFFSET: l.dqOffset } : {}),
  };
}

/** The group size the 4-bit products see: 64 per row, or each word its own group with flat blocks. */
export function nf4GroupSize(l: Nf4Layout): number {
  return l.flatBlocks ? 8 : NF4_BLOCK;
}

/**
 * Quantize an f32 weight [N, K] into `out`'s packed arrays. Double quantization needs `scratch`, f32 of
 * at least one value per block, which holds the exact absmax between its two passes.
 */
export function quantizeNf4(rec: CommandRecorder, { w, out, scratch }: { w: BufferLike; out: Nf4Weight; scratch?: BufferLike }): void {
  const l = out.layout;
  if (!nf4Quantizable(l)) throw new ShapeError(`quantizeNf4 writes NF4 blocked per row; this ${l.N}x${l.K} weight has bitsandbytes' layout, which is loaded as stored, never quantized here`);
  requireElements('quantizeNf4', 'W', w, l.N * l.K);
  const arrays = nf4Arrays('quantizeNf4', out);
  if (l.doubleQuant && !scratch) throw new ShapeError('quantizeNf4: double quantization needs a scratch buffer for the absmax');
  if (scratch) requireElements('quantizeNf4', 'scratch', scratch, l.N * l.blocksPerRow);
  const uniforms = { M: 0, N: l.N, K: l.K, G: NF4_BLOCK };
  const constants = nf4Constants(l);
  rec.dispatch({
    shader: 'nf4',
    entryPoint: 'quantize',
    constants: { WG, ...constants },
    uniforms,
    storage: { W: w, ...arrays, Y: l.doubleQuant ? scratch! : rec.gpu.placeholder('write') },
    workgroups: launch1d(rec.gpu, l.N * l.blocksPerRow, WG),
    label: `nf4 quantize ${l.N}x${l.K}`,
  });
  if (!l.doubleQuant) return;
  rec.dispatch({
    shader: 'nf4',
    entryPoint: 'double_quantize',
    constants,
    uniforms,
    storage: { absmax: out.absmax, Y: scratch! },
    workgroups: [1, 1, 1],
    label: `nf4 double quantize ${l.N}x${l.K}`,
  });
}
