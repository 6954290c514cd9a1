// `mathneuro tune`: picks the K and scale of a boost for one model by searching them against a
// math objective under a general-text budget, as heretic searches its own edit's parameters against
// a refusal count and a KL divergence. Statistics are collected once (boost's stage and cache);
// every candidate then costs forward passes only: its patched bytes are written over the weights of
// one loaded model (src/tune/model.ts), scored, and replaced by the next candidate's. Scored
// candidates are cached, so an interrupted or repeated run scores none of them again. The best
// feasible point is written by the patch pipeline boost uses (atomic new file, same provenance).
import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { RequantizeStrategy } from '../core/codec.ts';
import { sha256File } from '../core/tensor-io.ts';
import { MathneuroError } from '../errors.ts';
import { openModelSync } from '../gguf/model.ts';
import { patchModel, type PatchResult } from '../patch/patch.ts';
import {
  calibrationStats, withSharedStatsModel, modelFingerprint, resolveModel, screenCalibration, statsCacheDir,
  type CalibratedStats, type CalibrationChoice, type CalibrationOptions, type PipelineProgress,
} from '../pipeline.ts';
import { checkOutput, checkPatchInput, checkReadable } from '../preflight.ts';
import { MAX_TOP_K, MIN_TOP_K, SELECTION_METHODS, type SelectionMethod } from '../select/select.ts';
import { InMemoryPatcher, Scorer, TuneModel, type Measurement } from './model.ts';
import { digest, gsm8kTask, tuneTask, withObjectiveFile, type ConfirmResult, type TuneData, type TuneTask } from './tasks.ts';

/** The coarse grid: per-matrix K and factor. */
export const TUNE_TOP_K = [0.005, 0.01, 0.05, 0.1] as const;
export const TUNE_SCALES = [1.01, 1.02, 1.05, 1.1, 1.2, 1.5] as const;
/**
 * Mean KL(unpatched || candidate) per general token a candidate may cost, in nats. Provisional:
 * about what a Q6_K-Q8_0 quantization costs an F16 model, i.e. "no visible change"; the headroom
 * fixture's experiment is to decide it.
 */
export const DEFAULT_KL_BUDGET = 0.01;
/** How much the general-text NLL (nats/token) may rise over the unpatched model's. Provisional, as the KL budget. */
export const DEFAULT_NLL_MARGIN = 0.01;
export const DEFAULT_OBJECTIVE_SAMPLES = 32;
export const DEFAULT_GENERAL_PROMPTS = 8;
export const DEFAULT_TUNE_KL_TOKENS = 128;
export const DEFAULT_REFINE_ROUNDS = 1;
/** Cache lines of this format (a change of what a score means gets a new number). */
const CACHE_FORMAT = 1;

export interface TuneProgress extends Omit<PipelineProgress, 'stage'> { stage: PipelineProgress['stage'] | 'tune-load' | 'tune-heldout' | 'check-confirm' }

export interface TuneOptions extends Omit<CalibrationOptions, 'onProgress'> {
  onProgress?: (p: TuneProgress) => void;
  /** a GGUF path or ollama:name[:tag] */
  model: string;
  /** output GGUF (default <model>.tuned.gguf) */
  out?: string;
  /** where the objective and general prompts come from: a TuneTask, or a registered name (default 'gsm8k') */
  task?: TuneTask | string;
  /** objective samples from a JSON-lines file instead of the task's ({"prompt","answer"} or {"question","answer"}) */
  objectiveFile?: string;
  /** default 'mathneuro' */
  method?: SelectionMethod;
  /** the grid (defaults TUNE_TOP_K, TUNE_SCALES) */
  topK?: readonly number[];
  scales?: readonly number[];
  /** mean KL per general token a candidate may cost (default DEFAULT_KL_BUDGET) */
  klBudget?: number;
  /** general NLL may rise by at most this over the unpatched model (default DEFAULT_NLL_MARGIN) */
  nllMargin?: number;
  /** rounds of refinement around the best feasible point (default 1; 0: the grid only) */
  refine?: number;
  /** objective samples of the search; as many again are held out (default 32) */
  objectiveSamples?: number;
  /** general prompts of the search; as many again are held out (default 8) */
  generalPrompts?: number;
  /** tokens per general prompt (default 128) */
  klTokens?: number;
  /** bound of the unpatched distributions kept for KL (default 512 MiB; longer prompts are cut to fit) */
  maxReferenceBytes?: number;
  /** requantization of touched blocks, as boost's --requant (default 'auto') */
  strategy?: RequantizeStrategy;
  /** KV cache type of the scoring model (default f16) */
  kvType?: 'f16' | 'f32';
  /** calibration sets (default: the task's) */
  math?: CalibrationChoice;
  general?: CalibrationChoice;
  /** false: search only, write nothing (default true) */
  write?: boolean;
  force?: boolean;
  /** check the written model by generation on this many held-out problems against the source (default 0: off) */
  confirm?: number;
  /** one call per candidate, scored or read from the cache */
  onCandidate?: (c: ScoredCandidate, index: number, total: number) => void;
  /** test hook: load the scoring model with mmap */
  useMmap?: boolean;
  env?: NodeJS.ProcessEnv;
}

