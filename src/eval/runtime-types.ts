// The evaluation runtime interface: what the tasks, kl and the fixture evaluation need from a loaded
// model (a forward pass scored per token, logits rows, greedy completion with stop conditions), with
// two implementations: node-llama-cpp (llama-runtime.ts, over runtime.ts's EvalModel: several
// sequences of one context, decoded in the same batch) and the native shim (native-runtime.ts, over
// native/model.cpp's Model: one llama.cpp context, one sequence).

/** Token ids of the model's vocabulary. */
export type TokenId = number;

export interface GenerateOptions {
  /** Stop after this many new tokens. Default 256. */
  maxTokens?: number;
  /** Stop (and cut the text) at the first of these strings. Default none. */
  stopStrings?: readonly string[];
  signal?: AbortSignal;
}

export interface Generation {
  text: string;
  tokens: number;
  /** Why generation ended: a stop string, an end-of-generation token, or the token limit. */
  stoppedBy: 'stop-string' | 'eog' | 'max-tokens';
}

/** Log-likelihoods of continuations after a shared context (lm-eval-harness's way: each full text tokenized whole). */
export interface ContinuationScores { logLikelihoods: number[]; tokenCounts: number[]; greedy: boolean[] }

/** Logits of every position of a token sequence: row i (nVocab floats) predicts token i + 1. */
export interface LogitRows { logits: Float32Array; nVocab: number }

/** One place where items are evaluated (a node-llama-cpp sequence, or the shim's context). */
export interface EvalSlot {
  /** Greedy continuation of `promptTokens` (a prompt that shares a prefix with the slot's state may reuse it). */
  greedy(promptTokens: readonly TokenId[], options?: GenerateOptions): Promise<Generation>;
  /** Negative log-likelihood of each token after the first `first`, given all before it (one pass, fresh state). */
  tokenNegativeLogLikelihoods(tokens: readonly TokenId[], first: number): Promise<number[]>;
  /** Sum of log-probabilities of each continuation after `context`. */
  continuationLogLikelihoods(context: string, continuations: readonly string[]): Promise<ContinuationScores>;
  /** Logits (or log-probabilities: a row's log-softmax is the next-token distribution either way) of every position of `tokens`, fresh state. */
  logits(tokens: readonly TokenId[]): Promise<LogitRows>;
}

/** A loaded model ready to evaluate: tokenization, `places` slots (jobs beyond them wait), and close. */
export interface EvalRuntime {
  readonly path: string;
  /** Slots that evaluate at once. */
  readonly places: number;
  /** Tokens of a slot's context. */
  readonly contextSize: number;
  /** Text to tokens, with BOS in front when the model wants one (and `addBos`). */
  tokenize(text: string, addBos?: boolean): TokenId[];
  /** Borrow a slot for one job; jobs beyond `places` wait for a free one. */
  withSlot<T>(use: (slot: EvalSlot) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}
