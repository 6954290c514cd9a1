// The shapes of evaluation: the tasks, their options, progress reports and results (evaluate.ts
// re-exports them; tasks/ fill them in).
import type { Interval } from './confidence.ts';
import type { RuntimeOptions } from './runtime.ts';

export type EvalTask = 'gsm8k' | 'math500' | 'mmlu' | 'ppl' | 'kl';
export const evalTasks: readonly EvalTask[] = ['gsm8k', 'math500', 'mmlu', 'ppl', 'kl'];

export interface EvalProgress {
  /** Which model is running: "model" or "reference" (--vs). */
  side: 'model' | 'reference';
  phase: 'hash' | 'load' | 'run' | 'done';
  done: number;
  total: number;
  /** Items answered from the cache (part of `done`). */
  cached: number;
  elapsedMs: number;
  /** Estimated time left for this side, from the rate of items evaluated so far. */
  etaMs: number;
  /** Generated tokens per second (generation tasks), or evaluated tokens per second. */
  tokensPerSecond: number;
}

export interface EvaluateOptions extends RuntimeOptions {
  /** The GGUF to evaluate. */
  model: string;
  /** A reference GGUF evaluated on the same items; results then carry the paired difference (model - reference). Required for kl. */
  vs?: string;
  task: EvalTask;
  /** Evaluation data: gsm8k/math500 JSON lines, mmlu a directory or CSV, ppl a text file, kl a text/JSON-lines file or MMLU directory. Default: the shared data directory's file (ppl has none). */
  data?: string;
  /** gsm8k: the JSON-lines file few-shot exemplars are drawn from (never the test file). Default: gsm8k_train.jsonl in the shared data directory. */
  train?: string;
  /** Evaluate the first N items (prompts for kl, chunks for ppl). Default: all (kl: 32). */
  limit?: number;
  /** Seed of the exemplar draw (gsm8k) and the prompt sample (kl). Default 1234. */
  seed?: number;
  /** Few-shot exemplars: gsm8k default 8, math500 default 4. */
  shots?: number;
  /** Use the model's chat template (instruct models) for gsm8k and math500. Default false. */
  chat?: boolean;
  /** New tokens per answer: gsm8k default 256, math500 default 512. */
  maxTokens?: number;
  /** Sequences decoded together in one batch. Default 8 (kl: one prompt at a time). 1 = one at a time. */
  parallel?: number;
  /** Tokens per sequence; default: what the longest prompt needs. */
  contextSize?: number;
  /** mmlu: score the answer letter (" A") or the choice text. Default "letter". */
  mmluMode?: 'letter' | 'choice';
  /** mmlu: only these subjects. Default all. */
  subjects?: string[];
  /** ppl: tokens per chunk (llama-perplexity's -c). Default 512. */
  chunkSize?: number;
  /** kl: tokens per prompt. Default 128. */
  klTokens?: number;
  /** Result cache directory; default $MATHNEURO_CACHE_DIR or ~/.cache/mathneuro/eval. */
  cacheDir?: string;
  /** false: evaluate everything again and write nothing. Default true. */
  cache?: boolean;
  /**
   * false (only with cache: false): the model files are not hashed and the results' sha256 fields are
   * empty. For callers that compare files they have just written and report no digests (boost's
   * check): hashing two multi-GB files is seconds of work that nothing reads. Default true.
   */
  identify?: boolean;
  onProgress?: (progress: EvalProgress) => void;
  signal?: AbortSignal;
  /** kl and ppl: leave out prompts (ppl: lines) with characters the vocabulary cannot encode instead of failing before the first forward pass */
  skipUnencodable?: boolean;
}

export interface Metric {
  /** "strict", "overall", "math subjects", "algebra", "level 3", ... */
  name: string;
  /** "main" for the headline figures, else what the breakdown is by ("subject", "level"). */
  group: string;
  kind: 'accuracy' | 'mean' | 'perplexity';
  value: number;
  ci95: Interval;
  count: number;
  correct?: number;
  reference?: { value: number; ci95: Interval; correct?: number };
  /** model - reference on the same items. */
  difference?: { value: number; ci95: Interval; pValue: number; test: 'mcnemar-exact' | 'paired-z'; onlyModel?: number; onlyReference?: number };
}

export interface ModelRunInfo {
  path: string;
  sha256: string;
  /** Items evaluated now (not from the cache). */
  evaluated: number;
  cached: number;
  elapsedMs: number;
  /** Generation tasks: tokens generated now, and per second of generation wall time. */
  generatedTokens?: number;
  tokensPerSecond?: number;
}

export interface EvalResult {
  task: EvalTask;
  settings: Record<string, unknown>;
  model: ModelRunInfo;
  reference?: ModelRunInfo;
  items: number;
  metrics: Metric[];
  /** Per-item records (model side; reference side under `referenceItems`). */
  itemResults: Array<Record<string, unknown> & { id: string }>;
  referenceItemResults?: Array<Record<string, unknown> & { id: string }>;
}
