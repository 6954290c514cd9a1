// The report's numbers from a model and its statistics: one pass over the scored tensors that
// selects (as `mathneuro select` does), counts per layer and matrix kind, and bins the scores.
import { MathneuroError } from '../errors.ts';
import { type GgufInfo } from '../gguf/reader.ts';
import { openModelSync } from '../gguf/model.ts';
import { getBit } from '../select/bits.ts';
import { dequantize } from '../core/codec.ts';
import { layerOf, planTensors, selectTensors, type SelectionMethod, type StatisticsSource, type TensorSelection } from '../select/select.ts';
import type { Histogram, ReportSelection, ScoreDistributions } from './types.ts';

/** The matrix kind of a tensor name: blk.3.attn_q.weight -> attn_q, output.weight -> output. */
export function matrixKind(name: string): string {
  const m = /^blk\.\d+\.(.+)\.weight$/.exec(name);
  return m ? m[1] : name.replace(/\.weight$/, '');
}

const KIND_ORDER = ['attn_q', 'attn_k', 'attn_v', 'attn_qkv', 'attn_output', 'ffn_gate', 'ffn_up', 'ffn_down', 'ffn_gate_exps', 'ffn_up_exps', 'ffn_down_exps', 'ffn_gate_shexp', 'ffn_up_shexp', 'ffn_down_shexp', 'output'];

function kindRank(kind: string): number {
  const i = KIND_ORDER.indexOf(kind);
  return i >= 0 ? i : KIND_ORDER.length;
}

function layerRank(a: string, b: string): number {
  const na = /^\d+$/.test(a) ? Number(a) : NaN, nb = /^\d+$/.test(b) ? Number(b) : NaN;
  if (Number.isInteger(na) && Number.isInteger(nb)) return na - nb;
  return Number.isInteger(na) ? -1 : Number.isInteger(nb) ? 1 : a.localeCompare(b);
}

/** Layer x kind grid of selected and total weights from per-tensor counts. */
export function selectionGrid(tensors: { name: string; numel: number; selected: number }[], modelParameters: number): ReportSelection {
  const layers = [...new Set(tensors.map((t) => layerOf(t.name)))].sort(layerRank);
  const kinds = [...new Set(tensors.map((t) => matrixKind(t.name)))].sort((a, b) => kindRank(a) - kindRank(b) || a.localeCompare(b));
  const selected = layers.map(() => kinds.map(() => 0));
  const parameters = layers.map(() => kinds.map(() => 0));
  for (const t of tensors) {
    const l = layers.indexOf(layerOf(t.name)), k = kinds.indexOf(matrixKind(t.name));
    selected[l][k] += t.selected;
    parameters[l][k] += t.numel;
  }
  return {
    layers, kinds, selected, parameters,
    selectedTotal: tensors.reduce((a, t) => a + t.selected, 0),
    scoredParameters: tensors.reduce((a, t) => a + t.numel, 0),
    modelParameters,
  };
}

/** Fixed fine bins over log10 values; trimmed and coarsened when turned into a Histogram. */
class LogHistogram {
  static readonly MIN = -20;
  static readonly MAX = 20;
  static readonly WIDTH = 0.02;
  readonly counts = new Float64Array((LogHistogram.MAX - LogHistogram.MIN) / LogHistogram.WIDTH);
  total = 0;
  zeros = 0;
  add(value: number) {
    if (!(value > 0)) { this.zeros++; return; }
    const x = Math.log10(value);
    const i = Math.min(this.counts.length - 1, Math.max(0, Math.floor((x - LogHistogram.MIN) / LogHistogram.WIDTH)));
    this.counts[i]++;
    this.total++;
  }
  range(): [number, number] | undefined {
    let lo = -1, hi = -1;
    for (let i = 0; i < this.counts.length; i++) if (this.counts[i] > 0) { if (lo < 0) lo = i; hi = i; }
    return lo < 0 ? undefined : [lo, hi + 1];
  }
  /** counts over [lo, hi) fine bins, merged into `bins` equal bins */
  coarse(label: string, lo: number, hi: number, bins: number): Histogram {
    const per = Math.max(1, Math.ceil((hi - lo) / bins));
    const edges: number[] = [], counts: number[] = [];
    for (let b = lo; b < hi; b += per) {
      edges.push(Number((LogHistogram.MIN + b * LogHistogram.WIDTH).toFixed(4)));
      let c = 0;
      for (let i = b; i < Math.min(hi, b + per); i++) c += this.counts[i];
      counts.push(c);
    }
    edges.push(Number((LogHistogram.MIN + Math.min(hi, lo + counts.length * per) * LogHistogram.WIDTH).toFixed(4)));
    return { label, edges, counts, total: this.total };
  }
}

