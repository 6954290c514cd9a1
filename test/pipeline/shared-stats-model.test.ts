// One load of the model for both calibration sets: boost, tune and the overlap study collect the
// math and the general set on one StatsModel (SharedStatsModel). Each set's statistics must be
// those a fresh load gives (every pass starts from an empty KV cache), and the model is opened once.
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { calibrationStats, SharedStatsModel, withSharedStatsModel } from '../../src/pipeline.ts';
import { openModelSync } from '../../src/gguf/model.ts';
import { StatsModel } from '../../src/stats/index.ts';
import { fixtureModel } from '../helpers/fixtures.ts';

/** Counts StatsModel.open calls while `run` runs. */
async function countingOpens<T>(run: () => Promise<T>): Promise<{ value: T; opens: number }> {
  const open = StatsModel.open;
  let opens = 0;
  StatsModel.open = (async (...args: Parameters<typeof open>) => { opens++; return open.apply(StatsModel, args); }) as typeof open;
  try {
    return { value: await run(), opens };
  } finally {
    StatsModel.open = open;
  }
}

t.test('both sets on one load equal each set on its own load, byte for byte', async (t) => {
  const model = await fixtureModel({ shape: 'tiny', type: 'q8_0', seed: 23 });
  const info = openModelSync(model);
  const options = { samples: 3, nThreads: 1 };
  const alone = await countingOpens(async () => ({
    math: await calibrationStats(info, 'math', { builtin: 'math' }, { ...options, cacheDir: path.join(t.testdir(), 'alone-cache') }),
    general: await calibrationStats(info, 'general', { builtin: 'general' }, { ...options, cacheDir: path.join(t.testdirName, 'alone-cache') }),
  }));
  t.equal(alone.opens, 2, 'without a shared model every set loads the model');
  const cacheDir = path.join(t.testdirName, 'shared-cache');
  // general first this time: what ran before a set on the same model must not matter
  const shared = await countingOpens(() => withSharedStatsModel(model, options, async (statsModel) => ({
    general: await calibrationStats(info, 'general', { builtin: 'general' }, { ...options, cacheDir, statsModel }),
    math: await calibrationStats(info, 'math', { builtin: 'math' }, { ...options, cacheDir, statsModel }),
  })));
  t.equal(shared.opens, 1, 'one load for both sets');
  for (const which of ['math', 'general'] as const) {
    const a = alone.value[which], b = shared.value[which];
    t.equal(b.cached, false);
    t.equal(b.tokens, a.tokens, `${which}: same tokens`);
    t.ok(readFileSync(a.path).equals(readFileSync(b.path)), `${which}: the statistics files are identical`);
  }
  // cache hits never open it
  const hits = await countingOpens(() => withSharedStatsModel(model, options, async (statsModel) => calibrationStats(info, 'math', { builtin: 'math' }, { ...options, cacheDir, statsModel })));
  t.equal(hits.value.cached, true);
  t.equal(hits.opens, 0, 'a cache hit loads nothing');
});

t.test('a shared model of another file is refused; a failed load is retried by the next set', async (t) => {
  const model = await fixtureModel({ shape: 'tiny', type: 'q8_0', seed: 23 });
  const other = await fixtureModel({ shape: 'tiny', type: 'f32', seed: 24 });
  const info = openModelSync(model);
  const cacheDir = t.testdir();
  const wrong = new SharedStatsModel(other, { nThreads: 1 });
  await t.rejects(calibrationStats(info, 'math', { builtin: 'math' }, { samples: 1, cacheDir, statsModel: wrong }), { code: 'EUSAGE' });
  await wrong.dispose();

  const shared = new SharedStatsModel(model, { nThreads: 1 });
  process.env.MATHNEURO_TEST_REFUSE_LOAD = '1';
  try {
    await t.rejects(calibrationStats(info, 'math', { builtin: 'math' }, { samples: 1, cacheDir, statsModel: shared }), { code: 'ELOAD' });
  } finally {
    delete process.env.MATHNEURO_TEST_REFUSE_LOAD;
  }
  const r = await calibrationStats(info, 'math', { builtin: 'math' }, { samples: 1, cacheDir, statsModel: shared });
  t.equal(r.samples, 1, 'the next set loads it');
  await shared.dispose();
  await shared.dispose();   // twice is harmless
});