export interface ScoredCandidate {
  method: SelectionMethod;
  topK: number;
  scale: number;
  phase: 'grid' | 'refine';
  selectedWeights: number;
  objective: number;
  kl: number;
  sameTop: number;
  generalNll: number;
  feasible: boolean;
  /** read from the cache (not scored in this run) */
  cached: boolean;
  /** time to patch the loaded weights and to run the forward passes (0 when cached) */
  patchMs: number;
  measureMs: number;
}

export interface TuneResult {
  model: { spec: string; path: string };
  task: string;
  objective: string;
  method: SelectionMethod;
  budget: { kl: number; nllMargin: number };
  baseline: { objective: number; generalNll: number; objectiveTokens: number; generalTokens: number };
  candidates: ScoredCandidate[];
  /** not dominated in (objective, KL): lowest KL first */
  pareto: ScoredCandidate[];
  /** the feasible candidate with the lowest objective, when it beats the unpatched model; undefined otherwise */
  chosen?: ScoredCandidate;
  /** why nothing was chosen */
  reason?: string;
  /** the chosen point and the unpatched model on the held-out samples and prompts (never searched with) */
  heldOut?: { baseline: Measurement; chosen: Measurement; feasible: boolean };
  output?: string;
  patch?: Omit<PatchResult, 'tensors'>;
  confirm?: ConfirmResult;
  statistics: { math: Omit<CalibratedStats, 'stats'>; general: Omit<CalibratedStats, 'stats'> };
  /** the calibration sets of the statistics (boost with these and the chosen K and scale writes the same file) */
  calibration: { math: CalibrationChoice; general: CalibrationChoice };
  cache: { path: string; hits: number; scored: number };
  /** mean wall time of a candidate scored in this run (patch + forward passes) vs one warm unpatched pass over the same samples (NaN when none was scored) */
  timing: { candidateMs: number; patchMs: number; measureMs: number; forwardMs: number; ratio: number };
  elapsedMs: number;
}

type CacheLine =
  | { kind: 'baseline'; objective: number; generalNll: number; objectiveTokens: number; generalTokens: number; forwardMs: number }
  | { kind: 'candidate'; method: SelectionMethod; topK: number; scale: number; selectedWeights: number; m: Measurement; patchMs: number; measureMs: number }
  | { kind: 'heldout'; method: SelectionMethod; topK: number; scale: number; baseline: Measurement; chosen: Measurement };

/** Rounded, so that a refinement point and its cache line agree on what it is. */
const roundK = (k: number) => Number(k.toPrecision(6));
const roundScale = (s: number) => Number(s.toFixed(6));
const idOf = (method: string, k: number, s: number) => `${method}:${roundK(k)}:${roundScale(s)}`;

