// What the patch really did to the weights: the scale each selected weight got after
// requantization (mean, median, share unchanged, share on target) and the change to weights that
// were not selected but share a block with selected ones. Per tensor type and overall.
import { getBit } from '../select/bits.ts';
import type { NativeRealized } from '../core/codec.ts';

const HIST_MIN = -1, HIST_MAX = 3, HIST_BINS = 400_000;   // ratio resolution 1e-5
/** The histogram of realized ratios, for native code that fills one (patchTensor). */
export const RATIO_HISTOGRAM = { min: HIST_MIN, max: HIST_MAX, bins: HIST_BINS } as const;

class RatioHistogram {
  private readonly bins = new Float64Array(HIST_BINS);
  private below = 0;
  private above = 0;
  count = 0;
  add(ratio: number) {
    this.count++;
    if (ratio < HIST_MIN) { this.below++; return; }
    if (ratio >= HIST_MAX) { this.above++; return; }
    this.bins[Math.floor((ratio - HIST_MIN) / (HIST_MAX - HIST_MIN) * HIST_BINS)]++;
  }
  /** Adds counts made elsewhere with the same bins, as (bin index, count) pairs. */
  addCounts(pairs: Float64Array, below: number, above: number, count: number) {
    for (let x = 0; x < pairs.length; x += 2) this.bins[pairs[x]] += pairs[x + 1];
    this.below += below; this.above += above; this.count += count;
  }
  merge(other: RatioHistogram) {
    for (let i = 0; i < HIST_BINS; i++) this.bins[i] += other.bins[i];
    this.below += other.below; this.above += other.above; this.count += other.count;
  }
  /** The median, to the bin width (1e-5); NaN when empty. */
  median(): number {
    if (this.count === 0) return NaN;
    const half = this.count / 2;
    let cum = this.below;
    if (cum >= half) return HIST_MIN;
    for (let i = 0; i < HIST_BINS; i++) {
      cum += this.bins[i];
      if (cum >= half) return HIST_MIN + (i + 0.5) * (HIST_MAX - HIST_MIN) / HIST_BINS;
    }
    return HIST_MAX;
  }
}

export interface RealizedScaleRow {
  /** tensor type name, or 'all' */
  type: string;
  /** the scale asked for (0: prune) */
  targetScale: number;
  selectedWeights: number;
  /** mean and median of after / before over selected weights that were not zero */
  meanRealizedScale: number;
  medianRealizedScale: number;
  /** selected weights whose value did not change at all */
  shareUnchanged: number;
  /** selected weights that hold exactly before * scale (in float32) afterwards */
  shareOnTarget: number;
  /** weights not selected but in a rewritten block */
  otherWeightsInTouchedBlocks: number;
  /** share of those whose value changed */
  otherShareChanged: number;
  /** RMS of their change relative to the RMS of their values */
  otherRelativeRmsChange: number;
  /** blocks rewritten, and by which requantization candidate */
  blocksRewritten: number;
  candidates: Record<string, number>;
}

class Accumulator {
  selected = 0;
  ratioSum = 0;
  ratios = new RatioHistogram();
  unchanged = 0;
  onTarget = 0;
  others = 0;
  othersChanged = 0;
  otherChangeSq = 0;
  otherValueSq = 0;
  blocks = 0;
  candidates: Record<string, number> = {};
  merge(o: Accumulator) {
    this.selected += o.selected; this.ratioSum += o.ratioSum; this.ratios.merge(o.ratios); this.unchanged += o.unchanged;
    this.onTarget += o.onTarget; this.others += o.others; this.othersChanged += o.othersChanged;
    this.otherChangeSq += o.otherChangeSq; this.otherValueSq += o.otherValueSq; this.blocks += o.blocks;
    for (const [k, v] of Object.entries(o.candidates)) this.candidates[k] = (this.candidates[k] ?? 0) + v;
  }
  row(type: string, targetScale: number): RealizedScaleRow {
    return {
      type, targetScale,
      selectedWeights: this.selected,
      meanRealizedScale: this.ratios.count ? this.ratioSum / this.ratios.count : NaN,
      medianRealizedScale: this.ratios.median(),
      shareUnchanged: this.selected ? this.unchanged / this.selected : NaN,
      shareOnTarget: this.selected ? this.onTarget / this.selected : NaN,
      otherWeightsInTouchedBlocks: this.others,
      otherShareChanged: this.others ? this.othersChanged / this.others : NaN,
      otherRelativeRmsChange: this.otherValueSq > 0 ? Math.sqrt(this.otherChangeSq / this.otherValueSq) : this.otherChangeSq > 0 ? Infinity : 0,
      blocksRewritten: this.blocks,
      candidates: { ...this.candidates },
    };
  }
}

