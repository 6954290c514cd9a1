// kl: mean KL(reference || model) of next-token distributions over general (non-math) prompts, like
// llama-perplexity --kl-divergence. Both models are open at once in the native shim (NativeModelPair:
// full-vocabulary logits at every position), one runtime for runItems, cached under the pair's key.
// Each prompt's rows are compared in the shim (klRows, native/divergence.cpp), not copied through JS.
import os from 'node:os';
import path from 'node:path';
import { MathneuroError } from '../../errors.ts';
import type { NamedText } from '../../gguf/encodable.ts';
import { settingsHash } from '../cache.ts';
import { defaultDataDir, itemId, loadMmlu, loadText, mmluMathSubjects, sampleIndices } from '../data.ts';
import { loadNative } from '../../native.ts';
import { NativeModelPair, type PairLogits } from '../native-runtime.ts';
import { accuracyMetric, defaultSeed, hashModel, meanMetric, runItems, screenForModels, type ItemRuntime, type RunContext } from '../run.ts';
import type { EvalResult, EvaluateOptions } from '../types.ts';

export interface KlRecord { kl: number[]; sameTop: boolean[] }

/** General (non-math) prompts for kl: paragraphs of a text file, "text" fields of JSON lines, or non-math MMLU questions. */
function klPrompts(options: EvaluateOptions): { source: string; prompts: string[]; named: NamedText[] } {
  const source = options.data ? path.resolve(options.data) : path.join(defaultDataDir(), 'mmlu');
  const seed = options.seed ?? defaultSeed;
  const limit = options.limit ?? 32;
  let named: NamedText[];
  if (/\.jsonl(\.gz)?$/.test(source)) {
    named = loadText(source).split('\n').map((l, i) => ({ l, line: i + 1 })).filter(({ l }) => l.trim()).map(({ l, line }) => {
      const row = JSON.parse(l) as Record<string, unknown>;
      return { text: String(row.text ?? row.question ?? row.problem ?? ''), source: `${source}:${line}` };
    }).filter((p) => p.text);
  } else if (/\.(txt|md|text)$/.test(source)) {
    named = loadText(source).split(/\n\s*\n/).map((p) => p.trim()).filter(Boolean).map((text, i) => ({ text, source: `${source} paragraph ${i + 1}` })).slice(0, limit);
    return { source, prompts: named.map((p) => p.text), named };
  } else {
    const math = new Set<string>(mmluMathSubjects);
    named = loadMmlu(source).filter((i) => !math.has(i.subject)).map((i, k) => ({ text: `${i.question}\nA. ${i.choices[0]}\nB. ${i.choices[1]}\nC. ${i.choices[2]}\nD. ${i.choices[3]}`, source: `${source} (${i.subject}, non-math question ${k + 1})` }));
  }
  named = sampleIndices(named.length, limit, seed).map((i) => named[i]!);
  return { source, prompts: named.map((p) => p.text), named };
}

interface KlJob { id: string; text: string }

/** The pair as kl's runtime: one place, so prompts run one at a time, in order. */
async function openPair(options: EvaluateOptions & { vs: string }, klTokens: number): Promise<ItemRuntime<KlJob, KlRecord>> {
  const pair = await NativeModelPair.open(options.model, options.vs, {
    nCtx: Math.ceil((klTokens + 1) / 256) * 256, nSeqMax: 1, nThreads: options.threads, nBatch: options.batchSize,
    nGpuLayers: options.gpuLayers ?? (options.gpu === 'auto' ? -1 : 0), modelChecks: options.modelChecks,
  });
  // the KL arithmetic runs between forward passes, when their threads are idle
  const threads = Math.max(1, Math.min(64, options.threads ?? os.availableParallelism()));
  let queue: Promise<void> = Promise.resolve();
  return {
    withSlot: (use) => {
      const turn = queue.then(() => use(async (job) => klOfPrompt(await pair.logits(job.text, klTokens), threads)));
      queue = turn.catch(() => {});
      return turn;
    },
    dispose: async () => pair.dispose(),
  };
}