function checkTuneOptions(o: TuneOptions) {
  const method = o.method ?? 'mathneuro';
  if (!SELECTION_METHODS.includes(method)) throw new MathneuroError('EUSAGE', `unknown method "${method}" (${SELECTION_METHODS.join(', ')})`);
  const kl = o.klBudget ?? DEFAULT_KL_BUDGET;
  if (!Number.isFinite(kl) || kl <= 0) throw new MathneuroError('EUSAGE', `the KL budget must be a positive number of nats per token, got ${kl}`);
  const margin = o.nllMargin ?? DEFAULT_NLL_MARGIN;
  if (!Number.isFinite(margin) || margin < 0) throw new MathneuroError('EUSAGE', `the general NLL margin must be a number >= 0, got ${margin}`);
  for (const k of o.topK ?? TUNE_TOP_K) if (!Number.isFinite(k) || k < MIN_TOP_K || k > MAX_TOP_K) throw new MathneuroError('EUSAGE', `K must be a fraction in [${MIN_TOP_K}, ${MAX_TOP_K}], got ${k}`);
  for (const s of o.scales ?? TUNE_SCALES) if (!Number.isFinite(s) || s <= 0 || s > 100) throw new MathneuroError('EUSAGE', `a scale must be a positive factor (at most 100), got ${s}`);
  if ((o.topK ?? TUNE_TOP_K).length === 0 || (o.scales ?? TUNE_SCALES).length === 0) throw new MathneuroError('EUSAGE', 'the grid needs at least one K and one scale');
  for (const [name, v, min] of [['refine', o.refine ?? DEFAULT_REFINE_ROUNDS, 0], ['objectiveSamples', o.objectiveSamples ?? DEFAULT_OBJECTIVE_SAMPLES, 1], ['generalPrompts', o.generalPrompts ?? DEFAULT_GENERAL_PROMPTS, 1], ['klTokens', o.klTokens ?? DEFAULT_TUNE_KL_TOKENS, 2], ['confirm', o.confirm ?? 0, 0]] as const) {
    if (!Number.isInteger(v) || v < min) throw new MathneuroError('EUSAGE', `${name} must be an integer >= ${min}, got ${v}`);
  }
  return { method, kl, margin };
}

/** The points around (k, s) between it and its neighbours on the grid axes (geometric in K, arithmetic in the scale). */
export function refinementPoints(k: number, s: number, ks: readonly number[], ss: readonly number[]): { topK: number; scale: number }[] {
  const around = (x: number, axis: readonly number[], mid: (a: number, b: number) => number, lo: number, hi: number, edge: (x: number, dir: -1 | 1) => number) => {
    const sorted = [...new Set(axis)].sort((a, b) => a - b);
    const below = sorted.filter((v) => v < x - 1e-12).pop();
    const above = sorted.find((v) => v > x + 1e-12);
    const out = [mid(below ?? edge(x, -1), x), x, mid(x, above ?? edge(x, 1))];
    return [...new Set(out.map((v) => Math.min(hi, Math.max(lo, v))))];
  };
  const kAxis = around(k, ks, (a, b) => roundK(Math.sqrt(a * b)), MIN_TOP_K, MAX_TOP_K, (x, d) => (d < 0 ? x / 2 : x * 2));
  const sAxis = around(s, ss, (a, b) => roundScale((a + b) / 2), 1e-6, 100, (x, d) => (d < 0 ? 1 + (x - 1) / 2 : 1 + (x - 1) * 2));
  const out: { topK: number; scale: number }[] = [];
  for (const kk of kAxis) for (const sc of sAxis) out.push({ topK: roundK(kk), scale: roundScale(sc) });
  return out;
}

/** Not dominated in (objective, KL), lowest KL first. */
export function paretoFront<T extends { objective: number; kl: number }>(points: T[]): T[] {
  const sorted = [...points].sort((a, b) => a.kl - b.kl || a.objective - b.objective);
  const out: T[] = [];
  let best = Infinity;
  for (const p of sorted) if (p.objective < best) { out.push(p); best = p.objective; }
  return out;
}

function readCache(file: string): CacheLine[] {
  if (!existsSync(file)) return [];
  const out: CacheLine[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try { out.push(JSON.parse(line)); } catch { /* a line cut by a kill: scored again */ }
  }
  return out;
}

function resolveTask(o: TuneOptions): TuneTask {
  let task = typeof o.task === 'object' ? o.task : o.task === undefined || o.task === 'gsm8k' ? gsm8kTask({ math: o.math, general: o.general }) : tuneTask(o.task);
  if (o.objectiveFile) task = withObjectiveFile(task, o.objectiveFile);
  return task;
}