export class ScoreBinner {
  private readonly math = new LogHistogram();
  private readonly general = new LogHistogram();
  private readonly selected = new LogHistogram();
  sampledWeights = 0;
  constructor(readonly stride: number) {}

  /** Bins every `stride`-th weight of a tensor (and every selected weight of the sampled ones). */
  add(selection: TensorSelection, bytes: Uint8Array, math: StatisticsSource, general: StatisticsSource | undefined, q: number) {
    const t = selection.tensor;
    const values = dequantize(t.type, bytes, t.numel);
    const nIn = t.shape[0], rows = t.shape[1];
    const perMatrix = nIn * rows;
    const ms = math.weights.get(t.name)!.normSum, gs = general?.weights.get(t.name)?.normSum;
    const mask = selection.masks[q];
    for (let i = 0; i < t.numel; i += this.stride) {
      const m = Math.floor(i / perMatrix), j = i % nIn;
      const w = Math.abs(values[i]);
      const sm = w * ms[m * nIn + j];
      this.math.add(sm);
      if (gs) this.general.add(w * gs[m * nIn + j]);
      if (getBit(mask, i)) this.selected.add(sm);
      this.sampledWeights++;
    }
  }

  build(bins = 60): ScoreDistributions | undefined {
    const ranges = [this.math.range(), this.general.range()].filter((r): r is [number, number] => !!r);
    if (ranges.length === 0) return undefined;
    const lo = Math.min(...ranges.map((r) => r[0])), hi = Math.max(...ranges.map((r) => r[1]));
    return {
      math: this.math.coarse('math', lo, hi, bins),
      general: this.general.coarse('general', lo, hi, bins),
      selected: this.selected.coarse('selected', lo, hi, bins),
      sampledWeights: this.sampledWeights,
      sampleStride: this.stride,
    };
  }
}

export interface AnalyzeOptions {
  math: StatisticsSource;
  general?: StatisticsSource;
  /** default 'mathneuro' */
  method?: SelectionMethod;
  topK: number;
  includeOutput?: boolean;
  seed?: number;
  /** bin at most about this many weights' scores (default 4,000,000; 0 = no score histograms) */
  maxScoredWeights?: number;
  onProgress?: (p: { done: number; total: number; tensor: string }) => void;
  signal?: AbortSignal;
}

export interface Analysis {
  model: GgufInfo;
  selection: ReportSelection;
  scores?: ScoreDistributions;
  tensors: { name: string; type: string; numel: number; selected: number }[];
}

/** Select (one K) and gather the report's per-layer counts and score histograms in one pass. */
export async function analyzeSelection(modelPath: string, options: AnalyzeOptions): Promise<Analysis> {
  const model = openModelSync(modelPath);
  const plan = planTensors(model, options.math, { includeOutput: options.includeOutput });
  if (!(options.topK > 0)) throw new MathneuroError('EUSAGE', `K must be positive, got ${options.topK}`);
  const scored = plan.scored.reduce((a, s) => a + s.tensor.numel, 0);
  const maxWeights = options.maxScoredWeights ?? 4_000_000;
  const binner = maxWeights > 0 ? new ScoreBinner(Math.max(1, Math.ceil(scored / maxWeights))) : undefined;
  const tensors: Analysis['tensors'] = [];
  for await (const sel of selectTensors(model, plan, {
    method: options.method ?? 'mathneuro', topK: [options.topK], math: options.math, general: options.general,
    includeOutput: options.includeOutput, seed: options.seed, keepBytes: !!binner, onProgress: options.onProgress, signal: options.signal,
  })) {
    tensors.push({ name: sel.tensor.name, type: sel.tensor.typeName, numel: sel.tensor.numel, selected: sel.counts[0] });
    if (binner && sel.bytes) binner.add(sel, sel.bytes, options.math, options.general, 0);
  }
  const modelParameters = model.tensors.reduce((a, t) => a + t.numel, 0);
  return { model, selection: selectionGrid(tensors, modelParameters), scores: binner?.build(), tensors };
}
