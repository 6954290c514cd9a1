// Patching one tensor: only the blocks that hold selected weights are dequantized, changed and
// requantized to the same type by ggml (or, with upcast, the whole tensor is stored in a wider
// type). Every other block keeps its bytes.
import { MathneuroError } from '../errors.ts';
import type { GgufTensorInfo } from '../gguf/reader.ts';
import { forEachBit, getBit, newMask, setBit } from '../select/bits.ts';
import { CANDIDATE_NAMES, codecTypeInfo, dequantize, quantize, requantizeBlocks, type RequantizeStrategy } from '../select/codec.ts';
import type { ColumnStatistics } from '../select/select.ts';
import type { RealizedScaleReport } from './realized.ts';

export interface TensorPatchOptions {
  /** factor for selected weights; 0 prunes */
  scale: number;
  /** requantization of touched blocks (default 'best') */
  strategy?: RequantizeStrategy;
  /** statistics whose mean squares serve as importance matrix (types that need or use one) */
  importance?: ColumnStatistics;
  realized?: RealizedScaleReport;
  /** weights per requantization batch (bounds memory; default 2^20) */
  batchWeights?: number;
}

/** A byte range of the tensor that changed: offset relative to the tensor's first byte. */
export interface ChangedRange { offset: number; length: number }

export interface TensorPatchResult {
  /** the tensor's bytes with patched blocks (the input buffer, modified in place) */
  bytes: Uint8Array;
  /** changed byte ranges, merged, in increasing order */
  changed: ChangedRange[];
  blocksTouched: number;
  selectedWeights: number;
}

/** Per weight importance for a range of blocks, from the statistics (sum2 / tokens). */
function importanceFor(stats: ColumnStatistics, tensor: GgufTensorInfo, blockIndices: number[], blockSize: number): Float32Array {
  const nIn = tensor.shape[0];
  const perMatrix = nIn * tensor.shape[1];
  const perColumn = stats.counts.length === stats.nIn * stats.nMat;
  const out = new Float32Array(blockIndices.length * blockSize);
  let o = 0;
  for (const b of blockIndices) {
    for (let j = 0; j < blockSize; j++) {
      const i = b * blockSize + j;
      const m = Math.floor(i / perMatrix), c = m * nIn + (i % nIn);
      const count = perColumn ? stats.counts[c] : stats.counts[m];
      out[o++] = count > 0 ? stats.sum2[c] / count : 0;
    }
  }
  return out;
}

/** Blocks (indices) that hold at least one selected weight. */
export function touchedBlocks(mask: Uint8Array, numel: number, blockSize: number): number[] {
  const blocks: number[] = [];
  let last = -1;
  forEachBit(mask, (i) => { const b = Math.floor(i / blockSize); if (b !== last) { blocks.push(b); last = b; } }, 0, numel);
  return blocks;
}

/**
 * Applies scale (or prune) to the selected weights of one tensor, in its own type. `bytes` (the
 * stored tensor) is modified in place; the ranges whose bytes changed are returned.
 */
export async function patchTensorInPlace(tensor: GgufTensorInfo, bytes: Uint8Array, mask: Uint8Array, options: TensorPatchOptions): Promise<TensorPatchResult> {
  const info = codecTypeInfo(tensor.type);
  if (!info || !info.canDequantize || !info.canQuantize) throw new MathneuroError('EQUANT', `${tensor.name}: ggml cannot requantize ${tensor.typeName}; use --upcast f16 or q8_0`);
  const needsImportance = info.requiresImatrix;
  if (needsImportance && !options.importance) throw new MathneuroError('EQUANT', `${tensor.name} is ${info.name}, which ggml only quantizes with an importance matrix: pass the math statistics (--math) so their sums of squares serve as one`);
  const bs = info.blockSize, ts = info.typeSize;
  const blocks = touchedBlocks(mask, tensor.numel, bs);
  const batchBlocks = Math.max(1, Math.floor((options.batchWeights ?? 1 << 20) / bs));
  const useImportance = !!options.importance && info.usesImatrix;
  const changedBlocks: number[] = [];
  let selectedWeights = 0;
  for (let start = 0; start < blocks.length; start += batchBlocks) {
    const batch = blocks.slice(start, start + batchBlocks);
    const blockBytes = new Uint8Array(batch.length * ts);
    const selected = newMask(batch.length * bs);
    batch.forEach((b, k) => {
      blockBytes.set(bytes.subarray(b * ts, (b + 1) * ts), k * ts);
      for (let j = 0; j < bs; j++) if (getBit(mask, b * bs + j)) { setBit(selected, k * bs + j); selectedWeights++; }
    });
    const result = await requantizeBlocks({
      type: tensor.type, blocks: blockBytes, selected, scale: options.scale,
      imatrix: useImportance ? importanceFor(options.importance!, tensor, batch, bs) : undefined,
      strategy: info.isQuantized ? options.strategy : 'plain',
    });
    const candidates: Record<string, number> = {};
    for (const c of result.chosen) candidates[CANDIDATE_NAMES[c]] = (candidates[CANDIDATE_NAMES[c]] ?? 0) + 1;
    options.realized?.add(info.name, result.before, result.after, selected, batch.length, candidates);
    batch.forEach((b, k) => {
      const next = result.bytes.subarray(k * ts, (k + 1) * ts);
      const current = bytes.subarray(b * ts, (b + 1) * ts);
      let same = true;
      for (let x = 0; x < ts; x++) if (next[x] !== current[x]) { same = false; break; }
      if (!same) { current.set(next); changedBlocks.push(b); }
    });
  }
  const changed: ChangedRange[] = [];
  for (const b of changedBlocks) {
    const last = changed[changed.length - 1];
    if (last && last.offset + last.length === b * ts) last.length += ts;
    else changed.push({ offset: b * ts, length: ts });
  }
  return { bytes, changed, blocksTouched: blocks.length, selectedWeights };
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
