// Consistency of the identification (the paper's overlap figure): selections made from statistics
// of disjoint calibration subsets, compared pairwise. Each tensor is read once and selected once
// per subset; only the pairwise intersection counts are kept.
import { closeSync, openSync } from 'node:fs';
import { MathneuroError } from '../errors.ts';
import { openModelSync } from '../gguf/model.ts';
import { countBits } from '../select/bits.ts';
import { planTensors, selectTensor, type SelectionMethod, type StatisticsSource } from '../select/select.ts';
import { readTensorBytes } from '../core/tensor-io.ts';
import type { OverlapPair, OverlapPoint } from './types.ts';

export interface OverlapSubset {
  label: string;
  math: StatisticsSource;
  general?: StatisticsSource;
}

export interface OverlapOptions {
  /** default 'mathneuro' */
  method?: SelectionMethod;
  topK: number;
  includeOutput?: boolean;
  onProgress?: (p: { done: number; total: number; tensor: string }) => void;
  signal?: AbortSignal;
}

/** |A & B| of two masks of the same length. */
export function intersectionCount(a: Uint8Array, b: Uint8Array): number {
  const and = new Uint8Array(a.length);
  for (let i = 0; i < a.length; i++) and[i] = a[i] & b[i];
  return countBits(and);
}

/** Every pair of subsets: sizes, intersection, Dice (|A&B| / mean size) and Jaccard (|A&B| / |A|B|). */
export async function selectionOverlap(modelPath: string, subsets: OverlapSubset[], options: OverlapOptions): Promise<OverlapPair[]> {
  if (subsets.length < 2) throw new MathneuroError('EUSAGE', 'overlap needs at least two subsets');
  const model = openModelSync(modelPath);
  const plan = planTensors(model, subsets[0].math, { includeOutput: options.includeOutput });
  const sizes = subsets.map(() => 0);
  const inter = subsets.map(() => subsets.map(() => 0));
  // a split model's tensors lie in several files (src/gguf/model.ts)
  const fds = model.shards.map((s) => openSync(s.path, 'r'));
  try {
    let done = 0;
    for (const scored of plan.scored) {
      if (options.signal?.aborted) throw new MathneuroError('EABORT', 'overlap cancelled');
      options.onProgress?.({ done, total: plan.scored.length, tensor: scored.tensor.name });
      const bytes = readTensorBytes(fds[scored.tensor.shard ?? 0], scored.tensor);
      const masks: Uint8Array[] = [];
      for (const s of subsets) {
        const stats = s.math.weights.get(scored.tensor.name);
        if (!stats) throw new MathneuroError('ESTATS', `subset ${s.label} has no statistics for ${scored.tensor.name}`);
        const sel = await selectTensor({ ...scored, stats }, bytes, { method: options.method ?? 'mathneuro', topK: [options.topK], math: s.math, general: s.general, includeOutput: options.includeOutput });
        masks.push(sel.masks[0]);
      }
      masks.forEach((m, i) => { sizes[i] += countBits(m); });
      for (let i = 0; i < masks.length; i++) for (let j = i + 1; j < masks.length; j++) inter[i][j] += intersectionCount(masks[i], masks[j]);
      done++;
    }
    options.onProgress?.({ done, total: plan.scored.length, tensor: '' });
  } finally {
    for (const fd of fds) closeSync(fd);
  }
  const pairs: OverlapPair[] = [];
  for (let i = 0; i < subsets.length; i++) for (let j = i + 1; j < subsets.length; j++) {
    const a = sizes[i], b = sizes[j], x = inter[i][j];
    pairs.push({ a: subsets[i].label, b: subsets[j].label, sizeA: a, sizeB: b, intersection: x, dice: a + b > 0 ? (2 * x) / (a + b) : 1, jaccard: a + b - x > 0 ? x / (a + b - x) : 1 });
  }
  return pairs;
}

/** Summary of the pairs of one subset size. */
export function overlapPoint(samples: number, subsets: number, pairs: OverlapPair[]): OverlapPoint {
  const d = pairs.map((p) => p.dice);
  const sizes = pairs.flatMap((p) => [p.sizeA, p.sizeB]);
  return {
    samples, subsets, pairs,
    meanOverlap: d.reduce((a, b) => a + b, 0) / Math.max(1, d.length),
    minOverlap: Math.min(...d), maxOverlap: Math.max(...d),
    meanJaccard: pairs.reduce((a, p) => a + p.jaccard, 0) / Math.max(1, pairs.length),
    meanSelected: sizes.reduce((a, b) => a + b, 0) / Math.max(1, sizes.length),
  };
}
