// Intervals and tests against values computed by hand / from published tables.
import t from 'tap';
import { mcnemarExactP, meanEstimate, normalCdf, pairedAccuracy, wilsonInterval } from '../../src/eval/confidence.ts';

t.test('Wilson interval', async (t) => {
  // Reference values (R: binom::binom.wilson / statsmodels proportion_confint(method="wilson")).
  const a = wilsonInterval(8, 10);
  t.ok(Math.abs(a.low - 0.4901625) < 1e-6 && Math.abs(a.high - 0.9433178) < 1e-6, JSON.stringify(a));
  const b = wilsonInterval(0, 20);
  // k = 0: the upper bound is z^2 / (n + z^2) in closed form.
  t.ok(Math.abs(b.low) < 1e-12 && Math.abs(b.high - 1.959963984540054 ** 2 / (20 + 1.959963984540054 ** 2)) < 1e-12, JSON.stringify(b));
  const c = wilsonInterval(50, 100);
  t.ok(Math.abs(c.low - 0.4038315) < 1e-6 && Math.abs(c.high - 0.5961685) < 1e-6, JSON.stringify(c));
  t.same(wilsonInterval(0, 0), { low: 0, high: 1 });
});

t.test('McNemar exact', async (t) => {
  // b = 1, c = 6: two-sided exact p = 2 * (1 + 7) / 128 = 0.125.
  t.ok(Math.abs(mcnemarExactP(1, 6) - 0.125) < 1e-12);
  t.equal(mcnemarExactP(0, 0), 1);
  t.equal(mcnemarExactP(3, 3), 1);
  // b = 0, c = 10: 2 / 1024.
  t.ok(Math.abs(mcnemarExactP(0, 10) - 2 / 1024) < 1e-15);
});

t.test('paired accuracy', async (t) => {
  const model = [true, true, false, false, true, true];
  const reference = [true, false, false, true, false, false];
  const r = pairedAccuracy(model, reference);
  t.equal(r.bothCorrect, 1); t.equal(r.onlyModel, 3); t.equal(r.onlyReference, 1); t.equal(r.bothWrong, 1);
  t.ok(Math.abs(r.difference - 2 / 6) < 1e-12);
  t.ok(Math.abs(r.pValue - 0.625) < 1e-12);   // b=3, c=1: 2 * (1 + 4) / 16
  t.ok(r.ci95.low < r.difference && r.ci95.high > r.difference);
});

t.test('mean and normal cdf', async (t) => {
  const m = meanEstimate([1, 2, 3, 4]);
  t.equal(m.mean, 2.5);
  t.ok(Math.abs(m.standardError - Math.sqrt(5 / 3 / 4)) < 1e-12);
  t.ok(Math.abs(normalCdf(1.959963984540054) - 0.975) < 1e-6);
  t.ok(Math.abs(normalCdf(0) - 0.5) < 1e-9);
});
