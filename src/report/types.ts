// The numbers a report shows. Plain data (JSON-serializable): `mathneuro report --json` prints
// exactly this, and renderReportHtml draws it.
import type { RealizedScaleRow } from '../patch/realized.ts';

/** A histogram over fixed bins: counts[i] holds values in [edges[i], edges[i+1]). */
export interface Histogram {
  label: string;
  edges: number[];
  counts: number[];
  /** values seen (sampled values when the tensor was subsampled) */
  total: number;
}

export interface ReportSelection {
  /** layer names in display order: block numbers, then tensors outside the blocks (output) */
  layers: string[];
  /** matrix kinds: attn_q, attn_k, attn_v, attn_output, ffn_gate, ffn_up, ffn_down, ffn_*_exps, output */
  kinds: string[];
  /** selected weights, [layer][kind] (0 where the layer has no such matrix) */
  selected: number[][];
  /** parameters of the matrix, [layer][kind] (0 where it does not exist) */
  parameters: number[][];
  selectedTotal: number;
  scoredParameters: number;
  modelParameters: number;
}

export interface ScoreDistributions {
  /** log10 of the score S = |W| * norm sum, over all scored weights (sampled for large tensors) */
  math: Histogram;
  general: Histogram;
  /** log10 of the math score of the selected (math-specific) weights */
  selected: Histogram;
  /** weights whose scores were binned, and the stride of the deterministic sample */
  sampledWeights: number;
  sampleStride: number;
}

export interface OverlapPair { a: string; b: string; sizeA: number; sizeB: number; intersection: number; dice: number; jaccard: number }

export interface OverlapPoint {
  /** calibration samples per subset */
  samples: number;
  /** subsets compared (disjoint) */
  subsets: number;
  pairs: OverlapPair[];
  /** mean, min and max over pairs of |A & B| / mean(|A|, |B|) (Dice) */
  meanOverlap: number;
  minOverlap: number;
  maxOverlap: number;
  meanJaccard: number;
  /** selected weights per subset, mean */
  meanSelected: number;
}

export type RealizedScaleTableRow = Omit<RealizedScaleRow, 'candidates'>;

export interface ReportData {
  title: string;
  /** mathneuro version and report format */
  generator: string;
  createdAt: string;
  model: { name: string; file: string; bytes?: number; headerSha256?: string };
  method: string;
  topK: number;
  /** the scale (or 0 for prune) of the realized-scale table, when there is one */
  scale?: number;
  calibration?: { math: string; general: string; mathSamples?: number; generalSamples?: number; mathTokens?: number; generalTokens?: number };
  selection: ReportSelection;
  scores?: ScoreDistributions;
  overlap?: { method: string; topK: number; points: OverlapPoint[]; note?: string };
  realizedScale?: RealizedScaleTableRow[];
}
