// Collect MathNeuro statistics: forward passes of a model over texts, inside llama.cpp's graph
// evaluation (the native collector), off the JS thread, with progress, cancellation and checkpoints.
import { createHash } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import os from 'node:os';
import { MathneuroError, asMathneuroError } from '../errors.ts';
import { type GgufInfo } from '../gguf/reader.ts';
import { openModelSync } from '../gguf/model.ts';
import { checkModel, emitModelWarnings } from '../gguf/model-check.ts';
import { assertEncodable, screenTexts, type ScreenOptions, type Unencodable } from '../gguf/encodable.ts';
import { GGUF_VALUE } from '../gguf/types.ts';
import { loadNative } from '../native.ts';
import { loadStats, modelIdentity, saveStats } from './file.ts';
import { emptyStats, mergeInto } from './merge.ts';
import type { Stats, WeightStats } from './types.ts';

export interface CollectProgress {
  samplesDone: number;
  samplesTotal: number;
  tokensDone: number;
  elapsedMs: number;
  tokensPerSecond: number;
  etaMs: number;
}

export interface ModelOptions {
  /** context size: longer samples are truncated and reported (default: min(model's training context, 4096)) */
  nCtx?: number;
  /** tokens per forward pass (default 512) */
  nBatch?: number;
  /** CPU threads (default: all cores) */
  nThreads?: number;
  /** layers to offload to a GPU when the build has one (default 0; -1 = all) */
  nGpuLayers?: number;
  /** most samples packed into one forward pass as separate sequences (default 16; 1 = one sample per pass) */
  nSeqMax?: number;
  /** flash attention as llama.cpp decides (auto, default), or forced on/off */
  flashAttn?: 'auto' | 'on' | 'off';
  /** KV cache type (default f16, as llama.cpp runs models; f32 for bit-stable comparisons) */
  kvType?: 'f16' | 'f32';
  /** false: skip the semantic model checks (src/gguf/model-check.ts; the GGUF validator still runs): you take the risk of an abort */
  modelChecks?: boolean;
}

export interface CollectOptions extends ModelOptions {
  /** label stored in the file's dataset list (default "texts") */
  dataset?: string;
  onProgress?: (p: CollectProgress) => void;
  /** cancels between samples (and inside a long sample's forward pass); partial samples are discarded */
  signal?: AbortSignal;
  /** add BOS/special tokens as the model's tokenizer says (default true, as the paper does) */
  addSpecial?: boolean;
  /** pack several short samples into one forward pass (exact per-sample norms; default true) */
  pack?: boolean;
  /** save a checkpoint every `every` samples to `path`; with `resume`, continue from it */
  checkpoint?: { path: string; every: number; resume?: boolean };
  /** also report every matmul the graph evaluated (src0 name, op, accepted), for coverage checks */
  matmuls?: boolean;
  /**
   * also collect the output head's statistics (output.weight, or token_embd.weight when the head is
   * tied; llama-imatrix's --process-output): the head's matmul then runs on every token, about 20% of
   * a pass on a 1B model with a 128k vocabulary. Default false: each forward pass ends at the final
   * norm (HEAD_INPUT_NODE), after the last block, so every block weight's statistics are the same and
   * the head's are absent (selecting with includeOutput then needs statistics collected with this).
   */
  includeOutput?: boolean;
  /** where each text comes from ("file:line"), for errors about a sample (default "text #i") */
  sources?: string[];
  /** leave out texts with characters the vocabulary cannot encode (default: such a text is an EDATA error, before any forward pass) */
  skipUnencodable?: boolean;
  /** a built-in set: when most of it cannot be encoded the error says so */
  builtin?: ScreenOptions['builtin'];
}

/** A MUL_MAT / MUL_MAT_ID the eval callback was asked about: src0's name, and whether it was collected. */
export interface SeenMatmul { name: string; op: 'MUL_MAT' | 'MUL_MAT_ID'; accepted: boolean }

export interface CollectResult {
  stats: Stats;
  /** indices (into the given texts) of samples cut to nCtx tokens */
  truncated: number[];
  /** indices of samples that tokenized to nothing (skipped) */
  empty: number[];
  /** samples left out because the vocabulary cannot encode some of their characters (skipUnencodable) */
  unencodable: Unencodable[];
  elapsedMs: number;
  /** with options.matmuls: every matmul the forward passes evaluated (union over all samples) */
  matmuls?: SeenMatmul[];
  /** forward passes (llama_decode calls) and how many of them ended at the final norm, not computing the head */
  passes: number;
  passesWithoutHead: number;
  /** time inside the eval callback's statistics code (the rest of elapsedMs is llama.cpp's graph and tokenizing) */
  observeMs: number;
}

