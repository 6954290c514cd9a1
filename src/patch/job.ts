// What both write paths of a patch share: the job (the model, where each tensor's mask comes
// from, the provenance keys, the settings and what has been patched so far) and small helpers.
import { writeSync } from 'node:fs';
import type { RequantizeStrategy } from '../core/codec.ts';
import { MathneuroError } from '../errors.ts';
import type { GgufMetadataEntry, GgufTensorInfo } from '../gguf/reader.ts';
import type { GgufModel } from '../gguf/model.ts';
import type { ColumnStatistics, SelectionMethod } from '../select/select.ts';
import type { RealizedScaleReport } from './realized.ts';
import type { TensorPatchOptions, TensorPatchResult } from './tensor-patch.ts';
import type { PatchedTensor, PatchOptions } from './types.ts';

/** Where a tensor's mask comes from: a selection file, or masks computed up front from statistics. */
export interface MaskSource {
  method: SelectionMethod;
  topK: number;
  seed?: number;
  description: GgufMetadataEntry[];
  /** sha256 of the model the selection was made on, when known */
  modelSha256?: string;
  /** the tensors with selected weights; while `selecting`, every tensor that may get some */
  names: Set<string>;
  count(name: string): number;
  /**
   * A tensor's mask: decoded into `into` (maskBytes of the tensor's weights) where it is stored
   * coded, so that a caller can reuse its masks' memory; else one the source holds (not to be
   * changed)
   */
  mask(name: string, into?: Uint8Array): Uint8Array;
  /**
   * masks still being selected (a patch from statistics, written while the selection runs):
   * ready(name) settles once that tensor's count and mask are known (rejects when the selection
   * fails); all() once every one is, and `names` then holds only tensors with selected weights;
   * stop() ends the selection (after an error) and waits for it
   */
  selecting?: { ready(name: string): Promise<void>; all(): Promise<void>; stop(): Promise<void> };
}

/** One patch of one model, as patchModel has checked and prepared it. */
export interface PatchJob {
  info: GgufModel;
  source: MaskSource;
  /** the mathneuro.* provenance keys of the new header (or of the undo journal) */
  entries: GgufMetadataEntry[];
  options: PatchOptions;
  /** factor of the selected weights (0 prunes) */
  scale: number;
  strategy: RequantizeStrategy;
  realized: RealizedScaleReport;
  /** filled in as tensors are patched */
  tensors: PatchedTensor[];
}

export function checkAbort(signal?: AbortSignal) {
  if (signal?.aborted) throw new MathneuroError('EABORT', 'patching cancelled');
}

export function writeAll(fd: number, bytes: Uint8Array, position: number): number {
  let done = 0;
  while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done, position + done);
  return position + bytes.length;
}

export function importanceOf(options: PatchOptions, name: string): ColumnStatistics | undefined {
  if (options.useImportance === false || !options.math) return undefined;
  return options.math.weights.get(name);
}

/** The settings of one tensor's patch (each write path adds how it wants the changed ranges). */
export function tensorPatchOptions(job: PatchJob, name: string): TensorPatchOptions {
  return { scale: job.scale, strategy: job.strategy, importance: importanceOf(job.options, name), realized: job.realized, threads: job.options.threads };
}

export function patchedTensor(t: GgufTensorInfo, r: Pick<TensorPatchResult, 'selectedWeights' | 'blocksTouched' | 'bytesChanged'>): PatchedTensor {
  return { name: t.name, type: t.typeName, selectedWeights: r.selectedWeights, blocksTouched: r.blocksTouched, bytesChanged: r.bytesChanged };
}
