// `boost` and `ablate` in one call: calibration statistics (cached per model), selection and patch
// (scale or prune), a short before/after check (KL on general text, optionally a small GSM8K-style
// sample), and a Modelfile for Ollama. Every stage reports progress.
import type { RequantizeStrategy } from './core/codec.ts';
import { hashMemoPath } from './core/file-identity.ts';
import { createHash } from 'node:crypto';
import { closeSync, existsSync, fstatSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { builtinDatasetName, builtinSamples, CALIBRATION_VERSION, type BuiltinSetName } from './calibration/index.ts';
import { MathneuroError } from './errors.ts';
import { checkOutput, checkPatchInput, checkReadable } from './preflight.ts';
import { screenTexts, type NamedText } from './gguf/encodable.ts';
import { evaluate, type EvalResult } from './eval/index.ts';
import { readGgufSync, type GgufInfo } from './gguf/reader.ts';
import { openModelSync, splitCountOfName, splitPath } from './gguf/model.ts';
import { writeModelfile, type ModelfileResult } from './modelfile.ts';
import { assertOutsideOllamaStore, isOllamaSpec, ollamaOutputBase, resolveOllamaModel, type OllamaModel } from './ollama.ts';
import { DEFAULT_SCALE, patchModel, type PatchProgress, type PatchResult } from './patch/patch.ts';
// report/overlap.ts, not report/index.ts: report/build-report.ts imports this module
import { overlapPoint, selectionOverlap, type OverlapSubset } from './report/overlap.ts';
import type { OverlapPoint } from './report/types.ts';
import type { SelectionMethod } from './select/select.ts';
import { collectStats, drawSamples, loadStats, modelIdentity, readSamples, saveStats, StatsModel, MMLU_MATH_SUBJECTS, type LoadedStats, type ModelOptions } from './stats/index.ts';

/** Per-matrix K of boost: the paper's single-sample setting (10%); the math-specific set is then ~1-2% of the weights. */
export const DEFAULT_BOOST_TOP_K = 0.1;
/** Per-matrix K of ablate: the paper's pruning figure (15%). */
export const DEFAULT_ABLATE_TOP_K = 0.15;
/** Factor of boost: the paper's value for 1-3B models, the patch's own default (src/patch/patch.ts). */
export const DEFAULT_BOOST_SCALE = DEFAULT_SCALE;
/** Calibration samples per set: one sample already gives most of the effect; 100 gives a stable set (95%+ overlap in the paper) at CPU cost. */
export const DEFAULT_SAMPLES = 100;
/** Prompts of the KL check and their length in tokens. */
export const DEFAULT_KL_PROMPTS = 8;
export const DEFAULT_KL_TOKENS = 128;

export type Intervention = 'scale' | 'prune';

/** Where the calibration texts come from: a built-in set (default) or a user's file (.jsonl, .csv, .txt or a folder). */
export type CalibrationChoice = { builtin: BuiltinSetName; seed?: number; start?: number } | { file: string; excludeMathSubjects?: boolean; start?: number };
/* `start`: skip that many samples (of the built-in sequence, or of the file's seeded shuffle): disjoint subsets use disjoint ranges */

export type PipelineStage = 'resolve' | 'stats-math' | 'stats-general' | 'patch' | 'check-kl' | 'check-gsm8k' | 'modelfile';

export interface PipelineProgress {
  stage: PipelineStage;
  /** units of the stage done and in total (samples, bytes, items) */
  done: number;
  total: number;
  /** free-form detail: tokens/s, the tensor, cache hit */
  detail?: string;
}

export interface StatsCacheOptions {
  /** statistics cache folder (default $MATHNEURO_CACHE_DIR/stats, else ~/.cache/mathneuro/stats) */
  cacheDir?: string;
  /** false: always collect and write nothing to the cache (default true) */
  cache?: boolean;
}

export interface CalibrationOptions extends StatsCacheOptions {
  /** samples per set, drawn at random from files, the first N of a built-in set (default 100) */
  samples?: number;
  /** seed of the draw from files and of the built-in sets (default 0) */
  seed?: number;
  /** context size for collection (default: collector's, min(train ctx, 4096)) */
  nCtx?: number;
  /** CPU threads (default: all) */
  nThreads?: number;
  /** logical batch size (default 512) */
  nBatch?: number;
  /** layers offloaded to a GPU (default 0; -1 all) */
  nGpuLayers?: number;
  onProgress?: (p: PipelineProgress) => void;
  signal?: AbortSignal;
  /** leave out calibration (and KL check) texts with characters the model's vocabulary cannot encode, instead of an EDATA error naming them */
  skipUnencodable?: boolean;
  /** false: skip the semantic model checks (the GGUF validator still runs): you take the risk of an abort */
  modelChecks?: boolean;
  /** the model opened once for every set that misses the cache (boost, tune and the overlap study collect several); default: each set opens it */
  statsModel?: SharedStatsModel;
}

/**
 * The model opened for statistics on the first set that misses the cache and kept for the sets
 * after it: loading (with llama.cpp's weight repacking for the CPU) costs about what a short set's
 * forward passes do, and boost collects two sets. Every pass starts from an empty KV cache, so a
 * set's statistics do not depend on what ran before it (test/pipeline/shared-stats-model.test.ts).
 */
export class SharedStatsModel {
  private opening?: Promise<StatsModel>;
  constructor(readonly path: string, private readonly options: ModelOptions = {}) {}

  get(): Promise<StatsModel> {
    if (!this.opening) {
      this.opening = StatsModel.open(this.path, this.options);
      this.opening.catch(() => { this.opening = undefined; });   // a failed open is tried again by the next set, and reported by this one
    }
    return this.opening;
  }

  /** Frees the model if it was opened. */
  async dispose(): Promise<void> {
    const opening = this.opening;
    this.opening = undefined;
    const model = await opening?.catch(() => undefined);
    model?.dispose();
  }
}

/** Runs `use` with a SharedStatsModel of these options, freed afterwards. */
export async function withSharedStatsModel<T>(modelPath: string, options: CalibrationOptions, use: (shared: SharedStatsModel) => Promise<T>): Promise<T> {
  const shared = new SharedStatsModel(modelPath, { nCtx: options.nCtx, nThreads: options.nThreads, nBatch: options.nBatch, nGpuLayers: options.nGpuLayers, modelChecks: options.modelChecks });
  try {
    return await use(shared);
  } finally {
    await shared.dispose();
  }
}

export interface CalibratedStats {
  stats: LoadedStats;
  /** the cached statistics file (an imatrix GGUF: `mathneuro report` and llama-quantize read it) */
  path: string;
  cached: boolean;
  dataset: string;
  samples: number;
  tokens: number;
  elapsedMs: number;
  /** texts left out because the vocabulary cannot encode them (skipUnencodable) */
  unencodable: number;
}

export function statsCacheDir(option?: string, env: NodeJS.ProcessEnv = process.env): string {
  if (option) return path.resolve(option);
  if (env.MATHNEURO_CACHE_DIR) return path.join(path.resolve(env.MATHNEURO_CACHE_DIR), 'stats');
  return path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'mathneuro', 'stats');
}

