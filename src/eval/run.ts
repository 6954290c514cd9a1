// What every task shares: the per-item run with its result cache and progress (runItems, over any
// ItemRuntime: an EvalRuntime's slots through onRuntime, or kl's native model pair), both sides of a --vs run, the
// metrics with confidence intervals, and small helpers for data paths and item groups.
import path from 'node:path';
import { existsSync } from 'node:fs';
import { MathneuroError } from '../errors.ts';
import { screenTexts, type NamedText } from '../gguf/encodable.ts';
import { readGgufSync } from '../gguf/reader.ts';
import { fileSha256, ResultCache, settingsHash } from './cache.ts';
import { accuracyEstimate, meanEstimate, pairedAccuracy, pairedMean } from './confidence.ts';
import { defaultDataDir } from './data.ts';
import { EvalModel, LlamaRuntime, type RuntimeOptions } from './runtime.ts';
import type { EvalRuntime, EvalSlot } from './runtime-types.ts';
import type { EvalProgress, EvaluateOptions, Metric, ModelRunInfo } from './types.ts';

/** One side of a run: the options, the cache directory, and which model it is. */
export interface RunContext {
  options: EvaluateOptions;
  cacheDir: string;
  side: 'model' | 'reference';
}

/** Seed of the exemplar draw (gsm8k) and the prompt sample (kl). */
export const defaultSeed = 1234;

/** --data, else the task's file in the shared data directory (EUSAGE when the task has none). */
export function dataPath(options: EvaluateOptions, fallback: string | undefined, what: string): string {
  if (options.data) return path.resolve(options.data);
  if (!fallback) throw new MathneuroError('EUSAGE', `${options.task} needs --data <${what}>`);
  return path.join(defaultDataDir(), fallback);
}

/** One item's result and the tokens it took (for the rate in the progress reports). */
export interface ItemOutput<R> { result: R; tokens: number }

/** A loaded model (or pair) that evaluates items: one place per sequence, jobs beyond them wait. */
export interface ItemRuntime<J, R> {
  /** Calls `use` once a place is free, with the function that evaluates one item there. */
  withSlot(use: (evaluateItem: (job: J) => Promise<ItemOutput<R>>) => Promise<void>): Promise<void>;
  dispose(): Promise<void>;
}

/** Run items on a runtime opened for the ones not cached (concurrently, as it has places), with caching and progress. */
export async function runItems<J extends { id: string }, R>(
  ctx: RunContext, modelKey: string, task: string, settings: Record<string, unknown>, jobs: readonly J[],
  open: (missing: readonly J[]) => Promise<ItemRuntime<J, R>>,
): Promise<{ results: Map<string, R>; info: Omit<ModelRunInfo, 'path' | 'sha256'> }> {
  const started = Date.now();
  const cache = new ResultCache<R>(ctx.cacheDir, modelKey, task, settingsHash(settings), ctx.options.cache !== false);
  const results = new Map<string, R>();
  const missing: J[] = [];
  for (const job of jobs) {
    const hit = cache.get(job.id);
    if (hit !== undefined) results.set(job.id, hit); else missing.push(job);
  }
  const cached = results.size;
  const report = (phase: EvalProgress['phase'], done: number, tokens: number, runStart: number) => {
    const elapsedMs = Date.now() - started;
    const runMs = Date.now() - runStart;
    const fresh = done - cached;
    const etaMs = fresh > 0 ? (runMs / fresh) * (jobs.length - done) : NaN;
    ctx.options.onProgress?.({ side: ctx.side, phase, done, total: jobs.length, cached, elapsedMs, etaMs, tokensPerSecond: runMs > 0 ? tokens / (runMs / 1000) : 0 });
  };
  let tokens = 0;
  let runMs = 0;
  if (missing.length) {
    report('load', cached, 0, Date.now());
    const runtime = await open(missing);
    try {
      const runStart = Date.now();
      let done = cached;
      report('run', done, 0, runStart);
      let failure: unknown;
      await Promise.all(missing.map((job) => runtime.withSlot(async (evaluateItem) => {
        if (failure) return;
        if (ctx.options.signal?.aborted) { failure = new MathneuroError('EABORT', 'evaluation cancelled'); return; }
        try {
          const out = await evaluateItem(job);
          cache.set(job.id, out.result);
          results.set(job.id, out.result);
          tokens += out.tokens;
          done++;
          report('run', done, tokens, runStart);
        } catch (e) { failure ??= e; }
      })));
      if (failure) throw failure;
      runMs = Date.now() - runStart;
    } finally {
      await runtime.dispose();
    }
  }
  report('done', jobs.length, tokens, Date.now() - runMs);
  return { results, info: { evaluated: missing.length, cached, elapsedMs: Date.now() - started, generatedTokens: tokens, tokensPerSecond: runMs > 0 ? tokens / (runMs / 1000) : undefined } };
}

/** Items on an evaluation runtime (runtime-types.ts): `open` it for the missing items, `work` evaluates one job on a slot. */
export function onRuntime<J, R, T extends EvalRuntime>(
  open: (missing: readonly J[]) => Promise<T>,
  work: (runtime: T, slot: EvalSlot, job: J) => Promise<ItemOutput<R>>,
): (missing: readonly J[]) => Promise<ItemRuntime<J, R>> {
  return async (missing) => {
    const runtime = await open(missing);
    return {
      withSlot: (use) => runtime.withSlot((slot) => use((job) => work(runtime, slot, job))),
      dispose: () => runtime.close(),
    };
  };
}

