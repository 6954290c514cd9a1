// Long runs: statistics collection checkpoints every N samples; a run cut short (AbortSignal, or
// kill -9 of the CLI right after a checkpoint) and continued with --resume writes the same bytes
// as an uninterrupted run with the same --checkpoint-every (same summation order).
import t from 'tap';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { MathneuroError } from '../../src/errors.ts';
import { collectStats, saveStats } from '../../src/stats/index.ts';
import { fixtureModel, repoRoot } from '../helpers/fixtures.ts';

const texts = Array.from({ length: 11 }, (_, i) => `Sample ${i}: ${i} + ${i * 3} = ${i * 4}. ${'The quick brown fox. '.repeat(1 + (i % 4))}`);

t.test('AbortSignal part way, then resume: identical file', async (t) => {
  const dir = t.testdir();
  const model = await fixtureModel({ shape: 'tiny', type: 'q8_0', seed: 4 });
  const cpPath = path.join(dir, 'run.partial');
  const every = 3;
  const whole = await collectStats(model, texts, { dataset: 'd', checkpoint: { path: path.join(dir, 'whole.partial'), every }, nThreads: 1 });
  await saveStats(whole.stats, path.join(dir, 'whole.gguf'));
  t.notOk(existsSync(path.join(dir, 'whole.partial')), 'a finished run removes its checkpoint');

  const controller = new AbortController();
  try {
    await collectStats(model, texts, {
      dataset: 'd', signal: controller.signal, nThreads: 1, checkpoint: { path: cpPath, every },
      onProgress: (p) => { if (p.samplesDone >= 2 * every + 1) controller.abort(); },
    });
    t.fail('should have been cancelled');
  } catch (e) {
    t.equal((e as MathneuroError).code, 'EABORT');
  }
  t.ok(existsSync(cpPath), 'the checkpoint survives the cancellation');
  const resumed = await collectStats(model, texts, { dataset: 'd', nThreads: 1, checkpoint: { path: cpPath, every, resume: true } });
  t.equal(resumed.stats.samples, texts.length, 'every sample counted once');
  await saveStats(resumed.stats, path.join(dir, 'resumed.gguf'));
  t.ok(readFileSync(path.join(dir, 'resumed.gguf')).equals(readFileSync(path.join(dir, 'whole.gguf'))), 'byte-identical to the uninterrupted run');
});

t.test('a checkpoint of other texts is refused, not mixed in', async (t) => {
  const dir = t.testdir();
  const model = await fixtureModel({ shape: 'tiny', type: 'q8_0', seed: 4 });
  const cpPath = path.join(dir, 'run.partial');
  const controller = new AbortController();
  await collectStats(model, texts, {
    nThreads: 1, signal: controller.signal, checkpoint: { path: cpPath, every: 3 },
    onProgress: (p) => { if (p.samplesDone >= 4) controller.abort(); },
  }).catch(() => undefined);
  t.ok(existsSync(cpPath));
  const other = texts.map((x) => x.toUpperCase());
  await t.rejects(collectStats(model, other, { nThreads: 1, checkpoint: { path: cpPath, every: 3, resume: true } }), { code: 'ESTATS', message: /other texts/ });
  await t.rejects(collectStats(model, texts.slice(1), { nThreads: 1, checkpoint: { path: cpPath, every: 3, resume: true } }), { code: 'ESTATS', message: /another input/ });
});

t.test('CLI: kill -9 after a checkpoint, then --resume: identical file', async (t) => {
  const dir = t.testdir();
  const model = await fixtureModel({ shape: 'tiny', type: 'q8_0', seed: 4 });
  writeFileSync(path.join(dir, 'd.txt'), texts.join('\n\n') + '\n');
  const cli = (env: Record<string, string>, ...args: string[]) => spawnSync(process.execPath, [path.join(repoRoot, 'scripts', 'mathneuro.mjs'), ...args], {
    encoding: 'utf8', env: { ...process.env, ...env },
  });
  const common = ['--data', path.join(dir, 'd.txt'), '--checkpoint-every', '2', '--threads', '1', '--seed', '7', '--samples', '9', '--quiet'];
  const whole = cli({}, 'stats', model, ...common, '-o', path.join(dir, 'whole.gguf'));
  t.equal(whole.status, 0, whole.stderr);
  for (const killAfter of [1, 3]) {
    const out = path.join(dir, `resumed-${killAfter}.gguf`);
    const killed = cli({ MATHNEURO_TEST_KILL_AFTER_CHECKPOINT: String(killAfter) }, 'stats', model, ...common, '-o', out);
    t.equal(killed.signal, 'SIGKILL', `killed after checkpoint ${killAfter}`);
    t.notOk(existsSync(out), 'no output from the killed run');
    t.ok(existsSync(`${out}.partial`), 'its checkpoint is there');
    // what a kill -9 inside a save leaves: the writer's temporary (pid of a process that is gone)
    writeFileSync(`${out}.partial.4194303.tmp`, 'half a checkpoint');
    const resumed = cli({}, 'stats', model, ...common, '--resume', '-o', out);
    t.equal(resumed.status, 0, resumed.stderr);
    t.ok(readFileSync(out).equals(readFileSync(path.join(dir, 'whole.gguf'))), `resumed after checkpoint ${killAfter}: byte-identical`);
    t.notOk(existsSync(`${out}.partial`), 'checkpoint removed at the end');
  }
  const left = readdirSync(dir).filter((f) => f.endsWith('.tmp'));
  t.same(left, [], 'no temporary files left (stale ones of killed writers removed)');
});
