// gsm8k: 8-shot chain of thought, greedy, strict and flexible exact match; exemplars are a seeded
// draw from the train split, never the test file.
import path from 'node:path';
import { MathneuroError } from '../../errors.ts';
import { defaultDataDir, loadGsm8k, sampleIndices, type Gsm8kItem } from '../data.ts';
import { gsm8kGoldAnswer, scoreGsm8kOutput } from '../gsm8k-answer.ts';
import { gsm8kChat, gsm8kPrompt } from '../prompts.ts';
import { accuracyMetric, bothSides, dataPath, defaultSeed, limitItems } from '../run.ts';
import type { EvalResult, EvaluateOptions } from '../types.ts';
import { runGenerations, type GenerationJob, type GenerationRecord } from './generation.ts';

/** The 8 (or `shots`) GSM8K exemplars: a seeded draw from the train file, never the test file. */
export function drawGsm8kExemplars(trainFile: string, shots: number, seed: number, testQuestions?: ReadonlySet<string>): Gsm8kItem[] {
  const train = loadGsm8k(trainFile).filter((e) => !testQuestions?.has(e.question.trim()));
  if (train.length < shots) throw new MathneuroError('EDATA', `${trainFile} has ${train.length} usable examples, fewer than ${shots} shots`);
  return sampleIndices(train.length, shots, seed).map((i) => train[i]!);
}

export async function evaluateGsm8k(options: EvaluateOptions, cacheDir: string): Promise<EvalResult> {
  const testFile = dataPath(options, 'gsm8k_test.jsonl', 'gsm8k test.jsonl');
  const trainFile = options.train ? path.resolve(options.train) : path.join(defaultDataDir(), 'gsm8k_train.jsonl');
  if (path.resolve(trainFile) === path.resolve(testFile)) throw new MathneuroError('EUSAGE', '--train must not be the test file: exemplars come from the train split');
  const all = loadGsm8k(testFile);
  const items = limitItems(all, options.limit);
  const shots = options.shots ?? 8;
  const seed = options.seed ?? defaultSeed;
  const exemplars = drawGsm8kExemplars(trainFile, shots, seed, new Set(all.map((i) => i.question.trim())));
  const maxTokens = options.maxTokens ?? 256;
  const chat = options.chat ?? false;
  const stopStrings = chat ? [] : ['Q:'];
  const settings = { format: 'gsm8k-cot-v1', exemplars: exemplars.map((e) => e.id), maxTokens, chat, stopStrings };
  const jobs: GenerationJob[] = items.map((item) => ({ id: item.id, prompt: chat ? gsm8kChat(exemplars, item.question) : gsm8kPrompt(exemplars, item.question) }));
  const sides = await bothSides<GenerationRecord>(options, cacheDir, (ctx, p, key) => runGenerations(ctx, p, key, 'gsm8k', settings, jobs, stopStrings, maxTokens));
  const score = (results: Map<string, GenerationRecord>) => items.map((item) => {
    const gold = gsm8kGoldAnswer(item.answer);
    const record = results.get(item.id)!;
    return { id: item.id, index: item.index, gold, ...record, ...scoreGsm8kOutput(record.output, gold) };
  });
  const model = score(sides.model.results);
  const reference = sides.reference ? score(sides.reference.results) : undefined;
  return {
    task: 'gsm8k', settings: { ...settings, data: testFile, train: trainFile, seed, shots, limit: options.limit },
    model: sides.model.info, reference: sides.reference?.info, items: items.length,
    metrics: [
      accuracyMetric('strict', 'main', model.map((r) => r.strictCorrect), reference?.map((r) => r.strictCorrect)),
      accuracyMetric('flexible', 'main', model.map((r) => r.flexibleCorrect), reference?.map((r) => r.flexibleCorrect)),
    ],
    itemResults: model, referenceItemResults: reference,
  };
}
