// The numbers of an HTML report for a model and two statistics files: the selection analysis
// (build.ts), the realized scale of a patched temporary copy, and an optional overlap study.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { splitCountOfName, splitPath } from '../gguf/model.ts';
import { patchModel } from '../patch/patch.ts';
import { DEFAULT_BOOST_SCALE, DEFAULT_BOOST_TOP_K, resolveModel, type OverlapStudy } from '../pipeline.ts';
import type { SelectionMethod } from '../select/select.ts';
import { loadStats, modelIdentity } from '../stats/index.ts';
import { analyzeSelection } from './build.ts';
import type { ReportData } from './types.ts';

export interface ReportOptions {
  /** a GGUF path or ollama:name[:tag] */
  model: string;
  /** statistics files (mathneuro stats, or the cache paths boost prints) */
  math: string;
  general: string;
  /** per-matrix K (default 0.1) */
  topK?: number;
  method?: SelectionMethod;
  /** the realized-scale table: patch a temporary copy with this scale (0 = prune); undefined = 1.1; false = no table */
  realizedScale?: number | false;
  /** an overlap study (the JSON of `mathneuro overlap`) to draw */
  overlap?: Pick<OverlapStudy, 'method' | 'topK' | 'points'>;
  /** bin at most this many weights' scores (default 4,000,000) */
  maxScoredWeights?: number;
  onProgress?: (p: { stage: 'select' | 'realized'; done: number; total: number }) => void;
  signal?: AbortSignal;
  env?: NodeJS.ProcessEnv;
  /** CPU threads of the realized-scale patch (default: all) */
  threads?: number;
}

/** The numbers of an HTML report: selection per layer and kind, score distributions, realized scale, overlap. */
export async function buildReport(options: ReportOptions): Promise<ReportData> {
  const model = resolveModel(options.model, options.env ?? process.env);
  const [math, general] = [await loadStats(options.math), await loadStats(options.general)];
  const topK = options.topK ?? DEFAULT_BOOST_TOP_K;
  const method = options.method ?? 'mathneuro';
  const analysis = await analyzeSelection(model.path, {
    math, general, method, topK, maxScoredWeights: options.maxScoredWeights, signal: options.signal,
    onProgress: (p) => options.onProgress?.({ stage: 'select', done: p.done, total: p.total }),
  });
  let realizedScale: ReportData['realizedScale'];
  const scale = options.realizedScale === false ? undefined : options.realizedScale ?? DEFAULT_BOOST_SCALE;
  if (scale !== undefined) {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'mathneuro-report-'));
    const named = splitCountOfName(model.path);   // a split model's copy is written as shards
    try {
      const r = await patchModel({
        model: model.path, out: named && named.count > 1 ? splitPath(path.join(dir, 'patched'), 0, named.count) : path.join(dir, 'patched.gguf'), method, topK, math, general, prune: scale === 0, scale: scale === 0 ? undefined : scale,
        force: true, signal: options.signal, threads: options.threads, onProgress: (p) => options.onProgress?.({ stage: 'realized', done: p.done, total: p.total }),
      });
      realizedScale = r.realized.map(({ candidates: _c, ...row }) => row);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const identity = modelIdentity(analysis.model);
  const name = analysis.model.metadata.get('general.name');
  return {
    title: `mathneuro report: ${typeof name === 'string' && name ? name : path.basename(model.path)}`,
    generator: `mathneuro ${packageVersion()}`, createdAt: new Date().toISOString(),
    model: { name: typeof name === 'string' && name ? name : path.basename(model.path), file: model.spec, bytes: analysis.model.fileSize, headerSha256: identity.headerSha256 },
    method, topK, scale,
    calibration: { math: math.datasets.join(', ') || path.basename(options.math), general: general.datasets.join(', ') || path.basename(options.general), mathSamples: math.samples, generalSamples: general.samples, mathTokens: math.tokens, generalTokens: general.tokens },
    selection: analysis.selection, scores: analysis.scores,
    overlap: options.overlap ? { method: options.overlap.method, topK: options.overlap.topK, points: options.overlap.points } : undefined,
    realizedScale,
  };
}

function packageVersion(): string {
  try {
    return JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version as string;
  } catch { return '?'; }
}
