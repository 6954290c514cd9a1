// `mathneuro quantize`: help, usage errors, a Q8_0 copy of a generated model with --json, and an
// importance matrix from a statistics file written by mathneuro stats' own saver.
import t from 'tap';
import path from 'node:path';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { collectStats, saveStats } from '../../src/stats/index.ts';
import { synthModel } from '../../src/synth.ts';
import { run } from '../helpers/cli.ts';

process.env.OMP_WAIT_POLICY ??= 'passive';

t.test('mathneuro quantize', async (t) => {
  const dir = t.testdir();
  const top = await run(['--help']);
  t.match(top.stdout, /^ {2}quantize /m, 'listed in the command help');
  const help = await run(['quantize', '--help']);
  t.equal(help.code, 0);
  t.match(help.stdout, /^usage: mathneuro quantize/m);
  t.match(help.stdout, /^examples:/m);
  for (const argv of [['quantize'], ['quantize', 'a.gguf', 'b.gguf'], ['quantize', 'a.gguf', 'b.gguf', '--type', 'q9'], ['quantize', 'a.gguf', '--type', 'q8_0'], ['quantize', 'a', 'b', '--type', 'q8_0', '--bogus']]) {
    const r = await run([...argv, '--json']);
    t.equal(r.code, 2, `${argv.join(' ')}: usage error`);
    t.equal(JSON.parse(r.stdout).error.code, 'EUSAGE');
  }
  const missing = await run(['quantize', path.join(dir, 'none.gguf'), path.join(dir, 'o.gguf'), '--type', 'q8_0', '--json']);
  t.equal(missing.code, 1);
  t.equal(JSON.parse(missing.stdout).error.code, 'ENOENT');

  const src = (await synthModel({ out: path.join(dir, 'm.gguf'), shape: 'tiny', type: 'f32', seed: 9 })).path;
  const out = path.join(dir, 'm-q8.gguf');
  const r = await run(['quantize', src, out, '--type', 'q8_0', '--json']);
  t.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  t.equal(j.ok, true);
  t.equal(j.type, 'Q8_0');
  t.equal(readGgufSync(out).tensorByName.get('blk.0.ffn_up.weight')!.typeName, 'Q8_0');
  t.equal((await run(['quantize', src, out, '--type', 'q8_0', '--json'])).code, 1, 'an existing output without --force fails');

  // statistics file as importance matrix
  const { stats } = await collectStats(src, ['The cat sat on the mat.', 'Two plus two is four.'], { nThreads: 1, nCtx: 64 });
  const statsFile = path.join(dir, 'm.stats.gguf');
  await saveStats(stats, statsFile);
  const w = await run(['quantize', src, path.join(dir, 'm-q4k.gguf'), '--type', 'q4_k', '--imatrix', statsFile]);
  t.equal(w.code, 0, w.stderr);
  t.match(w.stdout, /with the importance matrix/);
});