/**
 * A model's cache key: sha256 of its header (metadata, tensor infos) plus 64 KiB at 32 places of
 * its tensor data, so a file with the same header and other weights gets other statistics,
 * without reading gigabytes on every run.
 */
export function modelFingerprint(info: GgufInfo): string {
  const hash = createHash('sha256').update(modelIdentity(info).headerSha256).update(String(info.fileSize));
  // a split model (src/gguf/model.ts): the same samples in every shard
  for (const shard of (info as GgufInfo & { shards?: GgufInfo[] }).shards ?? [info]) {
    const fd = openSync(shard.path, 'r');
    try {
      const size = fstatSync(fd).size;
      const chunk = Buffer.alloc(64 * 1024);
      const span = Math.max(0, size - shard.dataOffset - chunk.length);
      for (let i = 0; i < 32; i++) {
        const at = shard.dataOffset + Math.floor((span * i) / 31);
        const n = readSync(fd, chunk, 0, chunk.length, at);
        hash.update(chunk.subarray(0, n));
      }
    } finally {
      closeSync(fd);
    }
  }
  return hash.digest('hex');
}

function textsOf(which: 'math' | 'general', choice: CalibrationChoice, samples: number, seed: number): { texts: string[]; sources: string[]; dataset: string; key: Record<string, unknown> } {
  const start = choice.start ?? 0;
  if ('builtin' in choice) {
    const setSeed = choice.seed ?? seed;
    const chosen = builtinSamples(choice.builtin, { count: samples, seed: setSeed, start });
    return { texts: chosen.map((s) => s.text), sources: chosen.map((s) => s.source), dataset: `${builtinDatasetName(choice.builtin, { seed: setSeed })}[${start}:${start + samples}]`, key: { builtin: choice.builtin, version: CALIBRATION_VERSION, seed: setSeed, samples, start } };
  }
  const all = readSamples(choice.file, { excludeSubjects: choice.excludeMathSubjects ? MMLU_MATH_SUBJECTS : [] });
  if (start >= all.length) throw new MathneuroError('EUSAGE', `${choice.file} has ${all.length} samples: none left after the first ${start}`);
  const n = Math.min(samples, all.length - start);
  const chosen = drawSamples(all, undefined, seed).slice(start, start + n);
  const texts = chosen.map((s) => s.text);
  const digest = createHash('sha256').update(texts.join('\u0000')).digest('hex');
  return { texts, sources: chosen.map((s) => s.source), dataset: `${path.basename(choice.file)}[${n} of ${all.length}, seed ${seed}${start ? `, from ${start}` : ''}]`, key: { which, texts: digest, samples: n } };
}