/**
 * The node llama.cpp names the input of the output head: the final norm, after the last block
 * (cb(cur, "result_norm", -1) in src/models/*.cpp). Every block's matmuls are its ancestors, so a
 * graph evaluation that ends there has seen them all; an architecture without it runs to the end.
 */
export const HEAD_INPUT_NODE = 'result_norm';

export interface NativeModel {
  tokenize(text: string, addSpecial?: boolean): Int32Array;
  collect(texts: string[], onProgress?: (p: { samplesDone: number; tokensDone: number; elapsedMs: number }) => void, addSpecial?: boolean,
    options?: { pack?: boolean; stats?: boolean; logits?: 'all' | 'last'; matmuls?: boolean; stopAfter?: string }): Promise<{
    samples: number; tokens: number; elapsedMs: number; aborted: boolean; truncated: number[]; empty: number[];
    weights: WeightStats[]; matmuls?: SeenMatmul[]; decodes: number; stopped: number; observeMs: number;
  }>;
  abort(): void;
  /** out: written in place (at least nTokens x nVocab values, left alone until the promise settles); logits is then a view of it */
  logits(tokens: Int32Array, out?: Float32Array): Promise<{ logits: Float32Array; nVocab: number; nTokens: number }>;
  /** Greedy completion of one prompt (native/model.cpp GreedyWorker); the text is cut at the first stop string. */
  greedy(tokens: Int32Array, maxNewTokens: number, stops: string[]): Promise<{ text: string; tokens: Int32Array; stoppedBy: 'stop-string' | 'eog' | 'max-tokens' }>;
  info(): { nCtx: number; nBatch: number; nSeqMax: number; nCtxTrain: number; nEmbd: number; nLayer: number; nVocab: number; addBos: boolean; bos: number; nParams: number; description: string };
  dispose(): void;
}

/** A model opened for statistics collection (mmap, validated first). Call dispose() when done. */
export class StatsModel {
  private constructor(readonly path: string, readonly gguf: GgufInfo, private readonly native: NativeModel) {}

  static async open(path: string, options: ModelOptions = {}): Promise<StatsModel> {
    if (process.env.MATHNEURO_TEST_REFUSE_LOAD === '1') throw new MathneuroError('ELOAD', 'model load refused (MATHNEURO_TEST_REFUSE_LOAD=1: a test asserting that nothing runs the model)');
    const gguf = openModelSync(path); // the validator (every shard of a split model): nothing reaches llama.cpp before it says yes
    emitModelWarnings(gguf, checkModel(gguf, options)); // and the model-level checks (what llama.cpp's loader and tokenizer would abort on)
    const binding = loadNative();
    const nCtxTrain = trainingContext(gguf);
    const nCtx = options.nCtx ?? Math.min(nCtxTrain || 4096, 4096);
    try {
      const native = await binding.loadModel(path, {
        nCtx, nBatch: options.nBatch ?? 512, nThreads: options.nThreads ?? os.availableParallelism(), nGpuLayers: options.nGpuLayers ?? 0,
        // llama.cpp asserts n_seq_max <= n_batch (<= n_ctx): a model with a tiny context_length aborted here
        nSeqMax: Math.max(1, Math.min(options.nSeqMax ?? 16, nCtx, options.nBatch ?? 512)), flashAttn: options.flashAttn ?? 'auto', kvType: options.kvType ?? 'f16',
      });
      return new StatsModel(path, gguf, native);
    } catch (e) {
      throw asMathneuroError(e, 'ELOAD');
    }
  }

  info() { return this.native.info(); }
  tokenize(text: string, addSpecial = true): Int32Array {
    assertEncodable(this.gguf, text, this.path); // a throw instead of llama.cpp's abort
    return this.native.tokenize(text, addSpecial);
  }

