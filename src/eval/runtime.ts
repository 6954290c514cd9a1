// The llama.cpp side of evaluation, through node-llama-cpp: one model, one context with several
// sequences, greedy generation and log-probabilities; LlamaRuntime is this side's EvalRuntime
// (runtime-types.ts). Work on different sequences that runs concurrently is decoded in the same
// llama_decode batch by node-llama-cpp's batching.
import type { ChatHistoryItem, Llama, LlamaContext, LlamaContextSequence, LlamaModel, Token } from 'node-llama-cpp';
import type { ChatTurn } from './prompts.ts';
import type { EvalRuntime, EvalSlot, GenerateOptions, Generation, LogitRows } from './runtime-types.ts';
import { existsSync } from 'node:fs';
import { MathneuroError } from '../errors.ts';
import { validateModelFile } from '../gguf/model-check.ts';
import { assertEncodable } from '../gguf/encodable.ts';
import type { GgufInfo } from '../gguf/reader.ts';
import { cpuVariantOfPath, cpuVariantRequest, loadNative, mappedCpuVariantLibraries } from '../native.ts';

export interface RuntimeOptions {
  /** Use a GPU when node-llama-cpp finds one ("auto"), or the CPU only (false). Default: $MATHNEURO_GPU === '1' ? 'auto' : false. */
  gpu?: 'auto' | false;
  /** Layers offloaded to the GPU (-1: all); given, it decides the offload instead of `gpu`. */
  gpuLayers?: number;
  /** Logical batch size (default min(512, context x sequences)). */
  batchSize?: number;
  /** CPU threads for decoding. Default: $MATHNEURO_THREADS, else the number of math cores node-llama-cpp detects (more threads than cores makes ggml's spinning workers fight). */
  threads?: number;
  /** false: skip the semantic model checks (the GGUF validator still runs): you take the risk of an abort */
  modelChecks?: boolean;
}

const llamas = new Map<string, Promise<Llama>>();
const recentLlamaLog: string[] = [];

/** llama.cpp's own reason for the last refused model, from its log ("error loading model: <why>"). */
export function llamaLoadReason(lines: readonly string[]): string {
  let best = '';
  for (const line of lines.join('\n').split('\n')) {
    if (!line.trim() || line.includes('failed to load model')) continue;
    const m = line.indexOf('error loading model: ');
    if (m >= 0) best = line.slice(m + 'error loading model: '.length);
    else if (!best || line.includes('error')) best = line;
  }
  return best.replace(/ {2,}/g, ' ').trim();
}

/** One Llama instance per GPU setting for the whole process (loading the bindings takes ~0.5 s). */
export async function sharedLlama(options: RuntimeOptions = {}): Promise<Llama> {
  const gpu = options.gpu ?? (process.env.MATHNEURO_GPU === '1' ? 'auto' : false);
  const key = String(gpu);
  let llama = llamas.get(key);
  if (!llama) {
    llama = (async () => {
      const variant = cpuVariantRequest();
      // MATHNEURO_CPU_VARIANT: the prebuilt shim shares node-llama-cpp's libggml; registering its CPU
      // variant first makes node-llama-cpp find a CPU device and load no other (see native.ts).
      if (variant) loadNative();
      const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
      const verbose = process.env.MATHNEURO_LLAMA_LOG === '1';
      const instance = await getLlama({
        gpu, build: 'never', logLevel: verbose ? LlamaLogLevel.info : LlamaLogLevel.warn, progressLogs: false,
        // llama.cpp's warnings and errors are kept for the ELOAD message (its own reason for refusing a model)
        logger: (level, message) => {
          if (level === LlamaLogLevel.error || level === LlamaLogLevel.warn) { recentLlamaLog.push(message); if (recentLlamaLog.length > 32) recentLlamaLog.shift(); }
          if (verbose || level === LlamaLogLevel.error) process.stderr.write(message.endsWith('\n') ? message : message + '\n');
        },
      });
      if (variant) {
        // the shim's registry: one CPU device, the variant (node-llama-cpp added none)
        const cpus = loadNative().systemInfo().devices.filter((d) => d.type === 'cpu');
        // every ggml copy in the process: a GPU build of node-llama-cpp has its own and its own CPU variant
        const others = (mappedCpuVariantLibraries() ?? []).filter((f) => cpuVariantOfPath(f) !== variant);
        if (cpus.length !== 1 || cpuVariantOfPath(cpus[0]!.library) !== variant || others.length) {
          throw new MathneuroError('ENOBACKEND', `MATHNEURO_CPU_VARIANT=${variant} does not hold for node-llama-cpp (${instance.gpu ? `its ${instance.gpu} build` : 'its build'}): ` +
            `CPU backends ${[...cpus.map((d) => d.library), ...others].join(', ') || 'none'}; the variant covers CPU evaluation with the prebuilt CPU build (unset MATHNEURO_GPU)`);
        }
      }
      return instance;
    })();
    llamas.set(key, llama);
  }
  return llama;
}

