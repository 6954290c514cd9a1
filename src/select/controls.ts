// Control sets for the boost experiment (issue 17), beside MathNeuro's own selection and with the
// same number of weights in every matrix, so that a difference in effect is about which weights
// were chosen, not how many:
// - random: as many weights at uniformly random positions (the same masks as method `random` of
//   select.ts, whose per-matrix seeds this reproduces);
// - wanda-matched: the highest math scores (Wanda-style: no general filter), as many as MathNeuro's set;
// - general-specific: general top-K minus math top-K, the mirror image of MathNeuro's set (math top-K
//   minus general top-K); both top-K sets have floor(numel x K) weights, so the two differences have
//   the same size in every matrix;
// - all: every scored weight, for the norm-matched control (every weight x the factor that changes
//   the total weight norm as much as the boost of MathNeuro's set does: normMatchedScale).
// Experiment-only: selection files of these sets are written with writeSelectionFile and replayed by
// patchModel like any other; the CLI's methods stay those of select.ts.
import { closeSync, openSync } from 'node:fs';
import path from 'node:path';
import { dequantize, requireDequantizable, selectTopK } from '../core/codec.ts';
import { readTensorBytes, sha256File } from '../core/tensor-io.ts';
import type { GgufInfo, GgufTensorInfo } from '../gguf/reader.ts';
import { andNot, countBits, forEachBit, getBit, newMask, setBit } from './bits.ts';
import { SelectionFileWriter } from './file.ts';
import { markRandom, SelectionSummaryBuilder, tensorSelection, topKCount, type SelectionMethod, type StatisticsSource, type TensorPlan, type TensorSelection } from './select.ts';

export const CONTROL_SETS = ['mathneuro', 'random', 'wanda-matched', 'general-specific'] as const;
export type ControlSet = typeof CONTROL_SETS[number];

export interface ControlSetOptions {
  topK: number[];
  math: StatisticsSource;
  general: StatisticsSource;
  /** seed of the random set (default 0, as select.ts) */
  seed?: number;
  threads?: number;
}

export interface ControlSelection {
  tensor: GgufTensorInfo;
  matrices: number;
  sets: Record<ControlSet, TensorSelection>;
}


/** MathNeuro's set and the three same-count control sets of every scored tensor, for every K. */
export async function* selectControlSets(model: GgufInfo, plan: TensorPlan, options: ControlSetOptions): AsyncGenerator<ControlSelection> {
  const fd = openSync(model.path, 'r');
  try {
    for (const scored of plan.scored) {
      const { tensor, rows, matrices } = scored;
      requireDequantizable(tensor.type, tensor.name);
      const general = options.general.weights.get(tensor.name);
      if (!general) throw new Error(`the general statistics have no entry for ${tensor.name}`);
      const nIn = tensor.shape[0];
      const perMatrix = nIn * rows;
      const bytes = readTensorBytes(fd, tensor);
      const request = { type: tensor.type, data: bytes, nIn, rows, matrices, groupBy: 'matrix' as const, threads: options.threads };
      const counts = options.topK.map((k) => topKCount(perMatrix, k));
      const [mathTop, generalTop] = await selectTopK({ ...request, colWeights: [scored.stats.normSum, general.normSum], counts });
      const mathneuro = mathTop.map((m, q) => andNot(m, generalTop[q]));
      const generalSpecific = generalTop.map((g, q) => andNot(g, mathTop[q]));
      // per K and matrix, MathNeuro's count
      const target = mathneuro.map((mask) => Array.from({ length: matrices }, (_, m) => countBits(mask, m * perMatrix, (m + 1) * perMatrix)));
      const random = target.map((perM, q) => {
        const mask = newMask(tensor.numel);
        perM.forEach((count, m) => markRandom(mask, m * perMatrix, perMatrix, count, `${options.seed ?? 0}:${tensor.name}:${m}:${options.topK[q]}`));
        return mask;
      });
      // the math top-c of each matrix, c its MathNeuro count: one top-K call for all distinct counts
      const distinct = [...new Set(target.flat().filter((c) => c > 0))].sort((a, b) => a - b);
      const byCount = distinct.length ? (await selectTopK({ ...request, colWeights: [scored.stats.normSum], counts: distinct }))[0] : [];
      const wandaMatched = target.map((perM) => {
        const mask = newMask(tensor.numel);
        perM.forEach((count, m) => {
          if (count === 0) return;
          const from = byCount[distinct.indexOf(count)];
          forEachBit(from, (i) => setBit(mask, i), m * perMatrix, (m + 1) * perMatrix);
        });
        return mask;
      });
      yield {
        tensor, matrices,
        sets: {
          mathneuro: tensorSelection(tensor, matrices, mathneuro),
          random: tensorSelection(tensor, matrices, random),
          'wanda-matched': tensorSelection(tensor, matrices, wandaMatched),
          'general-specific': tensorSelection(tensor, matrices, generalSpecific),
        },
      };
    }
  } finally {
    closeSync(fd);
  }
}

