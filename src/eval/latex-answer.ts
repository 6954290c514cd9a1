// MATH answer handling: pull the final answer out of \boxed{...}, normalise its LaTeX
// (fractions, radicals, spacing, \left/\right, \text{} units, degrees, trailing zeros) and
// decide equivalence: equal normal forms, or equal values when both sides are numeric.

/** The content of the last \boxed{...} (or \fbox{...}, or "\boxed 5") in a solution; null when there is none. */
export function extractBoxed(text: string): string | null {
  const starts = [...text.matchAll(/\\(?:boxed|fbox)\s*/g)];
  for (let k = starts.length - 1; k >= 0; k--) {
    const m = starts[k]!;
    let i = m.index! + m[0].length;
    if (text[i] === '{') {
      let depth = 0;
      for (let j = i; j < text.length; j++) {
        if (text[j] === '{') depth++;
        else if (text[j] === '}' && --depth === 0) return text.slice(i + 1, j).trim();
      }
      continue;   // unbalanced: try an earlier one
    }
    const bare = /^[^\s$]+/.exec(text.slice(i));
    if (bare) return bare[0];
  }
  return null;
}

/** The final answer of a model's solution: the last \boxed{}, else "The answer is X" / "final answer is $X$"; null when none. */
export function extractMathAnswer(text: string): string | null {
  const boxed = extractBoxed(text);
  if (boxed !== null) return boxed;
  const m = /(?:final answer is|the answer is)\s*:?\s*\$?([^$\n]+?)\$?\s*(?:\.|$|\n)/i.exec(text);
  return m ? m[1]!.trim() : null;
}

/** Read one {group} or single character argument at `i`; returns [argument, next index]. */
function readArgument(s: string, i: number): [string, number] | null {
  while (s[i] === ' ') i++;
  if (i >= s.length) return null;
  if (s[i] === '{') {
    let depth = 0;
    for (let j = i; j < s.length; j++) {
      if (s[j] === '{') depth++;
      else if (s[j] === '}' && --depth === 0) return [s.slice(i + 1, j), j + 1];
    }
    return null;
  }
  if (s[i] === '\\') {
    const m = /^\\[a-zA-Z]+/.exec(s.slice(i));
    if (m) return [m[0], i + m[0].length];
  }
  return [s[i]!, i + 1];
}

/** \frac12 -> \frac{1}{2}, \frac{a}b -> \frac{a}{b}, \sqrt2 -> \sqrt{2}: every argument braced. */
function braceArguments(s: string): string {
  let out = '';
  let i = 0;
  while (i < s.length) {
    const m = /^\\(frac|sqrt)/.exec(s.slice(i));
    if (!m) { out += s[i]; i++; continue; }
    out += '\\' + m[1];
    i += m[0].length;
    if (m[1] === 'sqrt' && s[i] === '[') {          // \sqrt[n]{x}
      const close = s.indexOf(']', i);
      if (close < 0) continue;
      out += s.slice(i, close + 1);
      i = close + 1;
    }
    const count = m[1] === 'frac' ? 2 : 1;
    for (let k = 0; k < count; k++) {
      const arg = readArgument(s, i);
      if (!arg) break;
      out += '{' + braceArguments(arg[0]) + '}';
      i = arg[1];
    }
  }
  return out;
}

/** Remove every \cmd{...} wrapper, keeping its content (\text{A} -> A). */
function unwrap(s: string, command: string): string {
  const re = new RegExp(`\\\\${command}\\s*\\{`);
  for (let guard = 0; guard < 100; guard++) {
    const m = re.exec(s);
    if (!m) return s;
    const arg = readArgument(s, m.index + m[0].length - 1);
    if (!arg) return s;
    s = s.slice(0, m.index) + arg[0] + s.slice(arg[1]);
  }
  return s;
}

const unitWords = 'cm|centimeters?|m|meters?|km|kilometers?|mm|inch|inches|in|ft|feet|foot|yards?|miles?|units?|sq|square|cubic|degrees?|dollars?|cents?|hours?|minutes?|seconds?|days?|weeks?|months?|years?|mph|pounds?|lbs?|ounces?|grams?|kg|kilograms?|liters?|mL|ml|gallons?|people|students?|ways|points?|mathrm\\{[a-z]+\\}';

