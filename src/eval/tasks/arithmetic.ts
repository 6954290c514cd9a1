// Evaluation of the trained arithmetic fixture (test/fixtures/arith): exact-match accuracy of greedy
// completions of held-out addition problems, and mean per-token loss of held-out sentences. Runs in
// native/train.cpp through native-runtime.ts (a fresh llama.cpp context, batch of one, own
// log-softmax), so it works on any copy of the model: patched, quantized or requantized.
import { greedyCompletions, textNegativeLogLikelihoods, type NativeEvalOptions } from '../native-runtime.ts';

export { greedyCompletions, type NativeEvalOptions } from '../native-runtime.ts';

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

/** Exact-match accuracy: the completion before the newline must equal the answer. */
export async function arithmeticAccuracy(modelPath: string, items: ArithmeticItem[], options: NativeEvalOptions = {}): Promise<ArithmeticResult> {
  const maxAnswer = Math.max(1, ...items.map((i) => i.answer.length));
  const completions = await greedyCompletions(modelPath, items.map((i) => i.prompt), { ...options, maxNewTokens: maxAnswer + 2 });
  const correct = completions.filter((c, i) => c === items[i].answer).length;
  return { correct, total: items.length, accuracy: items.length ? correct / items.length : NaN, completions };
}

/** Mean per-token loss of the texts, each scored after BOS (every token of the text predicted). */
export async function meanTextLoss(modelPath: string, texts: string[], options: NativeEvalOptions = {}): Promise<TextLossResult> {
  const raw = await textNegativeLogLikelihoods(modelPath, texts, options);
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