/** Every weight of a scored tensor (the norm-matched control scales them all). */
export function allWeightsSelection(tensor: GgufTensorInfo, matrices: number, kCount = 1): TensorSelection {
  const mask = newMask(tensor.numel).fill(0xff);
  if (tensor.numel % 8) mask[mask.length - 1] = (1 << (tensor.numel % 8)) - 1;
  return tensorSelection(tensor, matrices, Array.from({ length: kCount }, () => mask));
}

/**
 * Writes selections (one per scored tensor, masks for every K of `topK`) as a selection file that
 * patchModel replays. `label` names the set in the file's index (an experiment's control set is not
 * one of select.ts's methods: the label is recorded as the method).
 */
export async function writeSelectionFile(file: string, model: GgufInfo, label: string, topK: number[], selections: TensorSelection[], plan: TensorPlan, statistics: { math: string; general?: string }): Promise<void> {
  const method = label as SelectionMethod;
  const summary = new SelectionSummaryBuilder(model, method, topK, plan.skipped);
  const writer = new SelectionFileWriter(file);
  try {
    for (const s of selections) { summary.add(s); await writer.add(s); }
    const { tensors: _omit, ...rest } = summary.build();
    await writer.finish({
      method, topK, includeOutput: false,
      model: { path: path.basename(model.path), name: String(model.metadata.get('general.name') ?? ''), sha256: sha256File(model.path), fileSize: model.fileSize, tensorCount: model.tensors.length },
      statistics: { math: { path: statistics.math }, general: statistics.general ? { path: statistics.general } : undefined },
      summary: rest,
    });
  } catch (e) {
    writer.abort();
    throw e;
  }
}

/** Sum of squares of a tensor's weights (float64 over ggml's float32 dequantization), of all or of the masked ones. */
export function squareSum(model: GgufInfo, tensor: GgufTensorInfo, mask?: Uint8Array): number {
  const fd = openSync(tensor.file ?? model.path, 'r');
  try {
    const w = dequantize(tensor.type, readTensorBytes(fd, tensor), tensor.numel);
    let s = 0;
    if (mask) { for (let i = 0; i < w.length; i++) if (getBit(mask, i)) s += w[i] * w[i]; }
    else for (let i = 0; i < w.length; i++) s += w[i] * w[i];
    return s;
  } finally {
    closeSync(fd);
  }
}

/**
 * The factor f that, applied to every scored weight, changes the total sum of squares (so the total
 * weight norm) as much as scaling a set of weights whose sum of squares is `setSquares` by `scale`:
 * (f^2 - 1) x allSquares = (scale^2 - 1) x setSquares.
 */
export function normMatchedScale(scale: number, setSquares: number, allSquares: number): number {
  return Math.sqrt(1 + (scale * scale - 1) * setSquares / allSquares);
}
