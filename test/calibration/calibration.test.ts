// The built-in calibration sets: deterministic per (version, seed), answers right (re-derived here
// from the drawn quantities and by evaluating every calculator step independently), general text
// free of digits and math words, and varied.
import t from 'tap';
import { createHash } from 'node:crypto';
import {
  builtinSamples, CALIBRATION_VERSION, GENERAL_TOPICS, MATH_PROBLEM_KINDS, type MathProblem, type MathProblemKind,
} from '../../src/calibration/index.ts';
import { MathneuroError } from '../../src/errors.ts';

// an evaluator independent of src/calibration/arithmetic.ts: JavaScript's own, after a strict character check
function jsEval(expression: string): number {
  if (!/^[0-9+\-*/(). ]+$/.test(expression)) throw new Error(`unexpected characters in ${expression}`);
  return Function(`"use strict"; return (${expression});`)() as number;
}

const reference: Record<MathProblemKind, (q: Record<string, number>) => number> = {
  'shopping-change': (q) => q.bill - q.n * q.price,
  'give-and-receive': (q) => q.start - q.given + q.received,
  'pages-left': (q) => q.total - q.perDay * q.days,
  'fraction-of-group': (q) => (q.total - q.total / q.k) * (1 - 1 / q.m),
  discount: (q) => q.price * (1 - q.percent / 100),
  'weekly-wages': (q) => q.wage * q.hours * q.days * q.weeks,
  ages: (q) => 2 * q.younger + q.gap + 2 * q.years,
  'equal-sharing': (q) => (q.total - q.kept) / q.friends,
  'two-leg-trip': (q) => q.v1 * q.t1 + q.v2 * q.t2,
  'times-as-many': (q) => q.times * q.base + q.base + q.times * q.base - q.fewer,
  'recipe-scaling': (q) => (q.amount * q.wanted) / q.servings,
  'saving-weeks': (q) => (q.price - q.saved) / q.perWeek,
  'garden-rows': (q) => q.rows * q.perRow - q.failed,
};

t.test('math: every answer is right', async (t) => {
  const samples = builtinSamples('math', { count: 2600, seed: 7 });
  const kinds = new Map<string, number>();
  let steps = 0, bad = 0;
  for (const s of samples) {
    const p = s.math as MathProblem;
    kinds.set(p.kind, (kinds.get(p.kind) ?? 0) + 1);
    const expected = reference[p.kind](p.quantities);
    if (Math.abs(expected - p.answer) > 1e-9 || !Number.isInteger(p.answer) || p.answer < 0) { bad++; t.fail(`${s.source} ${p.kind}: ${p.answer} != ${expected}`); }
    const lines = p.solution.split('\n');
    if (lines[lines.length - 1] !== `#### ${p.answer}`) { bad++; t.fail(`${s.source}: last line ${lines[lines.length - 1]}`); }
    for (const m of p.solution.matchAll(/(\S+) = \$?<<([^=>]+)=([^>]+)>>(\d+(?:\.\d+)?)/g)) {
      steps++;
      const [, shown, expr, annotated, after] = m;
      if (shown !== expr || Math.abs(jsEval(expr) - Number(annotated)) > 1e-9 || annotated !== after) { bad++; t.fail(`${s.source}: step ${m[0]}`); }
    }
    // every drawn quantity is stated in the question (names aside), so the problem is solvable
    for (const [name, v] of Object.entries(p.quantities)) {
      if (p.kind === 'recipe-scaling' && name === 'wanted') continue;
      if (!new RegExp(`(^|[^0-9])${v}([^0-9]|$)`).test(p.question)) { bad++; t.fail(`${s.source}: ${name}=${v} not in question: ${p.question}`); }
    }
    if (s.text !== `${p.question}\n${p.solution}`) { bad++; t.fail(`${s.source}: text is not question + solution`); }
  }
  t.equal(bad, 0, `${samples.length} problems, ${steps} calculator steps checked`);
  t.ok(steps > 2 * samples.length, 'several steps per problem');
  t.same([...kinds.keys()].sort(), [...MATH_PROBLEM_KINDS].sort(), 'every kind occurs');
  for (const [kind, n] of kinds) t.ok(n >= 150, `${kind}: ${n} problems`);
  // any run of as many problems as there are kinds covers every kind
  const window = builtinSamples('math', { count: MATH_PROBLEM_KINDS.length, seed: 3, start: 40 });
  t.equal(new Set(window.map((s) => s.math!.kind)).size, MATH_PROBLEM_KINDS.length);
});