/** node-llama-cpp's runtime for `modelPath`: a context shaped by `prepare` for the missing items, one slot per sequence. */
export function openLlamaRuntime<J>(
  modelPath: string, options: RuntimeOptions,
  prepare: (runtime: LlamaRuntime, missing: readonly J[]) => Promise<{ contextSize: number; parallel: number }>,
): (missing: readonly J[]) => Promise<LlamaRuntime> {
  return async (missing) => {
    const model = await EvalModel.load(modelPath, options);
    const runtime = new LlamaRuntime(model);
    try {
      await model.open(await prepare(runtime, missing));
    } catch (e) {
      await model.dispose();
      throw e;
    }
    return runtime;
  };
}

/** Contexts are sized to what the prompts need, rounded up to 256 tokens. */
export function neededContext(promptLengths: number[], extra: number, override?: number): number {
  if (override) return override;
  return Math.ceil((Math.max(1, ...promptLengths) + extra + 1) / 256) * 256;
}

/** An accuracy with its Wilson interval; with the reference's answers, McNemar's paired difference. */
export function accuracyMetric(name: string, group: string, model: boolean[], reference?: boolean[]): Metric {
  const correct = model.filter(Boolean).length;
  const est = accuracyEstimate(correct, model.length);
  const metric: Metric = { name, group, kind: 'accuracy', value: est.accuracy, ci95: est.ci95, count: model.length, correct };
  if (reference) {
    const refCorrect = reference.filter(Boolean).length;
    const ref = accuracyEstimate(refCorrect, reference.length);
    metric.reference = { value: ref.accuracy, ci95: ref.ci95, correct: refCorrect };
    const paired = pairedAccuracy(model, reference);
    metric.difference = { value: paired.difference, ci95: paired.ci95, pValue: paired.pValue, test: 'mcnemar-exact', onlyModel: paired.onlyModel, onlyReference: paired.onlyReference };
  }
  return metric;
}

/** A mean with its interval; with the reference's values, the paired difference (paired z). */
export function meanMetric(name: string, group: string, kind: 'mean', model: number[], reference?: number[]): Metric {
  const est = meanEstimate(model);
  const metric: Metric = { name, group, kind, value: est.mean, ci95: est.ci95, count: est.count };
  if (reference) {
    const ref = meanEstimate(reference);
    metric.reference = { value: ref.mean, ci95: ref.ci95 };
    const paired = pairedMean(model, reference);
    metric.difference = { value: paired.mean, ci95: paired.ci95, pValue: paired.pValue, test: 'paired-z' };
  }
  return metric;
}

/** Group item indices by a key, in first-seen order sorted by key. */
export function groupBy<T>(items: readonly T[], key: (item: T) => string): Map<string, number[]> {
  const groups = new Map<string, number[]>();
  items.forEach((item, i) => { const k = key(item); if (!groups.has(k)) groups.set(k, []); groups.get(k)!.push(i); });
  return new Map([...groups].sort(([a], [b]) => a.localeCompare(b, 'en', { numeric: true })));
}

/** The first `limit` items (all without one). */
export function limitItems<T>(items: T[], limit: number | undefined): T[] {
  return limit !== undefined ? items.slice(0, limit) : items;
}

/** The model's sha256 (the cache key), memoised in the cache directory unless caching is off. */
export async function hashModel(ctx: RunContext, modelPath: string): Promise<string> {
  if (ctx.options.identify === false) return '';   // not hashed (cache: false; evaluate() checks)
  ctx.options.onProgress?.({ side: ctx.side, phase: 'hash', done: 0, total: 0, cached: 0, elapsedMs: 0, etaMs: NaN, tokensPerSecond: 0 });
  return fileSha256(modelPath, ctx.options.cache === false ? undefined : ctx.cacheDir);
}

export interface SideRun<R> { info: ModelRunInfo; results: Map<string, R> }

/** Run a per-item task on the model and (with vs) the reference, one after the other (one model in memory at a time). */
export async function bothSides<R>(options: EvaluateOptions, cacheDir: string, run: (ctx: RunContext, modelPath: string, modelKey: string) => Promise<{ results: Map<string, R>; info: Omit<ModelRunInfo, 'path' | 'sha256'> }>): Promise<{ model: SideRun<R>; reference?: SideRun<R> }> {
  const sides: Array<['model' | 'reference', string]> = [['model', options.model]];
  if (options.vs) sides.push(['reference', options.vs]);
  const out: { model?: SideRun<R>; reference?: SideRun<R> } = {};
  for (const [side, modelPath] of sides) {
    const ctx: RunContext = { options, cacheDir, side };
    const sha256 = await hashModel(ctx, modelPath);
    const { results, info } = await run(ctx, modelPath, sha256);
    out[side] = { results, info: { path: modelPath, sha256, ...info } };
  }
  return out as { model: SideRun<R>; reference?: SideRun<R> };
}

/** Texts against the vocabularies of both models, before anything is loaded (EDATA naming the samples, or skipped). */
export function screenForModels(options: EvaluateOptions, named: NamedText[], what: string): NamedText[] {
  let kept = named;
  for (const file of [options.vs, options.model]) {
    if (!file || !existsSync(file)) continue;
    const { keep } = screenTexts(readGgufSync(file), kept, { skip: options.skipUnencodable, what });
    kept = keep.map((i) => kept[i]!);
  }
  return kept;
}
