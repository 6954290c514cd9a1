// By default collection ends each forward pass at the final norm (llama.cpp's "result_norm", the
// head's input): logits are still requested for every token, so the last block sees all of them,
// but the output head's matmul is never computed. The statistics of every other weight must be
// exactly those of the full graph (includeOutput: what collection did before, head included): the
// same graph computes the same nodes up to the stop, so they are compared for bitwise equality,
// on F32, Q8_0 and MoE models, one sample per pass, packed, and a sample split over several passes,
// and on every architecture of test/arch.
import t, { type Test } from 'tap';
import { StatsModel, collectStats, type CollectOptions, type CollectResult } from '../../src/stats/index.ts';
import { planTensors } from '../../src/select/select.ts';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { fixtureModel } from '../helpers/fixtures.ts';
import { ARCHS, archModel } from '../arch/arch-lib.ts';

const texts = [
  'Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.',
  'The mitochondria is the powerhouse of the cell.',
  'x',
  'Seven times eight is fifty-six, and fifty-six plus six is sixty-two.',
];

/** Elements of a and b that are not bitwise equal (as float64). */
function differing(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Math.max(a.length, b.length);
  let n = 0;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) n++;
  return n;
}

/** The head's weight in the statistics of a full pass: output.weight, or the tied token_embd.weight. */
const HEADS = ['output.weight', 'token_embd.weight'];

/** stopped (default) vs full (includeOutput) statistics: same weights but the head, identical values. */
function compare(t: Test, stopped: CollectResult, full: CollectResult, label: string) {
  t.ok(stopped.passes > 0 && stopped.passesWithoutHead === stopped.passes, `${label}: every pass ended at the final norm (${stopped.passesWithoutHead} of ${stopped.passes})`);
  t.equal(full.passesWithoutHead, 0, `${label}: includeOutput runs the whole graph`);
  t.equal(stopped.stats.tokens, full.stats.tokens, `${label}: tokens`);
  t.equal(stopped.stats.samples, full.stats.samples, `${label}: samples`);
  const heads = [...full.stats.weights.keys()].filter((n) => HEADS.includes(n));
  t.equal(heads.length, 1, `${label}: the full graph has the head's statistics (${heads.join(', ')})`);
  t.same([...stopped.stats.weights.keys()].sort(), [...full.stats.weights.keys()].filter((n) => !heads.includes(n)).sort(), `${label}: the same weights, less the head`);
  const bad: string[] = [];
  for (const [name, w] of stopped.stats.weights) {
    const f = full.stats.weights.get(name)!;
    const d = differing(w.sum2, f.sum2) + differing(w.normSum, f.normSum) + differing(w.counts, f.counts);
    if (d || w.nIn !== f.nIn || w.nMat !== f.nMat) bad.push(`${name} (${d} values)`);
  }
  t.same(bad, [], `${label}: ${stopped.stats.weights.size} weights bitwise equal`);
}

async function both(path: string, options: CollectOptions): Promise<[CollectResult, CollectResult]> {
  const model = await StatsModel.open(path, { nCtx: 256, ...options });
  try {
    const stopped = await model.collect(texts, options);
    const full = await model.collect(texts, { ...options, includeOutput: true });
    return [stopped, full];
  } finally { model.dispose(); }
}

for (const type of ['f32', 'q8_0'] as const) {
  t.test(`tiny ${type}: statistics without the head equal those of the full graph`, async (t) => {
    const path = await fixtureModel({ shape: 'tiny', type, seed: 3 });
    for (const [label, options] of [
      ['one sample per pass', { pack: false }],
      ['packed', { pack: true }],
      ['a sample split over passes of 8 tokens', { pack: false, nBatch: 8 }],
    ] as [string, CollectOptions][]) {
      const [stopped, full] = await both(path, options);
      compare(t, stopped, full, `${type}, ${label}`);
      // the last block saw every token, not only the last one (logits are still requested for all)
      const down = stopped.stats.weights.get('blk.1.ffn_down.weight')!;
      t.same(Array.from(down.counts), [stopped.stats.tokens], `${type}, ${label}: the last block's ffn_down counted every token`);
      const head = full.stats.weights.get('output.weight')!;
      t.same(Array.from(head.counts), [full.stats.tokens], `${type}, ${label}: with includeOutput the head counted every token`);
      if (options.nBatch) t.ok(stopped.passes > texts.length, `${type}, ${label}: ${stopped.passes} passes`);
    }
  });
}

