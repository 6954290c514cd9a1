// Statistics from several runs, samples or machines add up: every quantity is a sum over samples.
import { MathneuroError } from '../errors.ts';
import type { Stats, WeightStats } from './types.ts';

export function emptyStats(model: Stats['model']): Stats {
  return { model, samples: 0, tokens: 0, datasets: [], weights: new Map() };
}

function cloneWeight(w: WeightStats): WeightStats {
  return { name: w.name, nIn: w.nIn, nMat: w.nMat, sum2: new Float64Array(w.sum2), normSum: new Float64Array(w.normSum), counts: new Float64Array(w.counts) };
}

/** Adds `add` into `into` (mutates and returns `into`). Both must come from the same model. */
export function mergeInto(into: Stats, add: Stats): Stats {
  if (into.model.headerSha256 && add.model.headerSha256 && into.model.headerSha256 !== add.model.headerSha256) {
    throw new MathneuroError('ESTATS', `statistics come from different models (${into.model.fileName} ${into.model.headerSha256.slice(0, 12)} vs ${add.model.fileName} ${add.model.headerSha256.slice(0, 12)})`);
  }
  if (!into.model.headerSha256) into.model = { ...add.model };
  for (const [name, w] of add.weights) {
    const cur = into.weights.get(name);
    if (!cur) { into.weights.set(name, cloneWeight(w)); continue; }
    if (cur.nIn !== w.nIn || cur.nMat !== w.nMat) throw new MathneuroError('ESTATS', `${name}: shapes differ (${cur.nIn}x${cur.nMat} vs ${w.nIn}x${w.nMat})`);
    for (let i = 0; i < w.sum2.length; i++) { cur.sum2[i] += w.sum2[i]; cur.normSum[i] += w.normSum[i]; }
    for (let i = 0; i < w.counts.length; i++) cur.counts[i] += w.counts[i];
  }
  into.samples += add.samples;
  into.tokens += add.tokens;
  for (const d of add.datasets) if (!into.datasets.includes(d)) into.datasets.push(d);
  return into;
}

/** A new Stats, the sum of all given. */
export function mergeStats(...all: Stats[]): Stats {
  if (all.length === 0) throw new MathneuroError('EUSAGE', 'mergeStats needs at least one statistics object');
  const out = emptyStats({ ...all[0].model });
  for (const s of all) mergeInto(out, s);
  return out;
}
