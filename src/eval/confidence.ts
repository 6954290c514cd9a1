// Confidence intervals and paired tests for evaluation results: Wilson for accuracies,
// McNemar (exact binomial) for paired accuracies, normal intervals for means of per-item values.

/** 1.96: the two-sided 95% normal quantile. */
export const z95 = 1.959963984540054;

export interface Interval { low: number; high: number }

export interface AccuracyEstimate {
  correct: number;
  total: number;
  /** correct / total (0 when total is 0). */
  accuracy: number;
  /** Wilson score interval at 95%. */
  ci95: Interval;
}

/** Wilson score interval for k successes out of n. */
export function wilsonInterval(k: number, n: number, z = z95): Interval {
  if (n === 0) return { low: 0, high: 1 };
  const p = k / n;
  const z2 = z * z;
  const center = (p + z2 / (2 * n)) / (1 + z2 / n);
  const half = (z / (1 + z2 / n)) * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
  return { low: Math.max(0, center - half), high: Math.min(1, center + half) };
}

export function accuracyEstimate(correct: number, total: number): AccuracyEstimate {
  return { correct, total, accuracy: total ? correct / total : 0, ci95: wilsonInterval(correct, total) };
}

/** log C(n, k) by summing logs (exact enough for the n of an evaluation). */
function logChoose(n: number, k: number): number {
  let s = 0;
  for (let i = 1; i <= k; i++) s += Math.log(n - k + i) - Math.log(i);
  return s;
}

/** Two-sided exact binomial test of b successes in b + c trials at p = 1/2 (McNemar's exact test). */
export function mcnemarExactP(b: number, c: number): number {
  const n = b + c;
  if (n === 0) return 1;
  const k = Math.min(b, c);
  let tail = 0;
  for (let i = 0; i <= k; i++) tail += Math.exp(logChoose(n, i) - n * Math.LN2);
  return Math.min(1, 2 * tail);
}

export interface PairedAccuracyComparison {
  /** Items both runs scored. */
  total: number;
  /** Right in the model, wrong in the reference (--vs). */
  onlyModel: number;
  /** Right in the reference, wrong in the model. */
  onlyReference: number;
  bothCorrect: number;
  bothWrong: number;
  /** accuracy(model) - accuracy(reference). */
  difference: number;
  /** 95% interval of the paired difference (Wald on the paired differences, clamped to [-1, 1]). */
  ci95: Interval;
  /** McNemar's exact two-sided p value. */
  pValue: number;
}

/** Compare two runs scored on the same items: the paired difference in accuracy and McNemar's test. */
export function pairedAccuracy(model: readonly boolean[], reference: readonly boolean[]): PairedAccuracyComparison {
  if (model.length !== reference.length) throw new Error('paired comparison needs the same items on both sides');
  let onlyModel = 0, onlyReference = 0, bothCorrect = 0, bothWrong = 0;
  for (let i = 0; i < model.length; i++) {
    if (model[i] && reference[i]) bothCorrect++;
    else if (model[i]) onlyModel++;
    else if (reference[i]) onlyReference++;
    else bothWrong++;
  }
  const n = model.length;
  const difference = n ? (onlyModel - onlyReference) / n : 0;
  const variance = n ? ((onlyModel + onlyReference) / n - difference * difference) / n : 0;
  const half = z95 * Math.sqrt(Math.max(0, variance));
  return {
    total: n, onlyModel, onlyReference, bothCorrect, bothWrong, difference,
    ci95: { low: Math.max(-1, difference - half), high: Math.min(1, difference + half) },
    pValue: mcnemarExactP(onlyModel, onlyReference),
  };
}

export interface MeanEstimate {
  mean: number;
  /** Standard error of the mean. */
  standardError: number;
  count: number;
  ci95: Interval;
}

/** Mean of per-item values with a normal 95% interval. */
export function meanEstimate(values: readonly number[]): MeanEstimate {
  const n = values.length;
  if (n === 0) return { mean: 0, standardError: 0, count: 0, ci95: { low: 0, high: 0 } };
  let sum = 0;
  for (const v of values) sum += v;
  const mean = sum / n;
  let ss = 0;
  for (const v of values) ss += (v - mean) * (v - mean);
  const standardError = n > 1 ? Math.sqrt(ss / (n - 1) / n) : 0;
  return { mean, standardError, count: n, ci95: { low: mean - z95 * standardError, high: mean + z95 * standardError } };
}

/** Paired difference of per-item values (model - reference) with a normal 95% interval and a two-sided z-test p value. */
export function pairedMean(model: readonly number[], reference: readonly number[]): MeanEstimate & { pValue: number } {
  if (model.length !== reference.length) throw new Error('paired comparison needs the same items on both sides');
  const est = meanEstimate(model.map((v, i) => v - reference[i]!));
  const zScore = est.standardError > 0 ? est.mean / est.standardError : est.mean === 0 ? 0 : Infinity;
  return { ...est, pValue: 2 * (1 - normalCdf(Math.abs(zScore))) };
}

/** Standard normal CDF (Abramowitz-Stegun 7.1.26 erf, |error| < 1.5e-7). */
export function normalCdf(x: number): number {
  if (!Number.isFinite(x)) return x > 0 ? 1 : 0;
  const t = 1 / (1 + 0.3275911 * Math.abs(x) / Math.SQRT2);
  const y = 1 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-(x * x) / 2);
  return x >= 0 ? (1 + y) / 2 : (1 - y) / 2;
}
