// The native shim as an evaluation runtime (EvalRuntime, runtime-types.ts): native/model.cpp's Model,
// one llama.cpp context with one sequence, full-vocabulary logits of every position (kl), greedy
// completion and per-token loss (the arithmetic fixture). Its log-softmax runs here in float64
// (divergence.ts). The fixture opens it as the trainer's evaluation did: weights read into memory
// without repacking, F32 K/V cache, no flash attention, the model's training context as one batch.
import os from 'node:os';
import { MathneuroError, asMathneuroError } from '../errors.ts';
import { assertEncodable } from '../gguf/encodable.ts';
import { checkModel, emitModelWarnings } from '../gguf/model-check.ts';
import { openModelSync } from '../gguf/model.ts';
import type { GgufInfo } from '../gguf/reader.ts';
import { loadNative, type NativeLoadOptions } from '../native.ts';
import type { NativeModel } from '../stats/collect.ts';
import { logSoftmaxRow } from './divergence.ts';
import type { ContinuationScores, EvalRuntime, EvalSlot, GenerateOptions, Generation, LogitRows, TokenId } from './runtime-types.ts';

/** How the shim's context is made (NativeLoadOptions; nCtx defaults to the model's training context, at most 4096). */
export interface NativeRuntimeOptions extends NativeLoadOptions {
  /** false: skip the semantic model checks (the GGUF validator still runs). */
  modelChecks?: boolean;
}

function trainingContext(gguf: GgufInfo): number {
  const arch = gguf.metadata.get('general.architecture');
  const v = typeof arch === 'string' ? gguf.metadata.get(`${arch}.context_length`) : undefined;
  return typeof v === 'number' ? v : 0;
}

/** A model open in the shim: one slot (jobs run one at a time, in order). */
export class NativeRuntime implements EvalRuntime {
  readonly places = 1;
  private queue: Promise<void> = Promise.resolve();
  private readonly slot: EvalSlot;
  private constructor(readonly path: string, readonly gguf: GgufInfo, readonly native: NativeModel, readonly nVocab: number, readonly contextSize: number) {
    this.slot = {
      greedy: (tokens, options) => this.greedy(tokens, options),
      tokenNegativeLogLikelihoods: (tokens, first) => this.tokenNegativeLogLikelihoods(tokens, first),
      continuationLogLikelihoods: (context, continuations) => this.continuationLogLikelihoods(context, continuations),
      logits: (tokens) => this.logits(tokens),
    };
  }

  /** Validate (nothing reaches llama.cpp before the validator and the model checks say yes) and load. */
  static async open(modelPath: string, options: NativeRuntimeOptions = {}): Promise<NativeRuntime> {
    if (process.env.MATHNEURO_TEST_REFUSE_LOAD === '1') throw new MathneuroError('ELOAD', 'model load refused (MATHNEURO_TEST_REFUSE_LOAD=1: a test asserting that nothing runs the model)');
    const gguf = openModelSync(modelPath); // every shard of a split model
    emitModelWarnings(gguf, checkModel(gguf, options));
    const { modelChecks: _checks, ...given } = options;
    const load = Object.fromEntries(Object.entries(given).filter(([, v]) => v !== undefined)) as NativeLoadOptions;
    const nCtx = load.nCtx ?? Math.min(trainingContext(gguf) || 4096, 4096);
    const nBatch = load.nBatch ?? 512;
    let native: NativeModel;
    try {
      native = await loadNative().loadModel(modelPath, {
        nThreads: os.availableParallelism(), nGpuLayers: 0, flashAttn: 'auto', kvType: 'f16', ...load, nCtx, nBatch,
        // llama.cpp asserts n_seq_max <= n_batch (<= n_ctx)
        nSeqMax: Math.max(1, Math.min(load.nSeqMax ?? 1, nCtx, nBatch)),
      });
    } catch (e) {
      throw asMathneuroError(e, 'ELOAD');
    }
    const info = native.info();
    return new NativeRuntime(modelPath, gguf, native, info.nVocab, info.nCtx);
  }