export class RealizedScaleReport {
  private readonly byType = new Map<string, Accumulator>();
  constructor(readonly targetScale: number) {}

  /**
   * Adds rewritten weights: before/after values, which of them were selected (bit mask over the
   * same range), how many blocks they span and which candidate each block kept.
   */
  add(type: string, before: Float32Array, after: Float32Array, selected: Uint8Array, blocks: number, candidates: Record<string, number>) {
    let acc = this.byType.get(type);
    if (!acc) { acc = new Accumulator(); this.byType.set(type, acc); }
    const scale = this.targetScale;
    for (let i = 0; i < before.length; i++) {
      const b = before[i], a = after[i];
      if (getBit(selected, i)) {
        acc.selected++;
        if (Object.is(a, b) || a === b) acc.unchanged++;
        const target = scale === 0 ? 0 : Math.fround(b * scale);
        if (a === target) acc.onTarget++;
        if (b !== 0 && Number.isFinite(b) && Number.isFinite(a)) { const r = a / b; acc.ratioSum += r; acc.ratios.add(r); }
      } else {
        acc.others++;
        if (a !== b) { acc.othersChanged++; acc.otherChangeSq += (a - b) * (a - b); }
        acc.otherValueSq += b * b;
      }
    }
    acc.blocks += blocks;
    for (const [k, v] of Object.entries(candidates)) acc.candidates[k] = (acc.candidates[k] ?? 0) + v;
  }

  /** Adds the figures that native patchTensor summed over one tensor's rewritten blocks. */
  addNative(type: string, r: NativeRealized, blocks: number, candidates: Record<string, number>) {
    let acc = this.byType.get(type);
    if (!acc) { acc = new Accumulator(); this.byType.set(type, acc); }
    acc.selected += r.selected; acc.unchanged += r.unchanged; acc.onTarget += r.onTarget;
    acc.ratioSum += r.ratioSum; acc.ratios.addCounts(r.bins, r.below, r.above, r.ratioCount);
    acc.others += r.others; acc.othersChanged += r.othersChanged; acc.otherChangeSq += r.otherChangeSq; acc.otherValueSq += r.otherValueSq;
    acc.blocks += blocks;
    for (const [k, v] of Object.entries(candidates)) acc.candidates[k] = (acc.candidates[k] ?? 0) + v;
  }

  rows(): RealizedScaleRow[] {
    const all = new Accumulator();
    const rows: RealizedScaleRow[] = [];
    for (const [type, acc] of [...this.byType.entries()].sort((a, b) => a[0].localeCompare(b[0]))) {
      rows.push(acc.row(type, this.targetScale));
      all.merge(acc);
    }
    rows.push(all.row('all', this.targetScale));
    return rows;
  }
}

/** A markdown table of realized-scale rows. */
export function realizedScaleMarkdown(rows: RealizedScaleRow[]): string {
  const f = (x: number, d = 4) => (Number.isFinite(x) ? x.toFixed(d) : '-');
  const pct = (x: number) => (Number.isFinite(x) ? `${(x * 100).toFixed(1)}%` : '-');
  const lines = [
    '| type | selected | mean scale | median scale | unchanged | on target | others in touched blocks | others changed | others rel. RMS change |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    lines.push(`| ${r.type} | ${r.selectedWeights} | ${f(r.meanRealizedScale)} | ${f(r.medianRealizedScale)} | ${pct(r.shareUnchanged)} | ${pct(r.shareOnTarget)} | ${r.otherWeightsInTouchedBlocks} | ${pct(r.otherShareChanged)} | ${f(r.otherRelativeRmsChange, 5)} |`);
  }
  return lines.join('\n');
}
