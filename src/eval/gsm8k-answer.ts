// GSM8K answer extraction and scoring: the paper's two figures, strict ("The answer is N.")
// and flexible (the last number in the output), on numbers normalised the same way for both.

/** A number as written in an answer, in a canonical form ("1,000.50" -> "1000.5", "-$3" -> "-3"); null when it is not a number. */
export function normalizeNumber(text: string): string | null {
  let s = text.trim().replace(/[\u2212\u2012\u2013]/g, '-');   // unicode minus and dashes
  s = s.replace(/^\$\s*/, '').replace(/^(-)\s*\$\s*/, '$1');
  s = s.replace(/(\d),(?=\d{3}(?!\d))/g, '$1');                // thousands separators only
  s = s.replace(/[.。]$/, '').replace(/%$/, '');
  if (!/^[-+]?(\d+(\.\d*)?|\.\d+)$/.test(s)) return null;
  const value = Number(s);
  if (!Number.isFinite(value)) return null;
  // Plain decimal notation, no exponent, no trailing zeros ("5.50" -> "5.5", "7.0" -> "7").
  let out = s.replace(/^\+/, '');
  if (out.includes('.')) out = out.replace(/0+$/, '').replace(/\.$/, '');
  out = out.replace(/^(-?)0+(?=\d)/, '$1').replace(/^(-?)\./, '$10.');
  if (/^-0?$/.test(out) || out === '-0') out = '0';
  return out;
}

/** A number token inside free text: optional sign and dollar sign, thousands groups or plain digits, optional decimals. */
const numberPattern = /(?:[-\u2212]\s?)?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?:[-\u2212])?\.\d+/g;

/** The strict answer: the number right after "The answer is" (first occurrence), else null. */
export function extractStrictAnswer(output: string): string | null {
  const m = /The answer is\s*:?\s*((?:[-\u2212]\s?)?\$?\s?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)/i.exec(output);
  return m ? normalizeNumber(m[1]!) : null;
}

/** The flexible answer: the last number anywhere in the output, else null. */
export function extractFlexibleAnswer(output: string): string | null {
  const all = output.match(numberPattern);
  if (!all || all.length === 0) return null;
  return normalizeNumber(all[all.length - 1]!);
}

/** The gold answer of a GSM8K record: what follows "####" in its worked solution. */
export function gsm8kGoldAnswer(solution: string): string {
  const i = solution.lastIndexOf('####');
  if (i < 0) throw new Error('GSM8K answer has no "####" line');
  const gold = normalizeNumber(solution.slice(i + 4).trim());
  if (gold === null) throw new Error(`GSM8K gold answer is not a number: "${solution.slice(i + 4).trim()}"`);
  return gold;
}

/** Two normalised numbers are equal when their values are (so "5" equals "5.0" even if one skipped normalisation). */
export function sameNumber(a: string | null, b: string | null): boolean {
  if (a === null || b === null) return false;
  if (a === b) return true;
  const x = Number(a), y = Number(b);
  return Number.isFinite(x) && Number.isFinite(y) && Math.abs(x - y) <= 1e-9 * Math.max(1, Math.abs(y));
}

/** Cut a generation at the first stop string (the paper stops at "Q:"). */
export function truncateAtStop(text: string, stops: readonly string[]): { text: string; stopped: boolean } {
  let cut = -1;
  for (const stop of stops) {
    const i = text.indexOf(stop);
    if (i >= 0 && (cut < 0 || i < cut)) cut = i;
  }
  return cut < 0 ? { text, stopped: false } : { text: text.slice(0, cut), stopped: true };
}

export interface Gsm8kScore {
  strictAnswer: string | null;
  flexibleAnswer: string | null;
  strictCorrect: boolean;
  flexibleCorrect: boolean;
}

/** Score one model output against the gold number. */
export function scoreGsm8kOutput(output: string, gold: string): Gsm8kScore {
  const strictAnswer = extractStrictAnswer(output);
  const flexibleAnswer = extractFlexibleAnswer(output);
  return {
    strictAnswer, flexibleAnswer,
    strictCorrect: sameNumber(strictAnswer, gold),
    flexibleCorrect: sameNumber(flexibleAnswer, gold),
  };
}