  tokenize(text: string, addBos = true): TokenId[] {
    assertEncodable(this.gguf, text, this.path); // a throw instead of llama.cpp's abort
    return [...this.native.tokenize(text, addBos)];
  }

  withSlot<T>(use: (slot: EvalSlot) => Promise<T>): Promise<T> {
    const turn = this.queue.then(() => use(this.slot));
    this.queue = turn.then(() => undefined, () => undefined);
    return turn;
  }

  async close(): Promise<void> {
    await this.queue;
    this.native.dispose();
  }

  /** Every position's logits; into `out` when given (reused across calls: at least tokens x nVocab values). */
  async logits(tokens: readonly TokenId[], out?: Float32Array): Promise<LogitRows> {
    if (tokens.length > this.contextSize) throw new MathneuroError('EEVAL', `a text of ${tokens.length} tokens does not fit the context of ${this.contextSize} tokens`);
    try {
      const r = await this.native.logits(Int32Array.from(tokens), out);
      return { logits: r.logits, nVocab: r.nVocab };
    } catch (e) { throw asMathneuroError(e, 'EDECODE'); }
  }

  async tokenNegativeLogLikelihoods(tokens: readonly TokenId[], first: number): Promise<number[]> {
    if (tokens.length < 2) return [];
    const { logits, nVocab } = await this.logits(tokens);
    const row = new Float64Array(nVocab);
    const nll: number[] = [];
    for (let i = Math.max(0, first - 1); i + 1 < tokens.length; i++) {
      logSoftmaxRow(logits, i * nVocab, nVocab, row);
      nll.push(-row[tokens[i + 1]!]!);
    }
    return nll;
  }

  async continuationLogLikelihoods(context: string, continuations: readonly string[]): Promise<ContinuationScores> {
    const contextTokens = this.tokenize(context);
    const scores: ContinuationScores = { logLikelihoods: [], tokenCounts: [], greedy: [] };
    for (const c of continuations) {
      const full = this.tokenize(context + c);
      let split = 0;
      while (split < contextTokens.length && split < full.length && full[split] === contextTokens[split]) split++;
      split = Math.max(1, split);
      const { logits, nVocab } = await this.logits(full);
      const row = new Float64Array(nVocab);
      let sum = 0, greedy = true;
      for (let i = split; i < full.length; i++) {
        logSoftmaxRow(logits, (i - 1) * nVocab, nVocab, row);
        sum += row[full[i]!]!;
        let top = 0;
        for (let v = 1; v < nVocab; v++) if (row[v]! > row[top]!) top = v;
        greedy &&= top === full[i];
      }
      scores.logLikelihoods.push(sum);
      scores.tokenCounts.push(full.length - split);
      scores.greedy.push(greedy);
    }
    return scores;
  }

  async greedy(promptTokens: readonly TokenId[], options: GenerateOptions = {}): Promise<Generation> {
    const maxTokens = options.maxTokens ?? 256;
    if (options.signal?.aborted) throw new MathneuroError('EABORT', 'evaluation cancelled');
    if (promptTokens.length + maxTokens > this.contextSize) {
      throw new MathneuroError('EEVAL', `prompt (${promptTokens.length} tokens) + ${maxTokens} new tokens does not fit the ${this.contextSize}-token context`);
    }
    try {
      const r = await this.native.greedy(Int32Array.from(promptTokens), maxTokens, [...(options.stopStrings ?? [])]);
      return { text: r.text, tokens: r.tokens.length, stoppedBy: r.stoppedBy };
    } catch (e) { throw asMathneuroError(e, 'EDECODE'); }
  }
}

/**
 * Logits of every position of a prompt, on both models of a pair (row i predicts token i + 1). model and
 * reference are views of the pair's reused buffers: read them before the next logits() call.
 */