const mathWords = /\b(zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|twenty|thirty|hundred|thousand|million|dozen|half|halves|twice|double|triple|once|first|second|third|single|pair of twins|plus|minus|sum|total|equal|equals|multiply|divide|fraction|percent|average|calculate|number|numbers|math|arithmetic|count|price|cost|dollar|dollars|cents|how many|how much|times)\b/i;

t.test('general: no digits, no math vocabulary, varied, answers in the passage', async (t) => {
  const samples = builtinSamples('general', { count: 2000, seed: 11 });
  let bad = 0;
  const topics = new Set<string>();
  for (const s of samples) {
    const p = s.general!;
    topics.add(p.topic);
    if (/[0-9]/.test(s.text)) { bad++; t.fail(`${s.source}: digit in ${s.text}`); }
    const m = mathWords.exec(s.text.replace(/\nAnswer: [ABCD]$/, ''));
    if (m) { bad++; t.fail(`${s.source}: math word "${m[0]}" in ${s.text}`); }
    if (p.options.length !== 4 || new Set(p.options).size !== 4) { bad++; t.fail(`${s.source}: options ${p.options}`); }
    const right = p.options[p.answerIndex];
    if (!/mainly about/.test(p.question) && !p.passage.toLowerCase().includes(right.toLowerCase())) { bad++; t.fail(`${s.source}: answer "${right}" not in passage`); }
    const stated = p.options.filter((o) => p.passage.toLowerCase().includes(o.toLowerCase()));
    if (!/mainly about/.test(p.question) && stated.length !== 1) { bad++; t.fail(`${s.source}: ${stated.length} options stated in the passage`); }
    if (!s.text.endsWith(`\nAnswer: ${'ABCD'[p.answerIndex]}`)) { bad++; t.fail(`${s.source}: answer line`); }
  }
  t.equal(bad, 0);
  t.same([...topics].sort(), [...GENERAL_TOPICS].sort(), 'every topic occurs');
  t.ok(GENERAL_TOPICS.length >= 12, `${GENERAL_TOPICS.length} topics`);
  const distinct = new Set(samples.map((s) => s.text)).size;
  t.ok(distinct >= 0.99 * samples.length, `${distinct} distinct of ${samples.length}`);
  const answers = new Map<number, number>();
  for (const s of samples) answers.set(s.general!.answerIndex, (answers.get(s.general!.answerIndex) ?? 0) + 1);
  for (const [i, n] of answers) t.ok(n > 350 && n < 650, `answer ${'ABCD'[i]}: ${n}`);
});

t.test('versioned and seeded', async (t) => {
  for (const set of ['math', 'general'] as const) {
    const a = builtinSamples(set, { count: 30, seed: 5 });
    const b = builtinSamples(set, { count: 30, seed: 5, version: CALIBRATION_VERSION });
    t.same(a.map((s) => s.text), b.map((s) => s.text), `${set}: same seed, same texts`);
    const c = builtinSamples(set, { count: 30, seed: 6 });
    t.ok(c.filter((s, i) => s.text !== a[i].text).length >= 28, `${set}: another seed, other texts`);
    const tail = builtinSamples(set, { count: 10, seed: 5, start: 20 });
    t.same(tail.map((s) => s.text), a.slice(20).map((s) => s.text), `${set}: sample i does not depend on the count`);
    t.equal(a[3].source, `builtin:${set}@${CALIBRATION_VERSION}/seed5#3`);
  }
  // the texts of version 1 are frozen: a change must bump CALIBRATION_VERSION
  const digest = (set: 'math' | 'general') => createHash('sha256').update(builtinSamples(set, { count: 200, seed: 0, version: '1' }).map((s) => s.text).join('\u0000')).digest('hex').slice(0, 16);
  t.same({ math: digest('math'), general: digest('general') }, { math: '933fa5bcb373ed0c', general: '8ab014696ca965de' }, 'version 1 texts unchanged');
  t.throws(() => builtinSamples('math', { version: '999' }), MathneuroError);
  t.throws(() => builtinSamples('math', { count: -1 }), MathneuroError);
});