/** A model with a multi-sequence context, ready for batched generation and scoring. */
export class EvalModel {
  private readonly free: LlamaContextSequence[] = [];
  private readonly waiters: Array<(s: LlamaContextSequence) => void> = [];
  context: LlamaContext | undefined;
  sequences: LlamaContextSequence[] = [];
  private constructor(
    readonly path: string,
    readonly llama: Llama,
    readonly model: LlamaModel,
    private readonly runtime: RuntimeOptions,
    readonly gguf: GgufInfo,
  ) {}

  /** Load the weights; call open() to create the context once the needed size is known. */
  static async load(modelPath: string, options: RuntimeOptions = {}): Promise<EvalModel> {
    if (process.env.MATHNEURO_TEST_REFUSE_LOAD === '1') throw new MathneuroError('ELOAD', 'model load refused (MATHNEURO_TEST_REFUSE_LOAD=1: a test asserting that nothing runs the model)');
    if (options.gpuLayers !== undefined) options = { ...options, gpu: options.gpuLayers !== 0 ? 'auto' : false };
    if (!existsSync(modelPath)) throw new MathneuroError('ENOENT', `model not found: ${modelPath}`);
    const gguf = validateModelFile(modelPath, options); // nothing reaches llama.cpp before the validator says yes
    const llama = await sharedLlama(options);
    let model: LlamaModel;
    recentLlamaLog.length = 0;
    try {
      model = await llama.loadModel({ modelPath, gpuLayers: options.gpuLayers !== undefined ? (options.gpuLayers < 0 ? 'max' : options.gpuLayers) : options.gpu === 'auto' ? 'auto' : 0 });
    } catch (e) {
      // node-llama-cpp delivers llama.cpp's log lines asynchronously: they may come after the rejection
      for (let waited = 0; waited < 2000 && !recentLlamaLog.some((l) => l.includes('failed to load model')); waited += 20) await new Promise((r) => setTimeout(r, 20));
      const why = llamaLoadReason(recentLlamaLog);
      throw new MathneuroError('ELOAD', `llama.cpp could not load ${modelPath}: ${why || (e as Error).message}`, { cause: e });
    }
    return new EvalModel(modelPath, llama, model, options, gguf);
  }

  /** Create the context: `parallel` sequences of `contextSize` tokens each (may exceed the training context; llama.cpp allows it). */
  async open(options: { parallel?: number; contextSize?: number } = {}): Promise<void> {
    if (this.context) throw new Error('context already open');
    const parallel = Math.max(1, Math.floor(options.parallel ?? 8));
    const contextSize = Math.max(64, options.contextSize ?? 2048);
    try {
      this.context = await this.model.createContext({
        sequences: parallel, contextSize, flashAttention: false,
        threads: this.runtime.threads ?? (Number(process.env.MATHNEURO_THREADS) || this.llama.cpuMathCores),
        batchSize: this.runtime.batchSize ?? Math.min(512, contextSize * parallel), failedCreationRemedy: false,
      });
    } catch (e) {
      throw new MathneuroError('ELOAD', `could not create a ${parallel} x ${contextSize}-token context for ${this.path}: ${(e as Error).message} (lower --parallel or --ctx)`, { cause: e });
    }
    serializeFirstSampleAfterDecode(this.context);
    this.sequences = Array.from({ length: parallel }, () => this.context!.getSequence());
    this.free.push(...this.sequences);
  }

  get contextSize(): number { return this.sequences[0]?.contextSize ?? 0; }

  /** Text to tokens, with BOS in front when the model wants one. */
  tokenize(text: string, addBos = true): Token[] {
    assertEncodable(this.gguf, text, this.path); // a throw instead of the tokenizer's abort
    const tokens = this.model.tokenize(text, false);
    const bos = this.model.tokens.bos;
    if (addBos && bos !== null && this.model.tokens.shouldPrependBosToken && tokens[0] !== bos) return [bos, ...tokens];
    return tokens;
  }