/** The encodability screen of a calibration set alone (throws EDATA naming the samples): run on both sets before any forward pass. */
export function screenCalibration(model: GgufInfo, which: 'math' | 'general', choice: CalibrationChoice, options: Pick<CalibrationOptions, 'samples' | 'seed' | 'skipUnencodable'> = {}): void {
  const all = textsOf(which, choice, options.samples ?? DEFAULT_SAMPLES, options.seed ?? 0);
  const builtin = 'builtin' in choice ? { set: choice.builtin, option: `--${which}` } : undefined;
  screenTexts(model, all.texts.map((text, i): NamedText => ({ text, source: all.sources[i] })), { skip: options.skipUnencodable, what: `${which} calibration samples`, builtin });
}

/** Statistics of a model over a calibration set: from the cache when this model and these texts were seen before. */
export async function calibrationStats(model: GgufInfo, which: 'math' | 'general', choice: CalibrationChoice, options: CalibrationOptions = {}): Promise<CalibratedStats> {
  const samples = options.samples ?? DEFAULT_SAMPLES;
  if (!Number.isInteger(samples) || samples < 1) throw new MathneuroError('EUSAGE', `samples must be a positive integer, got ${samples}`);
  const seed = options.seed ?? 0;
  const stage: PipelineStage = which === 'math' ? 'stats-math' : 'stats-general';
  const all = textsOf(which, choice, samples, seed);
  const { dataset, key } = all;
  // every text against the vocabulary before any forward pass (and before the cache: a skipped text changes the set)
  const builtin = 'builtin' in choice ? { set: choice.builtin, option: `--${which}` } : undefined;
  const screened = screenTexts(model, all.texts.map((text, i): NamedText => ({ text, source: all.sources[i] })), { skip: options.skipUnencodable, what: `${which} calibration samples`, builtin });
  const texts = screened.keep.map((i) => all.texts[i]);
  const keyHash = createHash('sha256').update(JSON.stringify({ ...key, nCtx: options.nCtx ?? null, format: 1, ...(screened.skipped.length ? { skipped: screened.skipped.map((x) => x.index) } : {}) })).digest('hex').slice(0, 20);
  const dir = path.join(statsCacheDir(options.cacheDir), modelFingerprint(model).slice(0, 32));
  const file = path.join(dir, `${which}-${keyHash}.stats.gguf`);
  const useCache = options.cache !== false;
  if (useCache && existsSync(file)) {
    try {
      const stats = await loadStats(file);
      options.onProgress?.({ stage, done: texts.length, total: texts.length, detail: 'cached' });
      return { stats, path: file, cached: true, dataset, samples: stats.samples, tokens: stats.tokens, elapsedMs: 0, unencodable: screened.skipped.length };
    } catch {
      rmSync(file, { force: true }); // a damaged cache entry is collected again
    }
  }
  const collectOptions = {
    dataset, nCtx: options.nCtx, nThreads: options.nThreads, nBatch: options.nBatch, nGpuLayers: options.nGpuLayers, signal: options.signal, modelChecks: options.modelChecks,
    onProgress: (p: { samplesDone: number; samplesTotal: number; tokensPerSecond: number }) => options.onProgress?.({ stage, done: p.samplesDone, total: p.samplesTotal, detail: `${p.tokensPerSecond.toFixed(0)} tok/s` }),
  };
  const shared = options.statsModel;
  if (shared && path.resolve(shared.path) !== path.resolve(model.path)) throw new MathneuroError('EUSAGE', `the shared statistics model is ${shared.path}, not ${model.path}`);
  const r = shared ? await (await shared.get()).collect(texts, collectOptions) : await collectStats(model.path, texts, collectOptions);
  // always use the statistics as saved (F32), so a cache hit selects exactly what a miss did
  const target = useCache ? file : path.join(mkdtempSync(path.join(os.tmpdir(), 'mathneuro-stats-')), `${which}.stats.gguf`);
  mkdirSync(path.dirname(target), { recursive: true });
  await saveStats(r.stats, target);   // a temporary renamed into place (src/gguf/writer.ts)
  if (useCache) writeFileSync(file.replace(/\.stats\.gguf$/, '.json'), JSON.stringify({ model: path.basename(model.path), which, dataset, key, createdAt: new Date().toISOString() }, null, 2));
  const stats = await loadStats(target);
  return { stats, path: target, cached: false, dataset, samples: r.stats.samples, tokens: r.stats.tokens, elapsedMs: r.elapsedMs, unencodable: screened.skipped.length };
}

