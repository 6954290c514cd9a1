// Typed wrappers over the native tensor codec (native/codec.cpp): ggml's own dequantization and
// quantization, the exact per-tensor top-K, and the requantization of touched blocks.
import { asMathneuroError, MathneuroError } from '../errors.ts';
import { loadNative } from '../native.ts';

export interface CodecTypeInfo {
  id: number;
  name: string;
  /** weights per block */
  blockSize: number;
  /** bytes per block */
  typeSize: number;
  isQuantized: boolean;
  canDequantize: boolean;
  canQuantize: boolean;
  /** ggml refuses to quantize it without an importance matrix (IQ1_S, IQ2_XXS, IQ2_XS) */
  requiresImatrix: boolean;
  /** ggml's quantizer reads an importance matrix when one is given */
  usesImatrix: boolean;
  /** the codec can re-round single weights of a block keeping its scales */
  keepScale: boolean;
}

const typeCache = new Map<number, CodecTypeInfo | null>();

/** ggml's traits for a type id, or undefined for an id that names no type. */
export function codecTypeInfo(type: number): CodecTypeInfo | undefined {
  if (!typeCache.has(type)) typeCache.set(type, loadNative().codecTypeInfo(type));
  return typeCache.get(type) ?? undefined;
}

export function codecTypeByName(name: string): CodecTypeInfo | undefined {
  const upper = name.toUpperCase();
  for (let id = 0; id < 64; id++) {
    const t = codecTypeInfo(id);
    if (t && t.name.toUpperCase() === upper) return t;
  }
  return undefined;
}

function call<T>(fn: () => T): T {
  try { return fn(); } catch (e) { throw asMathneuroError(e, 'EQUANT'); }
}

async function callAsync<T>(fn: () => Promise<T>): Promise<T> {
  try { return await fn(); } catch (e) { throw asMathneuroError(e, 'EQUANT'); }
}

/** Dequantizes whole blocks of `type` to float32 with ggml's to_float. */
export function dequantize(type: number, bytes: Uint8Array, nElements: number): Float32Array {
  return call(() => loadNative().dequantize(type, bytes, nElements));
}

/** Quantizes rows of nPerRow values with ggml_quantize_chunk (optionally weighted by an importance matrix of nPerRow values). */
export function quantize(type: number, values: Float32Array, nPerRow: number, imatrix?: Float32Array): Uint8Array {
  return call(() => loadNative().quantize(type, values, nPerRow, imatrix ?? null));
}

/** Where a tensor's bytes lie in an open file (the `read` and `write` options of selectTopK and patchTensor). */
export interface FileAt { fd: number; offset: number }

export interface TopKRequest {
  /** ggml type id of `data` */
  type: number;
  /** the raw bytes of the whole tensor, as stored (or `read`) */
  data?: Uint8Array;
  /** instead of data: the tensor's bytes in an open file at an offset, viewed (mapped) by the worker thread; not on Windows (see fileViews) */
  read?: FileAt;
  /** ne0: input width (row length) */
  nIn: number;
  /** ne1: output rows per matrix */
  rows: number;
  /** matrices (experts) in the tensor, 1 for a dense weight */
  matrices: number;
  /** one or more column weightings, each nIn * matrices values; score = |W| * colWeights[matrix * nIn + column] */
  colWeights: Float64Array[];
  /** 'matrix': top-K of each matrix flattened; 'row': top-K of each output row */
  groupBy: 'matrix' | 'row';
  /** how many weights to take per group, one entry per K */
  counts: number[];
  /** groups of at least this many weights use the sampled one-pass select (matrices) or the radix select (rows), smaller ones nth_element (default 2^16) */
  radixMinGroup?: number;
  /** a threshold bucket of the radix select holding more scores than this is refined by another pass (default 2^20; tests lower it) */
  radixBucketLimit?: number;
  /** 1 (default): radix thresholds first estimated from a sample, exact fallback; 0: histogram only; 2: no margin (tests the fallback) */
  radixSampling?: number;
  /** threads for dequantizing and scoring (default: all cores); the masks do not depend on it */
  threads?: number;
  /** the widest SIMD kernels of the one-pass select, as far as the CPU runs them: 0 baseline, 1 AVX2, 2 AVX-512 (default); the masks do not depend on it (tests compare the levels) */
  simdLevel?: number;
  /**
   * With exactly two colWeights sets: return one set, the first set's masks AND NOT the second's
   * (MathNeuro's math-specific weights), computed on the worker thread.
   */
  subtract?: boolean;
}

/** Whether selectTopK's `read` option works here (the worker maps or reads the file itself). */
export const fileViews = process.platform !== 'win32';

