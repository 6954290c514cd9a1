// Patching one tensor: only the blocks that hold selected weights are dequantized, changed and
// requantized to the same type by ggml (or, with upcast, the whole tensor is stored in a wider
// type). Every other block keeps its bytes.
import { MathneuroError } from '../errors.ts';
import type { GgufTensorInfo } from '../gguf/reader.ts';
import { forEachBit } from '../select/bits.ts';
import { CANDIDATE_NAMES, codecTypeInfo, dequantize, patchTensor, quantize, type FileAt, type RequantizeStrategy } from '../core/codec.ts';
import { meanSquares, type ColumnStatistics } from '../select/select.ts';
import { RATIO_HISTOGRAM, type RealizedScaleReport } from './realized.ts';

export interface TensorPatchOptions {
  /** factor for selected weights; 0 prunes */
  scale: number;
  /** requantization of touched blocks (default 'best') */
  strategy?: RequantizeStrategy;
  /** statistics whose mean squares serve as importance matrix (types that need or use one) */
  importance?: ColumnStatistics;
  realized?: RealizedScaleReport;
  /** threads for requantizing (default: all cores); the result does not depend on it */
  threads?: number;
  /** the changed ranges are wanted (default true), merged across gaps of up to mergeGap bytes */
  ranges?: boolean;
  mergeGap?: number;
  /** bytes is first filled from this file at this offset (on the worker thread; POSIX only) */
  read?: FileAt;
  /** the patched bytes are then written to this file at this offset (on the worker thread; POSIX only) */
  write?: FileAt;
}

/** A byte range of the tensor that changed: offset relative to the tensor's first byte. */
export interface ChangedRange { offset: number; length: number }

export interface TensorPatchResult {
  /** the tensor's bytes with patched blocks (the input buffer, modified in place) */
  bytes: Uint8Array;
  /** changed byte ranges, merged, in increasing order: offset, length, offset, length, ... (empty when not asked for) */
  changed: Float64Array;
  bytesChanged: number;
  blocksTouched: number;
  selectedWeights: number;
}

/** Changed ranges (offset, length pairs) as ranges, those at most `gap` bytes apart merged into one. */
export function mergeRanges(pairs: Float64Array, gap = 0): ChangedRange[] {
  const ranges: ChangedRange[] = [];
  for (let x = 0; x < pairs.length; x += 2) {
    const offset = pairs[x], length = pairs[x + 1];
    const last = ranges[ranges.length - 1];
    if (last && offset - (last.offset + last.length) <= gap) last.length = offset + length - last.offset;
    else ranges.push({ offset, length });
  }
  return ranges;
}

/**
 * Applies scale (or prune) to the selected weights of one tensor, in its own type. `bytes` (the
 * stored tensor) is modified in place; the ranges whose bytes changed are returned. The blocks are
 * requantized natively on all threads (native/codec.cpp patchTensor).
 */
export async function patchTensorInPlace(tensor: GgufTensorInfo, bytes: Uint8Array, mask: Uint8Array, options: TensorPatchOptions): Promise<TensorPatchResult> {
  const { result, record } = await startTensorPatch(tensor, bytes, mask, options);
  record();
  return result;
}

/**
 * patchTensorInPlace, where the realized-scale figures are added to options.realized only when
 * `record` is called: several tensors may be patched at once and still be recorded in file order
 * (the sums, in floating point, then do not depend on which finished first).
 */
export async function startTensorPatch(tensor: GgufTensorInfo, bytes: Uint8Array, mask: Uint8Array, options: TensorPatchOptions): Promise<{ result: TensorPatchResult; record: () => void }> {
  const info = codecTypeInfo(tensor.type);
  if (!info || !info.canDequantize || !info.canQuantize) throw new MathneuroError('EQUANT', `${tensor.name}: ggml cannot requantize ${tensor.typeName}; use --upcast f16 or q8_0`);
  if (info.requiresImatrix && !options.importance) throw new MathneuroError('EQUANT', `${tensor.name} is ${info.name}, which ggml only quantizes with an importance matrix: pass the math statistics (--math) so their sums of squares serve as one`);
  const useImportance = !!options.importance && info.usesImatrix;
  const r = await patchTensor({
    type: tensor.type, data: bytes, mask, nIn: tensor.shape[0], rows: tensor.shape[1] ?? 1, matrices: tensor.shape[2] ?? 1,
    scale: options.scale, importance: useImportance ? Float32Array.from(meanSquares(options.importance!)) : undefined,
    strategy: info.isQuantized ? options.strategy : 'plain', threads: options.threads, histogram: RATIO_HISTOGRAM,
    ranges: options.ranges, mergeGap: options.mergeGap, read: options.read, write: options.write,
  });
  const candidates: Record<string, number> = {};
  r.candidates.forEach((n, k) => { if (n > 0) candidates[CANDIDATE_NAMES[k]] = n; });
  return {
    result: { bytes, changed: r.changed, bytesChanged: r.bytesChanged, blocksTouched: r.blocksTouched, selectedWeights: r.selectedWeights },
    record: () => options.realized?.addNative(info.name, r.realized, r.blocksTouched, candidates),
  };
}

/**
 * Upcast: the whole tensor is dequantized, the selected weights are set to their exact target in
 * float32, and the tensor is stored in `upcastType` (F16 or Q8_0) so that the change holds.
 */
export function upcastTensor(tensor: GgufTensorInfo, bytes: Uint8Array, mask: Uint8Array, upcastType: number, options: TensorPatchOptions): { bytes: Uint8Array; selectedWeights: number } {
  const target = codecTypeInfo(upcastType)!;
  if (tensor.shape[0] % target.blockSize !== 0) throw new MathneuroError('EQUANT', `${tensor.name}: rows of ${tensor.shape[0]} cannot be stored as ${target.name} (block size ${target.blockSize})`);
  const before = dequantize(tensor.type, bytes, tensor.numel);
  const values = new Float32Array(before);
  let selectedWeights = 0;
  forEachBit(mask, (i) => { values[i] = options.scale === 0 ? 0 : values[i] * options.scale; selectedWeights++; }, 0, tensor.numel);
  const out = quantize(upcastType, values, tensor.shape[0]);
  const after = dequantize(upcastType, out, tensor.numel);
  options.realized?.add(`${tensor.typeName}->${target.name}`, before, after, mask.length * 8 === tensor.numel ? mask : mask, Math.ceil(tensor.numel / target.blockSize), { upcast: Math.ceil(tensor.numel / target.blockSize) });
  return { bytes: out, selectedWeights };
}