  /** Text that may hold special tokens (rendered chat templates) to tokens. */
  tokenizeWithSpecialTokens(text: string): Token[] {
    assertEncodable(this.gguf, text, this.path);
    return this.model.tokenize(text, true);
  }

  /** Chat turns rendered with the model's own chat template (node-llama-cpp picks the wrapper from the GGUF), ready for the assistant's reply. */
  async chatPromptTokens(turns: readonly ChatTurn[]): Promise<Token[]> {
    const { resolveChatWrapper } = await import('node-llama-cpp');
    const wrapper = resolveChatWrapper(this.model);
    const chatHistory: ChatHistoryItem[] = [];
    for (const turn of turns) {
      assertEncodable(this.gguf, turn.user + (turn.assistant ?? ''), this.path);
      chatHistory.push({ type: 'user', text: turn.user });
      if (turn.assistant !== undefined) chatHistory.push({ type: 'model', response: [turn.assistant] });
    }
    chatHistory.push({ type: 'model', response: [] });
    const { contextText } = wrapper.generateContextState({ chatHistory });
    return contextText.tokenize(this.model.tokenizer);
  }

  /** Borrow a sequence for one job; jobs beyond the number of sequences wait. */
  async withSequence<T>(job: (sequence: LlamaContextSequence) => Promise<T>): Promise<T> {
    if (!this.context) throw new Error('open() the model first');
    const sequence = this.free.pop() ?? (await new Promise<LlamaContextSequence>((resolve) => this.waiters.push(resolve)));
    try {
      return await job(sequence);
    } finally {
      const next = this.waiters.shift();
      if (next) next(sequence); else this.free.push(sequence);
    }
  }

  async dispose(): Promise<void> {
    await this.context?.dispose();
    await this.model.dispose();
  }
}

/**
 * The fix of batched greedy generation crossing tokens between sequences (node-llama-cpp 3.21.1).
 * After a multi-sequence llama_decode, llama.cpp may hold its output rows in another order than the
 * batch's (llama_kv_cache::init_batch splits with split_equal when the K/V cache has one stream per
 * sequence, node-llama-cpp's default) and records the swaps that restore it (output_swaps); the first
 * llama_get_logits_ith / llama_get_sampled_*_ith applies them and clears the list
 * (llama_context::output_reorder, no lock). node-llama-cpp samples every sequence of the batch at
 * once (LlamaContext.js, dispatchPendingBatch -> decodeTokenBatchItems: the logitDataMappers of all
 * afterDecodeActions, each an AddonContextSampleTokenWorker on the libuv pool, AddonSampler::
 * setTokenCandidates -> llama_get_logits_ith), so two workers could apply the swaps together (twice:
 * undone) or read a row while another swapped it, and a sequence sampled another sequence's row.
 * Here the first sampleToken after each decodeBatch runs alone; the rest start once it is done (the
 * swaps are then applied and the list is empty), so sampling still runs in parallel.
 */
function serializeFirstSampleAfterDecode(context: LlamaContext): void {
  type Native = { decodeBatch(...args: unknown[]): Promise<unknown>; sampleToken(...args: unknown[]): Promise<unknown> };
  const native = (context as unknown as { _ctx?: Native })._ctx;
  if (!native || typeof native.decodeBatch !== 'function' || typeof native.sampleToken !== 'function') {
    throw new Error('node-llama-cpp internals changed (LlamaContext._ctx.decodeBatch / sampleToken): check the output_reorder race fix in src/eval/runtime.ts');
  }
  const decodeBatch = native.decodeBatch.bind(native);
  const sampleToken = native.sampleToken.bind(native);
  let reorderPending = false;
  let first: Promise<unknown> = Promise.resolve();
  // own properties over the addon's read-only prototype methods
  Object.defineProperty(native, 'decodeBatch', { configurable: true, value: async (...args: unknown[]) => {
    const out = await decodeBatch(...args);
    reorderPending = true;
    return out;
  } });
  Object.defineProperty(native, 'sampleToken', { configurable: true, value: (...args: unknown[]) => {
    if (reorderPending) {
      reorderPending = false;
      const p = sampleToken(...args);
      first = p.catch(() => undefined);
      return p;
    }
    return first.then(() => sampleToken(...args));
  } });
}

