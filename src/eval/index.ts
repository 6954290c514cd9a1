// The typed evaluation API: evaluate() runs a task (gsm8k, math500, mmlu, ppl, kl) on a GGUF,
// optionally against a reference with paired statistics; the scoring helpers are exported for reuse.
export { evaluate, evalTasks, drawGsm8kExemplars, mmluPrediction } from './evaluate.ts';
export { klDivergence } from './divergence.ts';
export type { EvalTask, EvaluateOptions, EvalResult, EvalProgress, Metric, ModelRunInfo, GenerationRecord, MmluRecord, PerplexityRecord, KlRecord } from './evaluate.ts';
export { formatMarkdown } from '../report/eval-markdown.ts';
export { extractStrictAnswer, extractFlexibleAnswer, normalizeNumber, scoreGsm8kOutput, gsm8kGoldAnswer, truncateAtStop } from './gsm8k-answer.ts';
export type { Gsm8kScore } from './gsm8k-answer.ts';
export { extractBoxed, extractMathAnswer, normalizeLatexAnswer, latexAnswersEquivalent, latexNumericValue } from './latex-answer.ts';
export { wilsonInterval, accuracyEstimate, mcnemarExactP, pairedAccuracy, meanEstimate, pairedMean } from './confidence.ts';
export type { Interval, AccuracyEstimate, PairedAccuracyComparison, MeanEstimate } from './confidence.ts';
export { defaultDataDir, loadGsm8k, loadMath500, loadMmlu, mmluMathSubjects } from './data.ts';
export type { Gsm8kItem, Math500Item, MmluItem } from './data.ts';
export { gsm8kPrompt, gsm8kChainOfThought, mathPrompt, mathExemplars, mmluPrompt } from './prompts.ts';
export { EvalModel, LlamaRuntime, sequenceSlot, generateGreedy, continuationLogLikelihoods, nextTokenDistributions, tokenNegativeLogLikelihoods } from './runtime.ts';
export type { RuntimeOptions } from './runtime.ts';
export { NativeRuntime, openFixtureRuntime } from './native-runtime.ts';
export type { NativeRuntimeOptions } from './native-runtime.ts';
export type { EvalRuntime, EvalSlot, GenerateOptions, Generation, ContinuationScores, LogitRows, TokenId } from './runtime-types.ts';
export { resolveCacheDir, fileSha256 } from './cache.ts';
