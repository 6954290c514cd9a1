// Evaluation of the trained arithmetic fixture (test/fixtures/arith): exact-match accuracy of greedy
// completions of held-out addition problems, and mean per-token loss of held-out sentences. Runs on
// the native shim's evaluation runtime (native-runtime.ts: openFixtureRuntime, the trainer's context
// settings, one sequence, log-softmax in float64), so it works on any copy of the model: patched,
// quantized or requantized.
import { openFixtureRuntime, type NativeEvalOptions } from '../native-runtime.ts';
import type { EvalRuntime } from '../runtime-types.ts';

export type { NativeEvalOptions } from '../native-runtime.ts';

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

/** Greedy completions (after BOS + prompt) up to the first newline, at most maxNewTokens tokens. */
export async function greedyCompletions(runtime: EvalRuntime, prompts: readonly string[], maxNewTokens = 6): Promise<string[]> {
  const out: string[] = [];
  for (const prompt of prompts) {
    const tokens = runtime.tokenize(prompt);
    out.push((await runtime.withSlot((slot) => slot.greedy(tokens, { maxTokens: maxNewTokens, stopStrings: ['\n'] }))).text);
  }
  return out;
}

/** Negative log-likelihood and token count of each text, every token after BOS scored. */
export async function textNegativeLogLikelihoods(runtime: EvalRuntime, texts: readonly string[]): Promise<{ negativeLogLikelihood: number; tokens: number }[]> {
  const out: { negativeLogLikelihood: number; tokens: number }[] = [];
  for (const text of texts) {
    const tokens = runtime.tokenize(text);
    const nll = await runtime.withSlot((slot) => slot.tokenNegativeLogLikelihoods(tokens, 1));
    let sum = 0;
    for (const v of nll) sum += v;
    out.push({ negativeLogLikelihood: sum, tokens: nll.length });
  }
  return out;
}

/** `use` on the fixture's runtime for `modelPath`, closed afterwards. */
async function onFixtureRuntime<T>(modelPath: string, options: NativeEvalOptions, use: (runtime: EvalRuntime) => Promise<T>): Promise<T> {
  const runtime = await openFixtureRuntime(modelPath, options);
  try {
    return await use(runtime);
  } finally {
    await runtime.close();
  }
}

function accuracyOf(items: readonly ArithmeticItem[], completions: string[]): ArithmeticResult {
  const correct = completions.filter((c, i) => c === items[i]!.answer).length;
  return { correct, total: items.length, accuracy: items.length ? correct / items.length : NaN, completions };
}

function lossOf(perText: { negativeLogLikelihood: number; tokens: number }[]): TextLossResult {
  let nll = 0;
  let tokens = 0;
  for (const t of perText) { nll += t.negativeLogLikelihood; tokens += t.tokens; }
  return { meanLossPerToken: tokens ? nll / tokens : NaN, tokens, perText };
}

/** Exact-match accuracy on a runtime: the completion before the newline must equal the answer. */
export async function arithmeticAccuracyOn(runtime: EvalRuntime, items: readonly ArithmeticItem[]): Promise<ArithmeticResult> {
  const maxAnswer = Math.max(1, ...items.map((i) => i.answer.length));
  return accuracyOf(items, await greedyCompletions(runtime, items.map((i) => i.prompt), maxAnswer + 2));
}

/** Mean per-token loss of the texts on a runtime, each scored after BOS (every token of the text predicted). */
export async function meanTextLossOn(runtime: EvalRuntime, texts: readonly string[]): Promise<TextLossResult> {
  return lossOf(await textNegativeLogLikelihoods(runtime, texts));
}

/** Exact-match accuracy: the completion before the newline must equal the answer. */
export async function arithmeticAccuracy(modelPath: string, items: ArithmeticItem[], options: NativeEvalOptions = {}): Promise<ArithmeticResult> {
  return onFixtureRuntime(modelPath, options, (runtime) => arithmeticAccuracyOn(runtime, items));
}

/** Mean per-token loss of the texts, each scored after BOS (every token of the text predicted). */
export async function meanTextLoss(modelPath: string, texts: string[], options: NativeEvalOptions = {}): Promise<TextLossResult> {
  return onFixtureRuntime(modelPath, options, (runtime) => meanTextLossOn(runtime, texts));
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
  return onFixtureRuntime(modelPath, options, async (runtime) => ({
    twoDigit: await arithmeticAccuracyOn(runtime, heldOut.twoDigit),
    singleDigit: await arithmeticAccuracyOn(runtime, heldOut.singleDigit),
    text: await meanTextLossOn(runtime, heldOut.sentences.map((s) => `${s}\n`)),
  }));
}