export type { GenerateOptions, Generation } from './runtime-types.ts';

/** One node-llama-cpp sequence as an evaluation slot. */
export function sequenceSlot(model: EvalModel, sequence: LlamaContextSequence): EvalSlot {
  return {
    greedy: (tokens, options) => generateGreedy(model, sequence, tokens as Token[], options),
    tokenNegativeLogLikelihoods: (tokens, first) => tokenNegativeLogLikelihoods(sequence, tokens as Token[], first),
    continuationLogLikelihoods: (context, continuations) => continuationLogLikelihoods(model, sequence, context, continuations),
    logits: async (tokens): Promise<LogitRows> => {
      // node-llama-cpp gives probabilities, not logits: rows of log-probabilities (their log-softmax is themselves)
      const dists = await nextTokenDistributions(model, sequence, [...tokens, 0] as Token[]);
      const nVocab = dists[0]?.length ?? 0;
      const logits = new Float32Array(dists.length * nVocab);
      dists.forEach((d, i) => { for (let v = 0; v < nVocab; v++) logits[i * nVocab + v] = safeLog(d[v]); });
      return { logits, nVocab };
    },
  };
}

/** An opened EvalModel as an EvalRuntime: one slot per sequence. */
export class LlamaRuntime implements EvalRuntime {
  constructor(readonly model: EvalModel) {}
  get path(): string { return this.model.path; }
  get places(): number { return this.model.sequences.length; }
  get contextSize(): number { return this.model.contextSize; }
  tokenize(text: string, addBos = true): Token[] { return this.model.tokenize(text, addBos); }
  /** Chat turns rendered with the model's chat template (node-llama-cpp only). */
  chatPromptTokens(turns: readonly ChatTurn[]): Promise<Token[]> { return this.model.chatPromptTokens(turns); }
  withSlot<T>(use: (slot: EvalSlot) => Promise<T>): Promise<T> { return this.model.withSequence((sequence) => use(sequenceSlot(this.model, sequence))); }
  close(): Promise<void> { return this.model.dispose(); }
}

/** Keep the cached state a sequence shares with `tokens` (a few-shot prefix), drop the rest; returns the tokens still to evaluate (at least one). */
async function alignSequence(sequence: LlamaContextSequence, tokens: readonly Token[]): Promise<Token[]> {
  const { firstDifferentIndex } = sequence.compareContextTokens(tokens as Token[]);
  const keep = Math.min(firstDifferentIndex, tokens.length - 1);
  if (keep < sequence.nextTokenIndex) await sequence.eraseContextTokenRanges([{ start: keep, end: sequence.nextTokenIndex }]);
  return tokens.slice(keep);
}

/** Greedy generation on one sequence; a prompt that shares a prefix with the sequence's state reuses it. */
export async function generateGreedy(model: EvalModel, sequence: LlamaContextSequence, promptTokens: readonly Token[], options: GenerateOptions = {}): Promise<Generation> {
  const maxTokens = options.maxTokens ?? 256;
  const stops = options.stopStrings ?? [];
  if (promptTokens.length + maxTokens > sequence.contextSize) {
    throw new MathneuroError('EEVAL', `prompt (${promptTokens.length} tokens) + ${maxTokens} new tokens does not fit the ${sequence.contextSize}-token context; raise --ctx or lower --max-tokens`);
  }
  const pending = await alignSequence(sequence, promptTokens);
  const generated: Token[] = [];
  let text = '';
  let stoppedBy: Generation['stoppedBy'] = 'eog';
  const longestStop = Math.max(0, ...stops.map((s) => s.length));
  for await (const token of sequence.evaluate(pending, { temperature: 0 })) {
    if (options.signal?.aborted) throw new MathneuroError('EABORT', 'evaluation cancelled');
    generated.push(token);
    text = model.model.detokenize(generated);
    if (stops.length) {
      const tail = text.slice(Math.max(0, text.length - longestStop - 16));
      if (stops.some((s) => tail.includes(s))) { stoppedBy = 'stop-string'; break; }
    }
    if (generated.length >= maxTokens) { stoppedBy = 'max-tokens'; break; }
  }
  if (stoppedBy === 'stop-string') {
    let cut = text.length;
    for (const s of stops) { const i = text.indexOf(s); if (i >= 0 && i < cut) cut = i; }
    text = text.slice(0, cut);
  }
  return { text, tokens: generated.length, stoppedBy };
}