export interface PairLogits { tokens: Int32Array; model: Float32Array; reference: Float32Array; nVocab: number }

/** A model and its reference open together in the shim, one prompt at a time (kl). */
export class NativeModelPair {
  /** each side's logits land here, prompt after prompt (a fresh 66 MB array per prompt and side cost page faults) */
  private buffers: [Float32Array, Float32Array] | undefined;
  private constructor(private readonly model: NativeRuntime, private readonly reference: NativeRuntime) {}

  /**
   * Open both (the same vocabulary size, or EUSAGE); nothing stays open when one fails. The two loads
   * run at once: each is mostly one thread (reading, repacking weights for the CPU), so on two cores
   * opening the pair costs about what opening one does.
   */
  static async open(modelPath: string, referencePath: string, options: NativeRuntimeOptions): Promise<NativeModelPair> {
    const [model, reference] = await Promise.allSettled([NativeRuntime.open(modelPath, options), NativeRuntime.open(referencePath, options)]);
    try {
      if (model.status === 'rejected') throw model.reason;
      if (reference.status === 'rejected') throw reference.reason;
      if (model.value.nVocab !== reference.value.nVocab) throw new MathneuroError('EUSAGE', 'the two models have different vocabularies; kl needs the same one');
    } catch (e) {
      if (reference.status === 'fulfilled') await reference.value.close();
      if (model.status === 'fulfilled') await model.value.close();
      throw e;
    }
    return new NativeModelPair(model.value, reference.value);
  }

  /** The first `maxTokens` tokens of `text` (the same on both, or EUSAGE) and, from two of them on, both models' logits. */
  async logits(text: string, maxTokens: number): Promise<PairLogits> {
    const tokens = this.model.tokenize(text).slice(0, maxTokens);
    const referenceTokens = this.reference.tokenize(text).slice(0, maxTokens);
    if (tokens.join(',') !== referenceTokens.join(',')) throw new MathneuroError('EUSAGE', 'the two models tokenize differently; kl needs the same vocabulary');
    if (tokens.length < 2) return { tokens: Int32Array.from(tokens), model: new Float32Array(0), reference: new Float32Array(0), nVocab: 0 };
    // the returned rows are views of the pair's buffers: valid until the next logits() call
    const need = tokens.length * this.reference.nVocab;
    if (!this.buffers || this.buffers[0].length < need) {
      const size = Math.max(need, maxTokens * this.reference.nVocab);
      this.buffers = [new Float32Array(size), new Float32Array(size)];
    }
    const [modelRows, referenceRows] = this.buffers;
    const q = await this.model.withSlot(() => this.model.logits(tokens, modelRows));
    const p = await this.reference.withSlot(() => this.reference.logits(tokens, referenceRows));
    return { tokens: Int32Array.from(tokens), model: q.logits, reference: p.logits, nVocab: p.nVocab };
  }

  async dispose(): Promise<void> {
    await this.reference.close();
    await this.model.close();
  }
}

/** Options of the fixture's evaluation (greedy completion, text loss). */
export interface NativeEvalOptions {
  /** CPU threads. Default 1 (the fixture is tiny; more threads only wait on each other on a busy machine). */
  threads?: number;
}

/** The shim opened as the trainer's evaluation was: in memory, no repacked weights, F32 K/V, no flash attention, the training context as one batch. */
export async function openFixtureRuntime(modelPath: string, options: NativeEvalOptions = {}): Promise<NativeRuntime> {
  try {
    return await NativeRuntime.open(modelPath, { nThreads: options.threads ?? 1, useMmap: false, repack: false, kvType: 'f32', flashAttn: 'off', nSeqMax: 1, nBatch: 1 << 20, kvUnified: false });
  } catch (e) {
    const err = e as Error & { code?: string };
    throw new MathneuroError(err.code === 'EUSAGE' || err.code === 'ENOENT' ? err.code : 'EEVAL', err.message, { cause: e });
  }
}
