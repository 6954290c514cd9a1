// The MATH answer normaliser on hand-written equivalent and non-equivalent pairs.
import t from 'tap';
import { extractBoxed, extractMathAnswer, latexAnswersEquivalent, latexNumericValue, normalizeLatexAnswer } from '../../src/eval/latex-answer.ts';

t.test('extractBoxed', async (t) => {
  t.equal(extractBoxed('so the answer is $\\boxed{\\frac{1}{2}}$.'), '\\frac{1}{2}');
  t.equal(extractBoxed('\\boxed{1} then \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}'), '\\left( 3, \\frac{\\pi}{2} \\right)');
  t.equal(extractBoxed('\\boxed 5.'), '5.');
  t.equal(extractBoxed('\\fbox{x+1}'), 'x+1');
  t.equal(extractBoxed('no box here'), null);
  t.equal(extractBoxed('broken \\boxed{1'), null);
  t.equal(extractMathAnswer('... The final answer is $7$.'), '7');
  t.equal(extractMathAnswer('nothing'), null);
});

t.test('equivalent pairs', async (t) => {
  const pairs: Array<[string, string]> = [
    ['\\frac{1}{2}', '\\dfrac{1}{2}'],
    ['\\frac12', '\\frac{1}{2}'],
    ['\\tfrac{3}{4}', '3/4'],
    ['0.5', '\\frac{1}{2}'],
    ['.5', '0.5'],
    ['2\\sqrt{3}', '2 \\sqrt 3'],
    ['\\sqrt{12}', '2\\sqrt{3}'],
    ['\\frac{\\sqrt{3}}{2}', '\\frac{\\sqrt3}{2}'],
    ['\\left( 3, \\frac{\\pi}{2} \\right)', '(3,\\frac{\\pi}{2})'],
    ['10\\text{ cm}', '10'],
    ['10 \\text{ inches}^2', '10'],
    ['5\\mbox{ cm}^2', '5'],
    ['30^\\circ', '30'],
    ['30^{\\circ}', '30'],
    ['45°', '45'],
    ['5.00', '5'],
    ['2.50', '2.5'],
    ['10,000', '10000'],
    ['x = 4', '4'],
    ['\\text{(C)}', 'C'],
    ['\\$32.50', '32.5'],
    ['50\\%', '50'],
    ['1, 2', '2,1'],
    ['-\\frac{1}{3}', '\\frac{-1}{3}'],
    ['\\pi', '3.14159265358979'],
    ['2\\pi', '\\pi \\cdot 2'],
    ['\\text{Evelyn}', 'Evelyn'],
    ['\\frac{1}{2}\\,', '\\frac{1}{2}'],
    ['[1, \\infty)', '\\left[1,\\infty\\right)'],
    ['3^2', '9'],
    ['\\sqrt[3]{8}', '2'],
  ];
  for (const [a, b] of pairs) {
    t.ok(latexAnswersEquivalent(a, b), `${a}  ==  ${b}  (${normalizeLatexAnswer(a)} vs ${normalizeLatexAnswer(b)})`);
    t.ok(latexAnswersEquivalent(b, a), `${b}  ==  ${a}`);
  }
});

t.test('non-equivalent pairs', async (t) => {
  const pairs: Array<[string, string]> = [
    ['\\frac{1}{2}', '\\frac{2}{1}'],
    ['\\frac{1}{3}', '0.33'],
    ['2\\sqrt{3}', '3\\sqrt{2}'],
    ['(1,2)', '(2,1)'],
    ['(1,2)', '[1,2]'],
    ['[1, \\infty)', '(1,\\infty)'],
    ['10', '100'],
    ['1,000', '1'],
    ['-5', '5'],
    ['x+1', 'x-1'],
    ['\\text{(A)}', 'B'],
    ['1,2', '1,2,3'],
    ['\\pi', '3.14'],
    ['30^\\circ', '60'],
  ];
  for (const [a, b] of pairs) t.notOk(latexAnswersEquivalent(a, b), `${a}  !=  ${b}  (${normalizeLatexAnswer(a)} vs ${normalizeLatexAnswer(b)})`);
  t.notOk(latexAnswersEquivalent(null, '1'), 'no answer is never right');
});

t.test('numeric values', async (t) => {
  t.equal(latexNumericValue('\\frac{1}{4}'), 0.25);
  t.equal(latexNumericValue('2\\sqrt{4}'), 4);
  t.equal(latexNumericValue('-3+2*4'), 5);
  t.equal(latexNumericValue('x+1'), null);
  t.equal(latexNumericValue('(1,2)'), null);
});
