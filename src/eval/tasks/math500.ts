// math500: MATH-500, 4-shot with \boxed{} answers, LaTeX-normalised match, per subject and level.
import { loadMath500 } from '../data.ts';
import { extractMathAnswer, latexAnswersEquivalent } from '../latex-answer.ts';
import { mathChat, mathPrompt } from '../prompts.ts';
import { accuracyMetric, bothSides, dataPath, groupBy, limitItems } from '../run.ts';
import type { EvalResult, EvaluateOptions, Metric } from '../types.ts';
import { runGenerations, type GenerationJob, type GenerationRecord } from './generation.ts';

export async function evaluateMath500(options: EvaluateOptions, cacheDir: string): Promise<EvalResult> {
  const file = dataPath(options, 'math500_test.jsonl', 'math500_test.jsonl');
  const items = limitItems(loadMath500(file), options.limit);
  const shots = options.shots ?? 4;
  const maxTokens = options.maxTokens ?? 512;
  const chat = options.chat ?? false;
  const stopStrings = chat ? [] : ['Problem:'];
  const settings = { format: 'math-boxed-v1', shots, maxTokens, chat, stopStrings };
  const jobs: GenerationJob[] = items.map((item) => ({ id: item.id, prompt: chat ? mathChat(item.problem, shots) : mathPrompt(item.problem, shots) }));
  const sides = await bothSides<GenerationRecord>(options, cacheDir, (ctx, p, key) => runGenerations(ctx, p, key, 'math500', settings, jobs, stopStrings, maxTokens));
  const score = (results: Map<string, GenerationRecord>) => items.map((item) => {
    const record = results.get(item.id)!;
    const predicted = extractMathAnswer(record.output);
    return { id: item.id, index: item.index, subject: item.subject, level: item.level, gold: item.answer, ...record, predicted, correct: latexAnswersEquivalent(predicted, item.answer) };
  });
  const model = score(sides.model.results);
  const reference = sides.reference ? score(sides.reference.results) : undefined;
  const metrics: Metric[] = [accuracyMetric('accuracy', 'main', model.map((r) => r.correct), reference?.map((r) => r.correct))];
  for (const [group, key] of [['subject', (i: typeof items[number]) => i.subject], ['level', (i: typeof items[number]) => String(i.level)]] as const) {
    for (const [name, idx] of groupBy(items, key)) {
      metrics.push(accuracyMetric(name, group, idx.map((i) => model[i]!.correct), reference && idx.map((i) => reference[i]!.correct)));
    }
  }
  return { task: 'math500', settings: { ...settings, data: file, limit: options.limit }, model: sides.model.info, reference: sides.reference?.info, items: items.length, metrics, itemResults: model, referenceItemResults: reference };
}