export async function tune(options: TuneOptions): Promise<TuneResult> {
  const started = Date.now();
  const { method, kl: klBudget, margin } = checkTuneOptions(options);
  const env = options.env ?? process.env;
  const write = options.write !== false;
  options.onProgress?.({ stage: 'resolve', done: 0, total: 1 });
  const model = resolveModel(options.model, env);
  const out = path.resolve(options.out ?? model.path.replace(/\.gguf$/i, '') + '.tuned.gguf');
  const info = openModelSync(model.path);
  if (write) {
    if (out === model.path) throw new MathneuroError('EUSAGE', 'the output would overwrite the model');
    if (existsSync(out) && !options.force) throw new MathneuroError('EEXIST', `${out} exists (use --force to overwrite)`);
    checkPatchInput(model.path, { force: options.force });
    checkOutput(out, { inputs: info.shards.map((s) => s.path), force: options.force, bytes: info.totalBytes, env });
  } else if (options.confirm) throw new MathneuroError('EUSAGE', '--confirm checks the written model: it needs the write (leave out --dry-run)');
  checkReadable([options.math, options.general].map((c) => (c && 'file' in c ? c.file : undefined)), 'calibration file');
  if (info.metadata.has('mathneuro.method') && !options.force) throw new MathneuroError('EEXIST', `${model.path} was already patched by mathneuro: tune its source instead, or --force`);
  const task = resolveTask(options);
  const cacheDir = options.cacheDir ?? statsCacheDir(undefined, env);
  const sizes = { objective: options.objectiveSamples ?? DEFAULT_OBJECTIVE_SAMPLES, general: options.generalPrompts ?? DEFAULT_GENERAL_PROMPTS, samples: options.samples ?? 100, seed: options.seed ?? 0 };
  const data: TuneData = task.data(sizes, cacheDir);
  const mathChoice = options.math ?? data.calibration.math;
  const generalChoice = options.general ?? data.calibration.general;
  options.onProgress?.({ stage: 'resolve', done: 1, total: 1 });

  // statistics: boost's stage and cache
  const statsOptions = { ...options, cacheDir };
  screenCalibration(info, 'math', mathChoice, options);
  screenCalibration(info, 'general', generalChoice, options);
  const { math, general } = await withSharedStatsModel(model.path, statsOptions, async (statsModel) => ({
    math: await calibrationStats(info, 'math', mathChoice, { ...statsOptions, statsModel }),
    general: await calibrationStats(info, 'general', generalChoice, { ...statsOptions, statsModel }),
  }));

  const klTokens = options.klTokens ?? DEFAULT_TUNE_KL_TOKENS;
  const strategy: RequantizeStrategy = options.strategy ?? 'auto';
  const fingerprint = modelFingerprint(info);
  const cacheKey = digest({
    format: CACHE_FORMAT, model: fingerprint, math: sha256File(math.path), general: sha256File(general.path),
    objective: digest(data.objective), prompts: digest(data.general), klTokens, maxReferenceBytes: options.maxReferenceBytes ?? null,
    strategy, kvType: options.kvType ?? 'f16', nCtx: options.nCtx ?? null,
  }).slice(0, 20);
  const cacheFile = path.join(cacheDir, fingerprint.slice(0, 32), `tune-${cacheKey}.jsonl`);
  const useCache = options.cache !== false;
  const lines = useCache ? readCache(cacheFile) : [];
  const remember = (line: CacheLine) => {
    if (!useCache) return;
    mkdirSync(path.dirname(cacheFile), { recursive: true });
    appendFileSync(cacheFile, JSON.stringify(line) + '\n');   // one line per score: a kill loses at most the one being scored
  };

  // the engine: loaded only when something has to be scored
  let engine: { model: TuneModel; patcher: InMemoryPatcher; scorer: Scorer | undefined } | undefined;
  const getEngine = async () => {
    if (engine) return engine;
    options.onProgress?.({ stage: 'tune-load', done: 0, total: 1 });
    const m = await TuneModel.open(model.path, { nThreads: options.nThreads, nCtx: options.nCtx, nBatch: options.nBatch, nGpuLayers: options.nGpuLayers, modelChecks: options.modelChecks, kvType: options.kvType, useMmap: options.useMmap });
    try {
      const patcher = new InMemoryPatcher(info, m, { method, math: { ...math.stats }, general: { ...general.stats }, strategy, threads: options.nThreads, seed: options.seed, signal: options.signal });
      options.onProgress?.({ stage: 'tune-load', done: 1, total: 1, detail: 'reference distributions' });
      const scorer = await Scorer.create(m, data.objective.search, data.general.search, { klTokens, maxReferenceBytes: options.maxReferenceBytes, signal: options.signal });
      engine = { model: m, patcher, scorer };
      return engine;
    } catch (e) { m.dispose(); throw e; }
  };

  try {
    // the unpatched model on the search samples
    let baseLine = lines.find((l): l is Extract<CacheLine, { kind: 'baseline' }> => l.kind === 'baseline');
    if (!baseLine) {
      const e = await getEngine();
      const t0 = performance.now();
      const b = await e.scorer!.measure(options.signal);
      baseLine = { kind: 'baseline', objective: b.objective, generalNll: b.generalNll, objectiveTokens: b.objectiveTokens, generalTokens: b.generalTokens, forwardMs: performance.now() - t0 };
      remember(baseLine);
    }
    const baseline = baseLine;
    const feasible = (m: { kl: number; generalNll: number }) => m.kl <= klBudget && m.generalNll <= baseline.generalNll + margin;

    const cached = new Map<string, Extract<CacheLine, { kind: 'candidate' }>>();
    for (const l of lines) if (l.kind === 'candidate') cached.set(idOf(l.method, l.topK, l.scale), l);
    const candidates: ScoredCandidate[] = [];
    const seen = new Set<string>();
    let hits = 0, scored = 0;
    const gridK = (options.topK ?? TUNE_TOP_K).map(roundK), gridS = (options.scales ?? TUNE_SCALES).map(roundScale);

    const score = async (points: { topK: number; scale: number }[], phase: 'grid' | 'refine') => {
      const todo = points.filter((p) => !seen.has(idOf(method, p.topK, p.scale)));
      let prepared = false;
      for (const [i, p] of todo.entries()) {
        const id = idOf(method, p.topK, p.scale);
        seen.add(id);
        let line = cached.get(id);
        let fromCache = true;
        if (!line) {
          const e = await getEngine();
          if (!prepared) { await e.patcher.prepare(todo.map((x) => x.topK)); prepared = true; }
          const t0 = performance.now();
          await e.patcher.apply(p.topK, p.scale);
          const t1 = performance.now();
          const m = await e.scorer!.measure(options.signal);
          const t2 = performance.now();
          line = { kind: 'candidate', method, topK: p.topK, scale: p.scale, selectedWeights: e.patcher.selectedWeights(p.topK), m, patchMs: t1 - t0, measureMs: t2 - t1 };
          remember(line);
          fromCache = false;
          scored++;
        } else hits++;
        const c: ScoredCandidate = {
          method, topK: p.topK, scale: p.scale, phase, selectedWeights: line.selectedWeights, objective: line.m.objective, kl: line.m.kl, sameTop: line.m.sameTop,
          generalNll: line.m.generalNll, feasible: feasible(line.m), cached: fromCache, patchMs: fromCache ? 0 : line.patchMs, measureMs: fromCache ? 0 : line.measureMs,
        };
        candidates.push(c);
        options.onCandidate?.(c, i, todo.length);
      }
    };

    await score(gridK.flatMap((topK) => gridS.map((scale) => ({ topK, scale }))), 'grid');
    const bestFeasible = () => candidates.filter((c) => c.feasible).sort((a, b) => a.objective - b.objective)[0];
    for (let round = 0; round < (options.refine ?? DEFAULT_REFINE_ROUNDS); round++) {
      const best = bestFeasible();
      if (!best) break;
      await score(refinementPoints(best.topK, best.scale, [...gridK, ...candidates.map((c) => c.topK)], [...gridS, ...candidates.map((c) => c.scale)]), 'refine');
    }
    engine?.patcher.restore();
    // the cost figure: an unpatched pass measured now, warm like the candidates' (the first pass of
    // a run pays for cold caches and would flatter the ratio)
    let forwardMs = baseline.forwardMs;
    if (engine && scored > 0) {
      const t0 = performance.now();
      await engine.scorer!.measure(options.signal);
      forwardMs = performance.now() - t0;
    }
    // the search's unpatched distributions are not needed any more (the held-out check keeps its own)
    if (engine) engine.scorer = undefined;

    const best = bestFeasible();
    let chosen: ScoredCandidate | undefined;
    let reason: string | undefined;
    if (!best) reason = `no candidate keeps KL <= ${klBudget} and general NLL within ${margin} of the unpatched model's`;
    else if (!(best.objective < baseline.objective)) reason = `no candidate within the budget lowers the objective (best ${best.objective.toFixed(4)} vs unpatched ${baseline.objective.toFixed(4)} nats/token)`;
    else chosen = best;

    // the chosen point on held-out samples and prompts, against the unpatched model (cached too)
    let heldOut: TuneResult['heldOut'];
    if (chosen) {
      let h = lines.find((l): l is Extract<CacheLine, { kind: 'heldout' }> => l.kind === 'heldout' && idOf(l.method, l.topK, l.scale) === idOf(method, chosen!.topK, chosen!.scale));
      if (!h) {
        const e = await getEngine();
        options.onProgress?.({ stage: 'tune-heldout', done: 0, total: 1 });
        e.patcher.restore();
        const hs = await Scorer.create(e.model, data.objective.heldOut, data.general.heldOut, { klTokens, maxReferenceBytes: options.maxReferenceBytes, signal: options.signal });
        const b = await hs.measure(options.signal);
        await e.patcher.prepare([chosen.topK]);
        await e.patcher.apply(chosen.topK, chosen.scale);
        const c = await hs.measure(options.signal);
        e.patcher.restore();
        h = { kind: 'heldout', method, topK: chosen.topK, scale: chosen.scale, baseline: b, chosen: c };
        remember(h);
        options.onProgress?.({ stage: 'tune-heldout', done: 1, total: 1 });
      }
      heldOut = { baseline: h.baseline, chosen: h.chosen, feasible: h.chosen.kl <= klBudget && h.chosen.generalNll <= h.baseline.generalNll + margin };
    }
    engine?.model.dispose();
    engine = undefined;

    // the write: boost's patch pipeline (atomic new file, provenance keys)
    let patch: PatchResult | undefined;
    let confirm: ConfirmResult | undefined;
    if (chosen && write) {
      patch = await patchModel({
        model: model.path, out, scale: chosen.scale, method, topK: chosen.topK,
        math: { ...math.stats, path: math.path }, general: { ...general.stats, path: general.path },
        force: options.force, signal: options.signal, strategy, threads: options.nThreads,
        onProgress: (p) => options.onProgress?.({ stage: 'patch', done: p.done, total: p.total, detail: p.phase }),
      });
      if (options.confirm) {
        if (!task.confirm) throw new MathneuroError('EUSAGE', `task ${task.name} has no generation check for --confirm`);
        options.onProgress?.({ stage: 'check-confirm', done: 0, total: options.confirm });
        confirm = await task.confirm(out, model.path, options.confirm, { threads: options.nThreads, seed: options.seed ?? 0, signal: options.signal });
      }
    }

    const fresh = candidates.filter((c) => !c.cached);
    const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);
    const patchMs = mean(fresh.map((c) => c.patchMs)), measureMs = mean(fresh.map((c) => c.measureMs));
    const strip = ({ stats: _s, ...rest }: CalibratedStats) => rest;
    const { tensors: _t, ...patchSummary } = patch ?? ({} as PatchResult);
    return {
      model: { spec: model.spec, path: model.path }, task: task.name, objective: data.describe, method,
      budget: { kl: klBudget, nllMargin: margin },
      baseline: { objective: baseline.objective, generalNll: baseline.generalNll, objectiveTokens: baseline.objectiveTokens, generalTokens: baseline.generalTokens },
      candidates, pareto: paretoFront(candidates), chosen, reason, heldOut,
      output: patch ? out : undefined, patch: patch ? patchSummary as Omit<PatchResult, 'tensors'> : undefined, confirm,
      statistics: { math: strip(math), general: strip(general) },
      calibration: { math: mathChoice, general: generalChoice },
      cache: { path: cacheFile, hits, scored },
      timing: { candidateMs: patchMs + measureMs, patchMs, measureMs, forwardMs, ratio: (patchMs + measureMs) / forwardMs },
      elapsedMs: Date.now() - started,
    };
  } finally {
    engine?.model.dispose();
  }
}

