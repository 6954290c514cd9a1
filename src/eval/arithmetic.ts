// Evaluation of the trained arithmetic fixture (test/fixtures/arith): exact-match accuracy of greedy
// completions of held-out addition problems, and mean per-token loss of held-out sentences. Runs in
// native/train.cpp (a fresh llama.cpp context, batch of one, own log-softmax), so it works on any
// copy of the model: patched, quantized or requantized.
import { existsSync } from 'node:fs';
import { MathneuroError } from '../errors.ts';
import { validateModelFile } from '../gguf/model-check.ts';
import { loadNative } from '../native.ts';

export interface NativeEvalOptions {
  /** CPU threads. Default 1 (the fixture is tiny; more threads only wait on each other on a busy machine). */
  threads?: number;
}

export interface ArithmeticItem {
  /** Given after BOS, e.g. "37+45=". */
  prompt: string;
  /** Expected completion before the newline, e.g. "82". */
  answer: string;
}

export interface ArithmeticResult {
  correct: number;
  total: number;
  accuracy: number;
  completions: string[];
}

export interface TextLossResult {
  /** Total negative log-likelihood over all tokens divided by their number (nats/token). */
  meanLossPerToken: number;
  tokens: number;
  perText: { negativeLogLikelihood: number; tokens: number }[];
}

function checkModel(modelPath: string): void {
  if (!existsSync(modelPath)) throw new MathneuroError('ENOENT', `model not found: ${modelPath}`);
  validateModelFile(modelPath); // nothing reaches llama.cpp before the validator says yes
}

function asEvalError(e: unknown): MathneuroError {
  const err = e as Error & { code?: string };
  return new MathneuroError(err.code === 'EUSAGE' ? 'EUSAGE' : 'EEVAL', err.message, { cause: e });
}

/** Greedy completions (after BOS + prompt) up to the first newline, at most maxNewTokens tokens. */
export async function greedyCompletions(modelPath: string, prompts: string[], options: NativeEvalOptions & { maxNewTokens?: number } = {}): Promise<string[]> {
  checkModel(modelPath);
  try {
    return await loadNative().greedyComplete(modelPath, prompts, { threads: options.threads ?? 1, maxNewTokens: options.maxNewTokens ?? 6, stop: '\n' });
  } catch (e) { throw asEvalError(e); }
}

/** Exact-match accuracy: the completion before the newline must equal the answer. */
export async function arithmeticAccuracy(modelPath: string, items: ArithmeticItem[], options: NativeEvalOptions = {}): Promise<ArithmeticResult> {
  const maxAnswer = Math.max(1, ...items.map((i) => i.answer.length));
  const completions = await greedyCompletions(modelPath, items.map((i) => i.prompt), { ...options, maxNewTokens: maxAnswer + 2 });
  const correct = completions.filter((c, i) => c === items[i].answer).length;
  return { correct, total: items.length, accuracy: items.length ? correct / items.length : NaN, completions };
}

/** Mean per-token loss of the texts, each scored after BOS (every token of the text predicted). */
export async function meanTextLoss(modelPath: string, texts: string[], options: NativeEvalOptions = {}): Promise<TextLossResult> {
  checkModel(modelPath);
  let raw: { negativeLogLikelihood: Float64Array; tokenCounts: Float64Array };
  try {
    raw = await loadNative().textLoss(modelPath, texts, { threads: options.threads ?? 1 });
  } catch (e) { throw asEvalError(e); }
  let nll = 0;
  let tokens = 0;
  const perText = texts.map((_, i) => {
    nll += raw.negativeLogLikelihood[i];
    tokens += raw.tokenCounts[i];
    return { negativeLogLikelihood: raw.negativeLogLikelihood[i], tokens: raw.tokenCounts[i] };
  });
  return { meanLossPerToken: tokens ? nll / tokens : NaN, tokens, perText };
}

export interface FixtureHeldOutFigures {
  twoDigit: ArithmeticResult;
  singleDigit: ArithmeticResult;
  text: TextLossResult;
}

/** The fixture's held-out figures: two-digit and single-digit addition accuracy, and sentence loss ("sentence\n"). */
export async function evaluateFixture(
  modelPath: string,
  heldOut: { twoDigit: ArithmeticItem[]; singleDigit: ArithmeticItem[]; sentences: string[] },
  options: NativeEvalOptions = {},
): Promise<FixtureHeldOutFigures> {
  const twoDigit = await arithmeticAccuracy(modelPath, heldOut.twoDigit, options);
  const singleDigit = await arithmeticAccuracy(modelPath, heldOut.singleDigit, options);
  const text = await meanTextLoss(modelPath, heldOut.sentences.map((s) => `${s}\n`), options);
  return { twoDigit, singleDigit, text };
}