/**
 * Exact top-K per group: masks[colWeightSet][countIndex] has bit i (byte i >> 3, bit i & 7) set when
 * flat weight i is among the `count` highest positive scores of its group; ties at the threshold
 * go to the lower flat index. Scores are computed in float64 from ggml's float32 dequantization.
 */
export function selectTopK(request: TopKRequest): Promise<Uint8Array[][]> {
  return callAsync(() => loadNative().selectTopK(request));
}

export type RequantizeStrategy = 'auto' | 'best' | 'plain' | 'keep-scale';
export const REQUANTIZE_STRATEGIES: readonly RequantizeStrategy[] = ['auto', 'best', 'plain', 'keep-scale'];

export interface RequantizeRequest {
  type: number;
  /** whole blocks as stored */
  blocks: Uint8Array;
  /** one bit per weight of `blocks`: the weights to change */
  selected: Uint8Array;
  /** factor for selected weights; 0 prunes */
  scale: number;
  /** per weight importance (the statistics' sums of squares), for types that use or need one */
  imatrix?: Float32Array;
  /** 'best' (default here; patchModel's default is 'auto'): per block the closest of plain requantization, keep-scale re-rounding and an importance-weighted requantization; 'auto': keep-scale, rescaled sub-blocks where a selected weight sits at the largest code, ggml's candidates only where neither reaches the target */
  strategy?: RequantizeStrategy;
}

export const CANDIDATE_NAMES = ['plain', 'keep-scale', 'weighted', 'exact', 'rescaled'] as const;
export type CandidateName = typeof CANDIDATE_NAMES[number];

export interface RequantizeResult {
  bytes: Uint8Array;
  /** dequantized weights before and after */
  before: Float32Array;
  after: Float32Array;
  /** per block, the index into CANDIDATE_NAMES of the candidate kept */
  chosen: Uint8Array;
}

export function requantizeBlocks(request: RequantizeRequest): Promise<RequantizeResult> {
  return callAsync(() => loadNative().requantizeBlocks({ ...request, imatrix: request.imatrix ?? null, strategy: request.strategy ?? 'best' }));
}

export interface PatchTensorRequest {
  type: number;
  /** the whole tensor as stored; rewritten in place */
  data: Uint8Array;
  /** one bit per weight: the weights to change */
  mask: Uint8Array;
  nIn: number;
  rows: number;
  matrices: number;
  /** factor for selected weights; 0 prunes */
  scale: number;
  /** importance per column and matrix (nIn * matrices), for types that use or need one */
  importance?: Float32Array;
  strategy?: RequantizeStrategy;
  /** threads (default: all cores); the result does not depend on it */
  threads?: number;
  /**
   * auto on Q4_K/Q5_K: a rescaled candidate whose error provably exceeds keep-scale's is not built
   * (default true). The result does not depend on it; tests turn it off to check that.
   */
  candidateBound?: boolean;
  /** bins of the realized-ratio histogram */
  histogram?: { min: number; max: number; bins: number };
  /** return the changed byte ranges (default true; false: only bytesChanged) */
  ranges?: boolean;
  /** merge changed ranges separated by at most this many unchanged bytes (default 0) */
  mergeGap?: number;
  /** fill data from this file at this offset first, on the worker thread (POSIX only) */
  read?: FileAt;
  /** write the patched data to this file at this offset, on the worker thread (POSIX only) */
  write?: FileAt;
}

/** What the selected weights and their blocks' other weights became (summed over the tensor). */
export interface NativeRealized {
  selected: number; unchanged: number; onTarget: number;
  ratioCount: number; ratioSum: number; below: number; above: number;
  /** the histogram bins hit: index, count, index, count, ... */
  bins: Float64Array;
  others: number; othersChanged: number; otherChangeSq: number; otherValueSq: number;
}

export interface PatchTensorResult {
  /** merged changed byte ranges of the tensor: offset, length, offset, length, ... (empty with ranges: false) */
  changed: Float64Array;
  /** bytes whose blocks changed */
  bytesChanged: number;
  blocksTouched: number;
  selectedWeights: number;
  /** blocks kept per candidate (index into CANDIDATE_NAMES) */
  candidates: Float64Array;
  realized: NativeRealized;
}

/**
 * Requantizes, in place and on all threads, every block of a tensor that holds a selected weight
 * (per block as requantizeBlocks does) and sums what the weights became.
 */
export function patchTensor(request: PatchTensorRequest): Promise<PatchTensorResult> {
  return callAsync(() => loadNative().patchTensor({ ...request, importance: request.importance ?? null, strategy: request.strategy ?? 'best' }));
}

export function requireDequantizable(type: number, what: string): CodecTypeInfo {
  const t = codecTypeInfo(type);
  if (!t || !t.canDequantize) throw new MathneuroError('EQUANT', `${what}: ggml cannot dequantize type ${t?.name ?? type}`);
  return t;
}