t.test('MoE (moe-tiny, q8_0): expert statistics without the head equal those of the full graph', async (t) => {
  const path = await fixtureModel({ shape: 'moe-tiny', type: 'q8_0', seed: 5 });
  const [stopped, full] = await both(path, { pack: true });
  compare(t, stopped, full, 'moe-tiny packed');
  t.ok(stopped.stats.weights.get('blk.1.ffn_down_exps.weight'), 'the last block\'s experts observed');
});

t.test('the output head is scored only from statistics that include it', async (t) => {
  const path = await fixtureModel({ shape: 'tiny', type: 'f32', seed: 3 });
  const info = readGgufSync(path);
  const [stopped, full] = await both(path, { pack: true });
  t.throws(() => planTensors(info, stopped.stats, { includeOutput: true }), { code: 'ESTATS', message: /--include-output/ }, 'default statistics: a clear error, not a silent skip');
  const plan = planTensors(info, full.stats, { includeOutput: true });
  t.ok(plan.scored.some((s) => s.tensor.name === 'output.weight'), 'statistics collected with includeOutput: output.weight scored');
  t.same(planTensors(info, stopped.stats).scored.map((s) => s.tensor.name), planTensors(info, full.stats).scored.map((s) => s.tensor.name), 'without includeOutput both plan the same tensors');
});

t.test('a checkpoint is resumed only with the same includeOutput', async (t) => {
  const path = await fixtureModel({ shape: 'tiny', type: 'q8_0', seed: 4 });
  const dir = t.testdir();
  const model = await StatsModel.open(path, { nCtx: 256 });
  t.teardown(() => model.dispose());
  const checkpoint = { path: `${dir}/cp.stats.gguf`, every: 2 };
  await model.collect(texts, { checkpoint });
  await t.rejects(model.collect(texts, { checkpoint: { ...checkpoint, resume: true }, includeOutput: true }), { code: 'ESTATS', message: /without the output head/ });
  const again = await model.collect(texts, { checkpoint: { ...checkpoint, resume: true } });
  t.equal(again.stats.samples, texts.length, 'the same setting resumes');
});

t.test('plain forward passes: skipHead ends at the final norm, llama.cpp\'s own graph otherwise', async (t) => {
  const path = await fixtureModel({ shape: 'tiny', type: 'q8_0', seed: 4 });
  const model = await StatsModel.open(path, { nCtx: 256 });
  t.teardown(() => model.dispose());
  const skip = await model.forward(texts, { pack: false, skipHead: true });
  const whole = await model.forward(texts, { pack: false });
  t.equal(skip.passesWithoutHead, skip.passes);
  t.equal(whole.passesWithoutHead, 0);
  // logits read after a stopped collection come from a whole graph (the shim clears the stop)
  const tokens = model.tokenize(texts[0]);
  const a = await model.logits(tokens);
  await model.collect(texts.slice(0, 2));
  const b = await model.logits(tokens);
  t.equal(differing(a.logits, b.logits), 0, 'logits() after a collection are the full graph\'s');
});

// Every architecture synth writes: the head is the only matmul after the final norm (an
// architecture without a node of that name would run to the end and keep the head's statistics,
// which the test would report as a failed stop)
for (const arch of ARCHS) {
  t.test(`${arch}: statistics without the head equal those of the full graph`, async (t) => {
    const path = await archModel(arch);
    const options = { nCtx: 256, nThreads: 1 } as const;
    const stopped = await collectStats(path, texts, options);
    const full = await collectStats(path, texts, { ...options, includeOutput: true });
    compare(t, stopped, full, arch);
  });
}