  /** Statistics of `texts`, one sample per text. */
  async collect(allTexts: string[], options: CollectOptions = {}): Promise<CollectResult> {
    // every text against the vocabulary before the first forward pass
    const screened = screenTexts(this.gguf, allTexts.map((text, i) => ({ text, source: options.sources?.[i] ?? `text #${i}` })), { skip: options.skipUnencodable, builtin: options.builtin });
    const texts = screened.skipped.length ? screened.keep.map((i) => allTexts[i]) : allTexts;
    const original = (i: number) => (screened.skipped.length ? screened.keep[i] : i);
    const identity = modelIdentity(this.gguf);
    const every = options.checkpoint?.every ?? texts.length;
    if (!Number.isInteger(every) || every < 1) throw new MathneuroError('EUSAGE', 'checkpoint.every must be a positive integer');
    let total: Stats = emptyStats(identity);
    total.datasets = [options.dataset ?? 'texts'];
    let start = 0;
    const truncated: number[] = [];
    const empty: number[] = [];
    const matmuls = new Map<string, SeenMatmul>();
    const cp = options.checkpoint;
    const includeOutput = options.includeOutput ?? false;
    let checkpointsSaved = 0;
    let passes = 0, passesWithoutHead = 0, observeMs = 0;
    if (cp?.resume && existsSync(cp.path)) {
      const saved = await loadStats(cp.path);
      if (saved.model.headerSha256 !== identity.headerSha256) throw new MathneuroError('ESTATS', `checkpoint ${cp.path} belongs to another model`);
      const done = Number(saved.metadata.get('mathneuro.checkpoint.texts_done') ?? NaN);
      const expected = saved.metadata.get('mathneuro.checkpoint.text_count');
      if (!Number.isInteger(done) || done < 0 || done > texts.length || Number(expected) !== texts.length) throw new MathneuroError('ESTATS', `checkpoint ${cp.path} was made for another input (${String(expected)} texts, not ${texts.length})`);
      // same count is not enough: another data file or --seed would silently mix two inputs
      if (saved.metadata.get('mathneuro.checkpoint.texts_sha256') !== textsSha256(texts)) throw new MathneuroError('ESTATS', `checkpoint ${cp.path} was made for other texts (another data file, --samples or --seed); delete it or drop --resume`);
      // the head's statistics must cover every sample or none (checkpoints without the key predate the option and have them)
      const savedOutput = saved.metadata.get('mathneuro.checkpoint.include_output') ?? true;
      if (savedOutput !== includeOutput) throw new MathneuroError('ESTATS', `checkpoint ${cp.path} was collected ${savedOutput ? 'with' : 'without'} the output head's statistics; run again ${savedOutput ? 'with' : 'without'} --include-output, or delete it`);
      total = { model: identity, samples: saved.samples, tokens: saved.tokens, datasets: saved.datasets, weights: saved.weights };
      start = done;
    }
    const t0 = Date.now();
    const tokensAtStart = total.tokens;
    const onAbort = () => this.native.abort();
    options.signal?.addEventListener('abort', onAbort);
    try {
      for (let from = start; from < texts.length; from += every) {
        if (options.signal?.aborted) throw new MathneuroError('EABORT', 'statistics collection was cancelled');
        const chunk = texts.slice(from, Math.min(texts.length, from + every));
        const baseTokens = total.tokens;
        const r = await this.native.collect(chunk, (p) => {
          const elapsedMs = Date.now() - t0;
          const samplesDone = from + p.samplesDone;
          const rate = (samplesDone - start) / Math.max(1, elapsedMs);
          options.onProgress?.({
            samplesDone, samplesTotal: texts.length, tokensDone: baseTokens + p.tokensDone, elapsedMs,
            tokensPerSecond: (baseTokens + p.tokensDone - tokensAtStart) / Math.max(0.001, elapsedMs / 1000),
            etaMs: rate > 0 ? (texts.length - samplesDone) / rate : NaN,
          });
        }, options.addSpecial ?? true, { pack: options.pack ?? true, matmuls: options.matmuls ?? false, ...(includeOutput ? {} : { stopAfter: HEAD_INPUT_NODE }) });
        passes += r.decodes; passesWithoutHead += r.stopped; observeMs += r.observeMs;
        for (const m of r.matmuls ?? []) matmuls.set(m.name, { ...m, accepted: m.accepted || !!matmuls.get(m.name)?.accepted });
        if (r.aborted || options.signal?.aborted) throw new MathneuroError('EABORT', 'statistics collection was cancelled');
        const part: Stats = { model: identity, samples: r.samples, tokens: r.tokens, datasets: [], weights: new Map(r.weights.map((w) => [w.name, w])) };
        mergeInto(total, part);
        truncated.push(...r.truncated.map((i) => original(i + from)));
        empty.push(...r.empty.map((i) => original(i + from)));
        if (cp) {
          await saveStats(total, cp.path, {
            float64: true,
            extraMetadata: [
              { key: 'mathneuro.checkpoint.texts_done', type: GGUF_VALUE.UINT64, value: Math.min(texts.length, from + every) },
              { key: 'mathneuro.checkpoint.text_count', type: GGUF_VALUE.UINT64, value: texts.length },
              { key: 'mathneuro.checkpoint.texts_sha256', type: GGUF_VALUE.STRING, value: textsSha256(texts) },
              { key: 'mathneuro.checkpoint.include_output', type: GGUF_VALUE.BOOL, value: includeOutput },
            ],
          });
          // test hook (test/hardening/resume.test.ts): die like kill -9 right after the Nth checkpoint
          if (process.env.MATHNEURO_TEST_KILL_AFTER_CHECKPOINT && ++checkpointsSaved === Number(process.env.MATHNEURO_TEST_KILL_AFTER_CHECKPOINT)) process.kill(process.pid, 'SIGKILL');
        }
      }
    } catch (e) {
      throw asMathneuroError(e, 'EDECODE');
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
    return { stats: total, truncated, empty, unencodable: screened.skipped, elapsedMs: Date.now() - t0, passes, passesWithoutHead, observeMs, ...(options.matmuls ? { matmuls: [...matmuls.values()] } : {}) };
  }

  /**
   * Plain forward passes over `texts` with the same context settings and no statistics: the floor
   * that collection is measured against (benchmarks). `logits: 'last'` requests only the last token's
   * (llama.cpp's prompt processing); `skipHead` ends each pass at the final norm as collection does.
   */
  async forward(texts: string[], options: { pack?: boolean; logits?: 'all' | 'last'; skipHead?: boolean } = {}): Promise<{ samples: number; tokens: number; elapsedMs: number; passes: number; passesWithoutHead: number }> {
    screenTexts(this.gguf, texts.map((text, i) => ({ text, source: `text #${i}` })));
    const r = await this.native.collect(texts, undefined, true, { pack: options.pack ?? true, stats: false, logits: options.logits ?? 'all', ...(options.skipHead ? { stopAfter: HEAD_INPUT_NODE } : {}) });
    return { samples: r.samples, tokens: r.tokens, elapsedMs: r.elapsedMs, passes: r.decodes, passesWithoutHead: r.stopped };
  }

  /** Logits at every position of `tokens` (nTokens x nVocab, row-major), from a fresh state. */
  async logits(tokens: Int32Array): Promise<{ logits: Float32Array; nVocab: number; nTokens: number }> {
    try { return await this.native.logits(tokens); } catch (e) { throw asMathneuroError(e, 'EDECODE'); }
  }

  /** Cancel the running collection or forward pass. */
  abort() { this.native.abort(); }

  dispose() { this.native.dispose(); }
}

/** Identity of the input of a run: sha256 over the texts, each prefixed by its byte length. */
function textsSha256(texts: string[]): string {
  const h = createHash('sha256');
  for (const t of texts) { const b = Buffer.from(t, 'utf8'); const n = Buffer.alloc(8); n.writeBigUInt64LE(BigInt(b.length)); h.update(n).update(b); }
  return h.digest('hex');
}

function trainingContext(gguf: GgufInfo): number {
  const arch = gguf.metadata.get('general.architecture');
  const v = typeof arch === 'string' ? gguf.metadata.get(`${arch}.context_length`) : undefined;
  return typeof v === 'number' ? v : 0;
}

/** One call: open, collect, dispose. */
export async function collectStats(modelPath: string, texts: string[], options: CollectOptions = {}): Promise<CollectResult> {
  if (texts.length === 0) throw new MathneuroError('EUSAGE', 'no texts to collect statistics from');
  const model = await StatsModel.open(modelPath, options);
  try {
    const r = await model.collect(texts, options);
    if (options.checkpoint && !options.signal?.aborted) rmSync(options.checkpoint.path, { force: true });
    return r;
  } finally {
    model.dispose();
  }
}
