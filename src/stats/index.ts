export * from './types.ts';
export { saveStats, loadStats, modelIdentity, type LoadedStats, type SaveStatsOptions } from './file.ts';
export { mergeStats, mergeInto, emptyStats } from './merge.ts';
export { StatsModel, collectStats, HEAD_INPUT_NODE, type SeenMatmul, type CollectOptions, type CollectProgress, type CollectResult, type ModelOptions } from './collect.ts';
export { readSamples, drawSamples, parseCsv, MMLU_MATH_SUBJECTS, type Sample, type ReadDataOptions } from './data.ts';