/** A model argument: a GGUF path, or ollama:name[:tag] resolved to its blob in the local store. */
export interface ResolvedModel {
  path: string;
  ollama?: OllamaModel;
  /** the argument as given */
  spec: string;
}

export function resolveModel(spec: string, env: NodeJS.ProcessEnv = process.env): ResolvedModel {
  if (isOllamaSpec(spec)) {
    const ollama = resolveOllamaModel(spec, { env });
    return { path: ollama.modelPath, ollama, spec };
  }
  if (!existsSync(spec)) throw new MathneuroError('ENOENT', `no such model: ${spec}`);
  return { path: path.resolve(spec), spec };
}

export interface CheckOptions {
  /** KL(source || patched) over built-in general prompts (default true) */
  kl?: boolean;
  /** prompts of the KL check (default 16) */
  klPrompts?: number;
  /** also a GSM8K-style accuracy on this many built-in word problems, both models (default 0: off) */
  gsm8k?: number;
  /** GSM8K-format test file instead of the built-in problems */
  gsm8kData?: string;
}

export interface BoostOptions extends CalibrationOptions {
  /** a GGUF path or ollama:name[:tag] */
  model: string;
  /** output GGUF (default: <model>.boosted.gguf beside a file model; ./<name>-<tag>.boosted.gguf for Ollama) */
  out?: string;
  /** 'scale' (boost, default) or 'prune' (ablate) */
  intervention?: Intervention;
  /** per-matrix K (default 0.1 for scale, 0.15 for prune) */
  topK?: number;
  /** factor for scale (default 1.1) */
  scale?: number;
  /** default 'mathneuro' */
  method?: SelectionMethod;
  /** calibration sets (default the built-in math and general sets) */
  math?: CalibrationChoice;
  general?: CalibrationChoice;
  /** the before/after check; false skips it */
  check?: CheckOptions | false;
  /** write an Ollama Modelfile next to the output (default false) */
  modelfile?: boolean;
  /** overwrite the output (and Modelfile) */
  force?: boolean;
  /** requantization of quantized blocks that hold selected weights (default 'auto') */
  strategy?: RequantizeStrategy;
  env?: NodeJS.ProcessEnv;
}

export interface CheckResult {
  kl?: { prompts: number; tokens: number; meanKl: number; klP99: number; sameTopToken: number };
  gsm8k?: { items: number; source: number; patched: number; difference: number; pValue: number };
}

export interface BoostResult {
  model: { spec: string; path: string; ollama?: string };
  output: string;
  intervention: Intervention;
  method: SelectionMethod;
  topK: number;
  scale: number;
  statistics: { math: Omit<CalibratedStats, 'stats'>; general: Omit<CalibratedStats, 'stats'> };
  patch: Omit<PatchResult, 'tensors'>;
  check?: CheckResult;
  modelfile?: { path: string; templateFrom: ModelfileResult['templateFrom'] };
  elapsedMs: number;
}