/**
 * Per-position KL(reference || model) and top-token agreement of one prompt, in the shim (divergence.cpp:
 * double sums, off the JS thread; divergence.ts's logSoftmaxRow + klOfLogRows compute the same in JS and
 * are the tests' reference).
 */
async function klOfPrompt({ tokens, model, reference, nVocab: n }: PairLogits, threads: number): Promise<{ result: KlRecord; tokens: number }> {
  const record: KlRecord = { kl: [], sameTop: [] };
  if (tokens.length >= 2) {
    // positions 0..len-2 predict a token of the prompt, as the reference's next-token distributions
    const rows = (tokens.length - 1) * n;
    const r = await loadNative().klRows(reference.subarray(0, rows), model.subarray(0, rows), n, threads);
    record.kl = Array.from(r.kl);
    record.sameTop = Array.from(r.sameTop, (x) => x === 1);
  }
  return { result: record, tokens: tokens.length };
}

/**
 * Mean KL divergence of the model's next-token distribution from the reference's (KL(reference || model)),
 * like llama-perplexity --kl-divergence. Logits come from the native shim (one forward pass per prompt and
 * model, every position's logits), not from per-token probability maps: the full vocabulary is compared.
 */
export async function evaluateKl(options: EvaluateOptions, cacheDir: string): Promise<EvalResult> {
  const vs = options.vs;
  if (!vs) throw new MathneuroError('EUSAGE', 'kl needs --vs <source.gguf>: the model the patched one is compared against');
  const chosen = klPrompts(options);
  const source = chosen.source;
  const prompts = screenForModels(options, chosen.named, 'KL prompts').map((p) => p.text);
  const skippedUnencodable = chosen.named.length - prompts.length;
  const klTokens = options.klTokens ?? 128;
  if (!Number.isInteger(klTokens) || klTokens < 2) throw new MathneuroError('EUSAGE', 'kl tokens per prompt must be an integer >= 2');
  const settings = { format: 'kl-v2', klTokens };
  const ctxModel: RunContext = { options, cacheDir, side: 'model' };
  // both hashes at once (each on its own worker thread)
  const [modelSha, referenceSha] = await Promise.all([hashModel(ctxModel, options.model), hashModel({ ...ctxModel, side: 'reference' }, vs)]);
  const pairKey = settingsHash({ modelSha, referenceSha }) + settingsHash({ referenceSha, modelSha });
  const jobs: KlJob[] = prompts.map((text) => ({ id: itemId(text), text }));
  const run = await runItems<KlJob, KlRecord>(ctxModel, pairKey, 'kl', settings, jobs, () => openPair({ ...options, vs }, klTokens));
  // the pair ran once: both sides carry the same counts (no generation rate: kl never had one)
  const info = { evaluated: run.info.evaluated, cached: run.info.cached, elapsedMs: run.info.elapsedMs };
  const rows = jobs.map((j) => run.results.get(j.id)!);
  const kl = rows.flatMap((r) => r.kl);
  const sameTop = rows.flatMap((r) => r.sameTop);
  const sorted = [...kl].sort((a, b) => a - b);
  const quantile = (q: number) => sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! : 0;
  const klMetric = meanMetric('mean KL (nats/token)', 'main', 'mean', kl);
  return {
    task: 'kl', settings: { ...settings, data: source, prompts: jobs.length, seed: options.seed ?? defaultSeed, ...(skippedUnencodable ? { skippedUnencodable } : {}) },
    model: { path: options.model, sha256: modelSha, ...info },
    reference: { path: vs, sha256: referenceSha, ...info },
    items: jobs.length,
    metrics: [
      klMetric,
      { name: 'KL p99', group: 'main', kind: 'mean', value: quantile(0.99), ci95: { low: NaN, high: NaN }, count: kl.length },
      accuracyMetric('same top token', 'main', sameTop),
    ],
    itemResults: jobs.map((j, i) => ({ id: j.id, meanKl: rows[i]!.kl.reduce((a, b) => a + b, 0) / Math.max(1, rows[i]!.kl.length) })),
  };
}