/** Natural log of a probability, floored at the smallest float so an underflowed 0 stays finite. */
export function safeLog(p: number | undefined): number {
  return Math.log(Math.max(p ?? 0, 1.4e-45));
}

/**
 * Sum of log-probabilities of each continuation given a shared context, as lm-eval-harness
 * computes it: each full text is tokenized whole, the scored tokens are those after the
 * context's tokens (where the full tokenization still agrees with the context's).
 */
export async function continuationLogLikelihoods(model: EvalModel, sequence: LlamaContextSequence, context: string, continuations: readonly string[]): Promise<{ logLikelihoods: number[]; tokenCounts: number[]; greedy: boolean[] }> {
  const contextTokens = model.tokenize(context);
  const fulls = continuations.map((c) => model.tokenize(context + c));
  let split = contextTokens.length;
  for (const full of fulls) {
    let k = 0;
    while (k < split && k < full.length && full[k] === contextTokens[k]) k++;
    split = Math.min(split, k);
  }
  split = Math.max(1, split);
  const longest = Math.max(...fulls.map((f) => f.length));
  if (longest > sequence.contextSize) throw new MathneuroError('EEVAL', `an item needs ${longest} tokens, more than the ${sequence.contextSize}-token context; raise --ctx`);
  // The shared part once, with the next-token distribution at its last position.
  const prefix = fulls[0]!.slice(0, split);
  const pending = await alignSequence(sequence, prefix);
  const first = await sequence.controlledEvaluate(pending.map((t, i) => (i === pending.length - 1 ? [t, { generateNext: { probabilities: true } }] : t)));
  const firstDistribution = first[pending.length - 1]!.next.probabilities!;
  const logLikelihoods: number[] = [], tokenCounts: number[] = [], greedy: boolean[] = [];
  for (const full of fulls) {
    const scored = full.slice(split);
    let sum = safeLog(firstDistribution.get(scored[0]!));
    let isGreedy = firstDistribution.keys().next().value === scored[0];
    if (scored.length > 1) {
      const rest = scored.slice(0, -1);
      const out = await sequence.controlledEvaluate(rest.map((t) => [t, { generateNext: { probabilities: true } }]));
      for (let i = 0; i < rest.length; i++) {
        const dist = out[i]!.next.probabilities!;
        sum += safeLog(dist.get(scored[i + 1]!));
        isGreedy &&= dist.keys().next().value === scored[i + 1];
      }
      await sequence.eraseContextTokenRanges([{ start: split, end: sequence.nextTokenIndex }]);
    }
    logLikelihoods.push(sum);
    tokenCounts.push(scored.length);
    greedy.push(isGreedy);
  }
  return { logLikelihoods, tokenCounts, greedy };
}

/** Next-token distributions (dense, by token id) at every position of `tokens` but the last, from a fresh state. */
export async function nextTokenDistributions(model: EvalModel, sequence: LlamaContextSequence, tokens: readonly Token[]): Promise<Float32Array[]> {
  await sequence.clearHistory();
  const out = await sequence.controlledEvaluate(tokens.slice(0, -1).map((t) => [t, { generateNext: { probabilities: true } }]));
  const dists: Float32Array[] = [];
  for (let i = 0; i < tokens.length - 1; i++) {
    const map = out[i]!.next.probabilities!;
    const dense = new Float32Array(map.size);   // the map holds the whole vocabulary (greedy sampler, no truncation)
    for (const [token, p] of map) if (token < map.size) dense[token] = p;
    dists.push(dense);
  }
  return dists;
}

/** Negative log-likelihood of each token after the first `first` ones, given all before it (one evaluation, fresh state). */
export async function tokenNegativeLogLikelihoods(sequence: LlamaContextSequence, tokens: readonly Token[], first: number): Promise<number[]> {
  await sequence.clearHistory();
  const out = await sequence.controlledEvaluate(tokens.slice(0, -1).map((t, i) => (i >= first - 1 ? [t, { generateNext: { probabilities: true } }] : t)));
  const nll: number[] = [];
  for (let i = Math.max(0, first - 1); i < tokens.length - 1; i++) nll.push(-safeLog(out[i]!.next.probabilities!.get(tokens[i + 1]!)));
  return nll;
}