function defaultOutput(model: ResolvedModel, intervention: Intervention): string {
  const suffix = intervention === 'scale' ? 'boosted' : 'ablated';
  if (model.ollama) return path.resolve(`${ollamaOutputBase(model.ollama.ref)}.${suffix}.gguf`);
  // a split model is written as shards again, named as llama.cpp names them
  const named = splitCountOfName(model.path);
  if (named && named.index === 0 && named.count > 1) return splitPath(`${named.prefix}.${suffix}`, 0, named.count);
  return model.path.replace(/\.gguf$/i, '') + `.${suffix}.gguf`;
}

function metric(r: EvalResult, name: string) {
  return r.metrics.find((m) => m.name === name);
}

/** Built-in texts for the checks, from a range no calibration run of a sane size uses. */
function checkFile(dir: string, name: string, rows: unknown[]): string {
  const file = path.join(dir, name);
  writeFileSync(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return file;
}

/** The KL check's built-in prompts that the model's vocabulary encodes (an EDATA error without skipUnencodable). */
function klCheckPrompts(model: GgufInfo, check: CheckOptions, options: { seed?: number; skipUnencodable?: boolean }) {
  const prompts = builtinSamples('general', { count: check.klPrompts ?? DEFAULT_KL_PROMPTS, seed: 1_000_000 + (options.seed ?? 0) });
  const { keep } = screenTexts(model, prompts, { skip: options.skipUnencodable, what: 'KL check prompts', builtin: { set: 'general (KL check)', option: '--no-check, then `mathneuro eval <out> --vs <model> --task kl --data <your text>`' } });
  return { prompts, keep };
}

/** KL and (when asked) GSM8K-style accuracy of the patched model against its source. */
export async function checkPatched(source: string, patched: string, check: CheckOptions, options: Pick<CalibrationOptions, 'onProgress' | 'signal' | 'nThreads' | 'nBatch' | 'nGpuLayers' | 'skipUnencodable' | 'modelChecks'> & { seed?: number } = {}): Promise<CheckResult> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mathneuro-check-'));
  const out: CheckResult = {};
  const seed = 1_000_000 + (options.seed ?? 0); // never a calibration seed
  try {
    if (check.kl !== false) {
      const { prompts, keep } = klCheckPrompts(readGgufSync(source), check, options);
      const data = checkFile(dir, 'general.jsonl', keep.map((i) => ({ text: prompts[i].text })));
      const r = await evaluate({
        task: 'kl', model: patched, vs: source, data, limit: keep.length, klTokens: DEFAULT_KL_TOKENS, cache: false, identify: false, signal: options.signal, modelChecks: options.modelChecks,
        threads: options.nThreads, batchSize: options.nBatch, gpuLayers: options.nGpuLayers,
        onProgress: (p) => options.onProgress?.({ stage: 'check-kl', done: p.done, total: p.total }),
      });
      out.kl = {
        prompts: r.items, tokens: metric(r, 'mean KL (nats/token)')?.count ?? 0,
        meanKl: metric(r, 'mean KL (nats/token)')?.value ?? NaN, klP99: metric(r, 'KL p99')?.value ?? NaN,
        sameTopToken: metric(r, 'same top token')?.value ?? NaN,
      };
    }
    if (check.gsm8k && check.gsm8k > 0) {
      const toRow = (s: { math?: { question: string; solution: string } }) => ({ question: s.math!.question, answer: s.math!.solution });
      const data = check.gsm8kData ?? checkFile(dir, 'test.jsonl', builtinSamples('math', { count: check.gsm8k, seed }).map(toRow));
      const train = checkFile(dir, 'train.jsonl', builtinSamples('math', { count: 64, seed: seed + 1 }).map(toRow));
      const r = await evaluate({
        task: 'gsm8k', model: patched, vs: source, data, train, limit: check.gsm8k, cache: false, identify: false, signal: options.signal, modelChecks: options.modelChecks,
        threads: options.nThreads, batchSize: options.nBatch, gpuLayers: options.nGpuLayers,
        onProgress: (p) => options.onProgress?.({ stage: 'check-gsm8k', done: p.done, total: p.total, detail: p.side }),
      });
      const m = r.metrics.find((x) => x.group === 'main' && x.kind === 'accuracy') ?? r.metrics[0];
      out.gsm8k = { items: r.items, patched: m.value, source: m.reference?.value ?? NaN, difference: m.difference?.value ?? NaN, pValue: m.difference?.pValue ?? NaN };
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

/** boost (scale) or ablate (prune) a model end to end. */
export async function boost(options: BoostOptions): Promise<BoostResult> {
  const started = Date.now();
  const intervention = options.intervention ?? 'scale';
  const topK = options.topK ?? (intervention === 'scale' ? DEFAULT_BOOST_TOP_K : DEFAULT_ABLATE_TOP_K);
  const scale = intervention === 'prune' ? 0 : options.scale ?? DEFAULT_BOOST_SCALE;
  if (intervention === 'prune' && options.scale !== undefined) throw new MathneuroError('EUSAGE', 'ablate zeroes the weights: a scale does not apply');
  if (!Number.isFinite(scale) || scale <= 0 && intervention === 'scale') throw new MathneuroError('EUSAGE', `the scale must be a positive number, got ${scale}`);
  const env = options.env ?? process.env;
  options.onProgress?.({ stage: 'resolve', done: 0, total: 1 });
  const model = resolveModel(options.model, env);
  const out = path.resolve(options.out ?? defaultOutput(model, intervention));
  if (out === model.path) throw new MathneuroError('EUSAGE', 'the output would overwrite the model');
  if (model.ollama) assertOutsideOllamaStore(out, model.ollama.modelsDir);
  if (existsSync(out) && !options.force) throw new MathneuroError('EEXIST', `${out} exists (use --force to overwrite)`);
  const info = openModelSync(model.path);
  // what would fail after the statistics fails now, before any forward pass
  checkPatchInput(model.path, { force: options.force });
  checkOutput(out, { inputs: info.shards.map((s) => s.path), force: options.force, bytes: info.totalBytes, env });
  checkReadable([options.math, options.general].map((c) => (c && 'file' in c ? c.file : undefined)), 'calibration file');
  options.onProgress?.({ stage: 'resolve', done: 1, total: 1 });

  const statsOptions = { ...options, cacheDir: options.cacheDir ?? statsCacheDir(undefined, env) };
  // both sets (and the check's prompts) against the vocabulary before the first forward pass
  screenCalibration(info, 'math', options.math ?? { builtin: 'math' }, options);
  screenCalibration(info, 'general', options.general ?? { builtin: 'general' }, options);
  if (options.check !== false && options.check?.kl !== false) klCheckPrompts(info, options.check ?? {}, options);
  // one load of the model for both sets (freed before the patch)
  const { math, general } = await withSharedStatsModel(model.path, statsOptions, async (statsModel) => ({
    math: await calibrationStats(info, 'math', options.math ?? { builtin: 'math' }, { ...statsOptions, statsModel }),
    general: await calibrationStats(info, 'general', options.general ?? { builtin: 'general' }, { ...statsOptions, statsModel }),
  }));
  const patch = await patchModel({
    model: model.path, out, prune: intervention === 'prune', scale: intervention === 'scale' ? scale : undefined,
    method: options.method ?? 'mathneuro', topK, math: { ...math.stats, path: math.path }, general: { ...general.stats, path: general.path },
    force: options.force, signal: options.signal, strategy: options.strategy, threads: options.nThreads,
    // the model's sha256 for the provenance: from the hash memo while the model is unchanged (not with --no-cache)
    hashMemo: options.cache === false ? undefined : hashMemoPath(env),
    onProgress: (p: PatchProgress) => options.onProgress?.({ stage: 'patch', done: p.done, total: p.total, detail: p.phase }),
  });
  const check = options.check === false ? undefined : await checkPatched(model.path, out, options.check ?? {}, { onProgress: options.onProgress, signal: options.signal, seed: options.seed, skipUnencodable: options.skipUnencodable, modelChecks: options.modelChecks, nThreads: options.nThreads, nBatch: options.nBatch, nGpuLayers: options.nGpuLayers });
  let modelfile: BoostResult['modelfile'];
  if (options.modelfile) {
    options.onProgress?.({ stage: 'modelfile', done: 0, total: 1 });
    const what = intervention === 'scale' ? `boost (x${scale})` : 'ablate (prune)';
    const r = writeModelfile({
      modelPath: out, ollama: model.ollama, gguf: info, overwrite: options.force,
      comments: [`mathneuro ${what} of ${model.spec}: ${options.method ?? 'mathneuro'} K=${topK}, ${patch.selectedWeights} weights`, `ollama create <name> -f ${path.basename(out).replace(/\.gguf$/i, '')}.Modelfile`],
    });
    modelfile = { path: r.path, templateFrom: r.templateFrom };
    options.onProgress?.({ stage: 'modelfile', done: 1, total: 1 });
  }
  const strip = ({ stats: _s, ...rest }: CalibratedStats) => rest;
  const { tensors: _t, ...patchSummary } = patch;
  return {
    model: { spec: model.spec, path: model.path, ollama: model.ollama?.spec }, output: out, intervention, method: options.method ?? 'mathneuro', topK, scale,
    statistics: { math: strip(math), general: strip(general) }, patch: patchSummary, check, modelfile, elapsedMs: Date.now() - started,
  };
}

export interface OverlapStudyOptions extends CalibrationOptions {
  /** a GGUF path or ollama:name[:tag] */
  model: string;
  /** calibration samples per subset (default [1, 10, 100]) */
  sizes?: number[];
  /** disjoint subsets per size (default 2: one pair) */
  subsets?: number;
  /** per-matrix K (default 0.1) */
  topK?: number;
  method?: SelectionMethod;
  math?: CalibrationChoice;
  general?: CalibrationChoice;
  env?: NodeJS.ProcessEnv;
}

export interface OverlapStudy {
  model: { spec: string; path: string };
  method: SelectionMethod;
  topK: number;
  points: OverlapPoint[];
  /** forward passes run (cache misses), and samples per set over all subsets */
  samplesCollected: number;
  samplesPerSet: number;
  elapsedMs: number;
}

/**
 * The paper's consistency measurement: for each size n, `subsets` disjoint calibration subsets of
 * n samples (math and general alike), one selection per subset, pairwise overlap of the selections.
 */
export async function overlapStudy(options: OverlapStudyOptions): Promise<OverlapStudy> {
  const started = Date.now();
  const sizes = options.sizes ?? [1, 10, 100];
  const subsets = options.subsets ?? 2;
  if (sizes.length === 0 || sizes.some((n) => !Number.isInteger(n) || n < 1)) throw new MathneuroError('EUSAGE', `sizes must be positive integers, got ${sizes.join(',')}`);
  if (!Number.isInteger(subsets) || subsets < 2) throw new MathneuroError('EUSAGE', `at least 2 subsets are needed, got ${subsets}`);
  const topK = options.topK ?? DEFAULT_BOOST_TOP_K;
  const method = options.method ?? 'mathneuro';
  const env = options.env ?? process.env;
  const model = resolveModel(options.model, env);
  const info = openModelSync(model.path);
  checkReadable([options.math, options.general].map((c) => (c && 'file' in c ? c.file : undefined)), 'calibration file');
  const statsOptions = { ...options, cacheDir: options.cacheDir ?? statsCacheDir(undefined, env) };
  const points: OverlapPoint[] = [];
  let offset = 0, collected = 0;
  for (const n of sizes) {
    // one load of the model for every subset of this size (freed before their selections)
    const parts: OverlapSubset[] = [];
    await withSharedStatsModel(model.path, statsOptions, async (statsModel) => {
      for (let i = 0; i < subsets; i++) {
        // every (size, subset) has its own range: no sample is shared between any two subsets
        const start = offset;
        offset += n;
        const math = await calibrationStats(info, 'math', { ...(options.math ?? { builtin: 'math' }), start }, { ...statsOptions, samples: n, statsModel });
        const general = await calibrationStats(info, 'general', { ...(options.general ?? { builtin: 'general' }), start }, { ...statsOptions, samples: n, statsModel });
        collected += (math.cached ? 0 : math.samples) + (general.cached ? 0 : general.samples);
        parts.push({ label: `${n}@${start}`, math: math.stats, general: general.stats });
      }
    });
    const pairs = await selectionOverlap(model.path, parts, { method, topK, signal: options.signal });
    points.push(overlapPoint(n, subsets, pairs));
  }
  return { model: { spec: model.spec, path: model.path }, method, topK, points, samplesCollected: collected, samplesPerSet: offset, elapsedMs: Date.now() - started };
}
