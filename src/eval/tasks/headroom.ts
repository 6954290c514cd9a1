// Evaluation of the headroom fixture (test/fixtures/headroom): exact-match accuracy of greedy
// completions of held-out two-digit additions, by number of carries too, and the mean per-token
// loss of held-out sentences. The same engines as the arith fixture's (arithmetic.ts).
import { carryCount, type HeadroomHeldOutSets } from '../../fixture/headroom.ts';
import { arithmeticAccuracy, meanTextLoss, type ArithmeticResult, type NativeEvalOptions, type TextLossResult } from './arithmetic.ts';

export interface HeadroomFigures {
  twoDigit: ArithmeticResult;
  /** per item: the greedy completion was the sum */
  correct: boolean[];
  /** accuracy by the number of carries of the problem (0 to 3) */
  byCarries: { carries: number; correct: number; total: number }[];
  text: TextLossResult;
}

export async function evaluateHeadroomFixture(modelPath: string, heldOut: HeadroomHeldOutSets, options: NativeEvalOptions = {}): Promise<HeadroomFigures> {
  const twoDigit = await arithmeticAccuracy(modelPath, heldOut.twoDigit, options);
  const correct = twoDigit.completions.map((c, i) => c === heldOut.twoDigit[i].answer);
  const byCarries: HeadroomFigures['byCarries'] = [];
  heldOut.twoDigit.forEach((p, i) => {
    const carries = carryCount(p.a, p.b);
    let row = byCarries.find((r) => r.carries === carries);
    if (!row) { row = { carries, correct: 0, total: 0 }; byCarries.push(row); }
    row.total++;
    if (correct[i]) row.correct++;
  });
  byCarries.sort((x, y) => x.carries - y.carries);
  const text = await meanTextLoss(modelPath, heldOut.sentences.map((s) => `${s}\n`), options);
  return { twoDigit, correct, byCarries, text };
}
