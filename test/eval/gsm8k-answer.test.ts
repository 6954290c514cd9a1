// Answer extraction and scoring on hand-written model outputs.
import t from 'tap';
import { extractFlexibleAnswer, extractStrictAnswer, gsm8kGoldAnswer, normalizeNumber, scoreGsm8kOutput, truncateAtStop } from '../../src/eval/gsm8k-answer.ts';

t.test('normalizeNumber', async (t) => {
  const cases: Array<[string, string | null]> = [
    ['18', '18'], ['1,000', '1000'], ['12,345,678', '12345678'], ['$5', '5'], ['-$3', '-3'], ['$ 40', '40'],
    ['7.0', '7'], ['7.50', '7.5'], ['0.25', '0.25'], ['.5', '0.5'], ['-0', '0'], ['007', '7'], ['\u22124', '-4'],
    ['18.', '18'], ['25%', '25'], ['abc', null], ['', null], ['1,00', null],
  ];
  for (const [input, expected] of cases) t.equal(normalizeNumber(input), expected, JSON.stringify(input));
});

t.test('gold answers', async (t) => {
  t.equal(gsm8kGoldAnswer('She pays 3*4 = <<3*4=12>>12 dollars.\n#### 12'), '12');
  t.equal(gsm8kGoldAnswer('...\n#### 1,600'), '1600');
  t.equal(gsm8kGoldAnswer('...\n#### -5'), '-5');
  t.throws(() => gsm8kGoldAnswer('no marker'));
});

t.test('strict and flexible on hand-written outputs', async (t) => {
  const cases: Array<{ output: string; gold: string; strict: string | null; flexible: string | null; strictOk: boolean; flexibleOk: boolean }> = [
    { output: 'Natalia sold 48/2 = 24 clips in May. 48 + 24 = 72. The answer is 72.', gold: '72', strict: '72', flexible: '72', strictOk: true, flexibleOk: true },
    { output: 'He earns 1,200 + 400 = 1,600 dollars. The answer is 1,600.', gold: '1600', strict: '1600', flexible: '1600', strictOk: true, flexibleOk: true },
    { output: 'The total cost is $18.00, so the answer is $18.', gold: '18', strict: '18', flexible: '18', strictOk: true, flexibleOk: true },
    { output: 'The temperature drops to 5 - 12 = -7 degrees. The answer is -7.', gold: '-7', strict: '-7', flexible: '-7', strictOk: true, flexibleOk: true },
    { output: 'She has 3 apples and buys 5 more, so she has 8 apples.', gold: '8', strict: null, flexible: '8', strictOk: false, flexibleOk: true },
    { output: 'The answer is 8. Then she eats 2, leaving 6.', gold: '8', strict: '8', flexible: '6', strictOk: true, flexibleOk: false },
    { output: 'The garden is 12 m long and 3 m wide, 36 square meters. The answer is 36 square meters.', gold: '36', strict: '36', flexible: '36', strictOk: true, flexibleOk: true },
    { output: 'It takes 2.5 hours. The answer is 2.50.', gold: '2.5', strict: '2.5', flexible: '2.5', strictOk: true, flexibleOk: true },
    { output: 'I do not know how to solve this.', gold: '4', strict: null, flexible: null, strictOk: false, flexibleOk: false },
    { output: '', gold: '4', strict: null, flexible: null, strictOk: false, flexibleOk: false },
    { output: 'The answer is 5.0', gold: '5', strict: '5', flexible: '5', strictOk: true, flexibleOk: true },
    { output: 'So 3,4 and 5 are the sides. The answer is 12', gold: '12', strict: '12', flexible: '12', strictOk: true, flexibleOk: true },
    { output: 'The answer is 70%.', gold: '70', strict: '70', flexible: '70', strictOk: true, flexibleOk: true },
    { output: 'The answer is 1000000.', gold: '1000000', strict: '1000000', flexible: '1000000', strictOk: true, flexibleOk: true },
    { output: 'The answer is 72.', gold: '27', strict: '72', flexible: '72', strictOk: false, flexibleOk: false },
  ];
  for (const c of cases) {
    const score = scoreGsm8kOutput(c.output, c.gold);
    t.equal(extractStrictAnswer(c.output), c.strict, `strict: ${c.output}`);
    t.equal(extractFlexibleAnswer(c.output), c.flexible, `flexible: ${c.output}`);
    t.equal(score.strictCorrect, c.strictOk, `strict correct: ${c.output}`);
    t.equal(score.flexibleCorrect, c.flexibleOk, `flexible correct: ${c.output}`);
  }
});

t.test('stop strings', async (t) => {
  t.same(truncateAtStop('x = 3. The answer is 3.\n\nQ: next question', ['Q:']), { text: 'x = 3. The answer is 3.\n\n', stopped: true });
  t.same(truncateAtStop('no stop here', ['Q:']), { text: 'no stop here', stopped: false });
  t.same(truncateAtStop('a</s>b Q: c', ['Q:', '</s>']), { text: 'a', stopped: true });
});
