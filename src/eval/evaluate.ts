// evaluate(): run one task on a model (and, with `vs`, on a reference model over the same items),
// with per-item caching, progress and confidence intervals. The tasks live in tasks/, one file
// each; what they share (the cached, concurrent item run and the metrics) in run.ts.
import { existsSync } from 'node:fs';
import { MathneuroError } from '../errors.ts';
import { resolveCacheDir } from './cache.ts';
import { evaluateGsm8k } from './tasks/gsm8k.ts';
import { evaluateKl } from './tasks/kl.ts';
import { evaluateMath500 } from './tasks/math500.ts';
import { evaluateMmlu } from './tasks/mmlu.ts';
import { evaluatePerplexity } from './tasks/ppl.ts';
import { evalTasks, type EvalResult, type EvaluateOptions } from './types.ts';

export { evalTasks } from './types.ts';
export type { EvalTask, EvalProgress, EvaluateOptions, Metric, ModelRunInfo, EvalResult } from './types.ts';
export { klDivergence } from './divergence.ts';
export { drawGsm8kExemplars } from './tasks/gsm8k.ts';
export type { GenerationRecord } from './tasks/generation.ts';
export { mmluPrediction, type MmluRecord } from './tasks/mmlu.ts';
export type { PerplexityRecord } from './tasks/ppl.ts';
export type { KlRecord } from './tasks/kl.ts';

/** Evaluate a model on one task; with `vs`, also the reference model on the same items, with paired differences. */
export async function evaluate(options: EvaluateOptions): Promise<EvalResult> {
  if (!evalTasks.includes(options.task)) throw new MathneuroError('EUSAGE', `unknown task "${options.task}" (one of ${evalTasks.join(', ')})`);
  if (options.limit !== undefined && (!Number.isInteger(options.limit) || options.limit < 1)) throw new MathneuroError('EUSAGE', 'limit must be a positive integer');
  for (const file of [options.model, options.vs]) {
    if (file !== undefined && !existsSync(file)) throw new MathneuroError('ENOENT', `model not found: ${file}`);
  }
  if (options.identify === false && options.cache !== false) throw new MathneuroError('EUSAGE', 'identify: false needs cache: false (cached results are keyed by the models\' sha256)');
  const cacheDir = resolveCacheDir(options.cacheDir);
  switch (options.task) {
    case 'gsm8k': return evaluateGsm8k(options, cacheDir);
    case 'math500': return evaluateMath500(options, cacheDir);
    case 'mmlu': return evaluateMmlu(options, cacheDir);
    case 'ppl': return evaluatePerplexity(options, cacheDir);
    case 'kl': return evaluateKl(options, cacheDir);
  }
}