/** The normal form of a LaTeX answer; two answers with the same normal form are equivalent. */
export function normalizeLatexAnswer(answer: string): string {
  let s = answer.trim();
  s = s.replace(/\n/g, ' ');
  s = s.replace(/^\$+|\$+$/g, '').replace(/\\\(|\\\)/g, '').replace(/\\\[|\\\]/g, '');
  s = s.replace(/\\!/g, '').replace(/\\[,;:> ]/g, ' ').replace(/~/g, ' ').replace(/\\quad|\\qquad/g, ' ');
  s = s.replace(/\\left\b|\\right\b|\\big[lr]?\b|\\Big[lr]?\b/g, '');
  s = s.replace(/\\displaystyle/g, '').replace(/\\[dt]frac/g, '\\frac');
  s = s.replace(/\\\{/g, '{').replace(/\\\}/g, '}').replace(/\\\$/g, '').replace(/\$/g, '');
  s = s.replace(/\\%|%/g, '');
  // Degrees: 30^\circ, 30^{\circ}, 30°.
  s = s.replace(/\^\s*\{?\s*\\circ\s*\}?/g, '').replace(/°/g, '').replace(/\\degree/g, '');
  // Units: a trailing \text{ cm}, \mbox{inches}, \text{cm}^2, or a bare unit word after a number.
  s = s.replace(/\\(?:text|textbf|mbox|mathrm)\s*\{\s*([^{}]*)\}(\^\{?\d\}?)?\s*$/, (whole, inner: string) =>
    new RegExp(`^\\s*(${unitWords})\\b`, 'i').test(inner.trim()) || /^\s/.test(inner) && /^[a-zA-Z .]+$/.test(inner) ? '' : whole);
  s = s.replace(new RegExp(`(\\d)\\s*(?:${unitWords})(\\^\\{?\\d\\}?)?\\s*$`, 'i'), '$1');
  for (const cmd of ['text', 'textbf', 'mbox', 'mathrm', 'mathbf', 'boxed']) s = unwrap(s, cmd);
  // "x = 5" -> "5" when the left side is a lone variable.
  const eq = /^\s*[a-zA-Z](?:_\{?\w+\}?)?\s*=\s*(.+)$/.exec(s);
  if (eq && !eq[1]!.includes('=')) s = eq[1]!;
  s = s.replace(/\\cdot|\\times/g, '*').replace(/\\infty/g, 'inf').replace(/\\pi\b/g, 'pi');
  s = braceArguments(s);
  // Multiple choice "(C)" -> "C".
  const letter = /^\(?([A-E])\)?$/.exec(s.trim());
  if (letter) s = letter[1]!;
  s = s.replace(/\s+/g, '');
  // Whole-number thousands separators: 10,000 -> 10000 (not tuples like 1,2).
  if (/^-?\d{1,3}(,\d{3})+(\.\d+)?$/.test(s)) s = s.replace(/,/g, '');
  // Trailing zeros of decimals, leading "." -> "0.".
  s = s.replace(/(\d+)\.(\d*?)0+(?!\d)/g, (_w, a: string, b: string) => (b ? `${a}.${b}` : a));
  s = s.replace(/(^|[^\d])\.(\d)/g, '$10.$2');
  // Simple a/b -> \frac{a}{b}.
  const slash = /^(-?)(\d+)\/(\d+)$/.exec(s);
  if (slash) s = `${slash[1]}\\frac{${slash[2]}}{${slash[3]}}`;
  s = s.replace(/^\+/, '');
  return s;
}

