// A small evaluator for the calculator annotations in the worked solutions (<<12*3=36>>): every
// step the generator writes is re-evaluated from its text before it is accepted.

/** Value of an expression of numbers, + - * /, and parentheses; throws on anything else. */
export function evaluateArithmetic(expression: string): number {
  let pos = 0;
  const text = expression.replace(/\s+/g, '');
  const peek = () => text[pos];
  const fail = (what: string): never => { throw new Error(`bad arithmetic "${expression}": ${what} at ${pos}`); };
  function primary(): number {
    if (peek() === '(') {
      pos++;
      const v = sum();
      if (peek() !== ')') fail('expected )');
      pos++;
      return v;
    }
    if (peek() === '-') { pos++; return -primary(); }
    const m = /^\d+(\.\d+)?/.exec(text.slice(pos));
    if (!m) fail('expected a number');
    pos += m![0].length;
    return Number(m![0]);
  }
  function product(): number {
    let v = primary();
    while (peek() === '*' || peek() === '/') {
      const op = text[pos++];
      const r = primary();
      v = op === '*' ? v * r : v / r;
    }
    return v;
  }
  function sum(): number {
    let v = product();
    while (peek() === '+' || peek() === '-') {
      const op = text[pos++];
      const r = product();
      v = op === '+' ? v + r : v - r;
    }
    return v;
  }
  const v = sum();
  if (pos !== text.length) fail('unexpected character');
  return v;
}

/** Number as a worked solution writes it: integers plain, others with at most 2 decimals. */
export function formatQuantity(value: number): string {
  if (Number.isInteger(value)) return String(value);
  return String(Math.round(value * 100) / 100);
}
