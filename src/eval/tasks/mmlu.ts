// mmlu: 0-shot multiple choice by the log-likelihood of the answer letter (or the choice text),
// math subjects apart.
import path from 'node:path';
import { defaultDataDir, loadMmlu, mmluMathSubjects, type MmluItem } from '../data.ts';
import { mmluContinuations, mmluPrompt } from '../prompts.ts';
import { accuracyMetric, bothSides, groupBy, neededContext, onRuntime, openLlamaRuntime, runItems } from '../run.ts';
import type { EvalResult, EvaluateOptions, Metric } from '../types.ts';

export interface MmluRecord { logLikelihoods: number[]; tokenCounts: number[] }

/** The predicted choice: highest log-likelihood (choice mode: per token, as lm-eval's acc_norm does per byte). */
export function mmluPrediction(record: MmluRecord, mode: 'letter' | 'choice'): number {
  const scores = record.logLikelihoods.map((ll, i) => (mode === 'choice' ? ll / Math.max(1, record.tokenCounts[i]!) : ll));
  let best = 0;
  for (let i = 1; i < scores.length; i++) if (scores[i]! > scores[best]!) best = i;
  return best;
}

export async function evaluateMmlu(options: EvaluateOptions, cacheDir: string): Promise<EvalResult> {
  const source = options.data ? path.resolve(options.data) : path.join(defaultDataDir(), 'mmlu');
  let items: MmluItem[] = loadMmlu(source, options.subjects);
  if (options.limit !== undefined) {
    // --limit N takes the first N of every subject, so all subjects stay represented.
    const bySubject = groupBy(items, (i) => i.subject);
    items = [...bySubject.values()].flatMap((idx) => idx.slice(0, options.limit).map((i) => items[i]!));
  }
  const mode = options.mmluMode ?? 'letter';
  const settings = { format: 'mmlu-0shot-v1', mode };
  const prompts = new Map(items.map((i) => [i.id, mmluPrompt(i)]));
  const sides = await bothSides<MmluRecord>(options, cacheDir, (ctx, modelPath, key) => runItems<MmluItem, MmluRecord>(ctx, key, 'mmlu', settings, items, onRuntime(openLlamaRuntime(modelPath, options,
    async (runtime, missing) => ({
      // choice mode once gave a wrong log-likelihood with several sequences (-54.9 instead of -64.2,
      // in CI): the sampling race after a multi-sequence decode (runtime.ts,
      // serializeFirstSampleAfterDecode), fixed; 8 sequences against 1 then differed in 0 of 12 runs
      // (4 of 8 before the fix, by up to 22 nats).
      parallel: options.parallel ?? 8,
      contextSize: neededContext(missing.map((i) => runtime.tokenize(prompts.get(i.id)! + mmluContinuations(i, mode).reduce((a, b) => (a.length > b.length ? a : b))).length), 0, options.contextSize),
    })),
    async (_runtime, slot, item) => {
      const r = await slot.continuationLogLikelihoods(prompts.get(item.id)!, mmluContinuations(item, mode));
      return { result: { logLikelihoods: r.logLikelihoods, tokenCounts: r.tokenCounts }, tokens: 0 };
    })));
  const score = (results: Map<string, MmluRecord>) => items.map((item) => {
    const record = results.get(item.id)!;
    const predicted = mmluPrediction(record, mode);
    return { id: item.id, subject: item.subject, index: item.index, answer: item.answer, predicted, correct: predicted === item.answer, ...record };
  });
  const model = score(sides.model.results);
  const reference = sides.reference ? score(sides.reference.results) : undefined;
  const math = new Set<string>(mmluMathSubjects);
  const pick = (rows: typeof model | undefined, idx: number[]) => rows && idx.map((i) => rows[i]!.correct);
  const all = items.map((_, i) => i);
  const mathIdx = all.filter((i) => math.has(items[i]!.subject));
  const otherIdx = all.filter((i) => !math.has(items[i]!.subject));
  const metrics: Metric[] = [accuracyMetric('overall', 'main', pick(model, all)!, pick(reference, all))];
  if (mathIdx.length) metrics.push(accuracyMetric('math subjects', 'main', pick(model, mathIdx)!, pick(reference, mathIdx)));
  if (otherIdx.length) metrics.push(accuracyMetric('other subjects', 'main', pick(model, otherIdx)!, pick(reference, otherIdx)));
  for (const [subject, idx] of groupBy(items, (i) => i.subject)) metrics.push(accuracyMetric(subject, math.has(subject) ? 'math subject' : 'subject', pick(model, idx)!, pick(reference, idx)));
  return { task: 'mmlu', settings: { ...settings, data: source, limit: options.limit, subjects: options.subjects }, model: sides.model.info, reference: sides.reference?.info, items: items.length, metrics, itemResults: model, referenceItemResults: reference };
}