/** The value of a numeric normal form (integers, decimals, \frac, \sqrt, pi, + - * / ^, juxtaposition); null when not numeric. */
export function latexNumericValue(normalized: string): number | null {
  const src = normalized;
  let i = 0;
  const peek = () => src[i];
  function fail(): never { throw new Error('not numeric'); }
  function expect(ch: string) { if (src[i] !== ch) fail(); i++; }
  function expression(): number {
    let v = term();
    while (peek() === '+' || peek() === '-') { const op = src[i++]; const t = term(); v = op === '+' ? v + t : v - t; }
    return v;
  }
  function term(): number {
    let v = unary();
    for (;;) {
      const c = peek();
      if (c === '*') { i++; v *= unary(); }
      else if (c === '/') { i++; v /= unary(); }
      else if (c !== undefined && (/[\d(\\p{]/.test(c))) v *= unary();   // implicit product: 2\sqrt{3}, 3pi
      else return v;
    }
  }
  function unary(): number {
    if (peek() === '-') { i++; return -unary(); }
    if (peek() === '+') { i++; return unary(); }
    return power();
  }
  function power(): number {
    const base = atom();
    if (peek() === '^') { i++; const e = peek() === '{' ? group() : atom(); return Math.pow(base, e); }
    return base;
  }
  function group(): number { expect('{'); const v = expression(); expect('}'); return v; }
  function atom(): number {
    const rest = src.slice(i);
    const num = /^\d+(\.\d+)?/.exec(rest);
    if (num) { i += num[0].length; return Number(num[0]); }
    if (rest.startsWith('pi')) { i += 2; return Math.PI; }
    if (rest.startsWith('\\frac')) { i += 5; const a = group(); const b = group(); return a / b; }
    if (rest.startsWith('\\sqrt')) {
      i += 5;
      let n = 2;
      if (peek() === '[') { const close = src.indexOf(']', i); n = Number(src.slice(i + 1, close)); if (!Number.isFinite(n)) fail(); i = close + 1; }
      const v = group();
      return Math.pow(v, 1 / n);
    }
    if (peek() === '(') { i++; const v = expression(); expect(')'); return v; }
    if (peek() === '{') return group();
    fail();
  }
  try {
    const v = expression();
    if (i !== src.length || !Number.isFinite(v)) return null;
    return v;
  } catch {
    return null;
  }
}

/** Split on top-level commas: "(1,\frac{1}{2})" -> ["1", "\frac{1}{2}"] with the brackets kept apart. */
function splitTuple(s: string): { open: string; close: string; items: string[] } | null {
  const m = /^([([])(.*)([)\]])$/.exec(s);
  if (!m) return null;
  const items: string[] = [];
  let depth = 0, start = 0;
  const body = m[2]!;
  for (let j = 0; j < body.length; j++) {
    const c = body[j];
    if (c === '{' || c === '(' || c === '[') depth++;
    else if (c === '}' || c === ')' || c === ']') depth--;
    else if (c === ',' && depth === 0) { items.push(body.slice(start, j)); start = j + 1; }
  }
  items.push(body.slice(start));
  return items.length > 1 ? { open: m[1]!, close: m[3]!, items } : null;
}

function equivalentNormalized(a: string, b: string): boolean {
  if (a === b) return true;
  const x = latexNumericValue(a), y = latexNumericValue(b);
  if (x !== null && y !== null) return Math.abs(x - y) <= 1e-6 * Math.max(1, Math.abs(y));
  const ta = splitTuple(a), tb = splitTuple(b);
  if (ta && tb && ta.open === tb.open && ta.close === tb.close && ta.items.length === tb.items.length) {
    return ta.items.every((item, k) => equivalentNormalized(item, tb.items[k]!));
  }
  // Unordered lists of answers ("1, 2" vs "2,1") as MATH writes multiple solutions.
  if (!/[([]/.test(a[0] ?? '') && a.includes(',') && b.includes(',')) {
    const la = a.split(','), lb = b.split(',');
    if (la.length === lb.length) {
      const rest = [...lb];
      return la.every((item) => { const k = rest.findIndex((r) => equivalentNormalized(item, r)); if (k < 0) return false; rest.splice(k, 1); return true; });
    }
  }
  return false;
}

/** Whether a model's answer is equivalent to the reference answer. */
export function latexAnswersEquivalent(predicted: string | null, reference: string): boolean {
  if (predicted === null) return false;
  return equivalentNormalized(normalizeLatexAnswer(predicted), normalizeLatexAnswer(reference));
}
