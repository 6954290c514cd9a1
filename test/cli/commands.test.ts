// Every command: --help with examples (exit 0), unknown options and missing arguments (exit 2, one
// line on stderr, no stack), failures (exit 1), --json errors as {ok:false,error:{code,message}},
// and the --json shapes of successful runs of the pipeline commands on a generated model.
import t from 'tap';
import { copyFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { run } from '../helpers/cli.ts';
import { fixtureModel } from '../helpers/fixtures.ts';

const ALL = ['boost', 'tune', 'ablate', 'synth', 'stats', 'select', 'patch', 'unpatch', 'inspect', 'eval', 'report', 'overlap', 'quantize', 'doctor'];

t.test('help, usage errors and failures of every command', async (t) => {
  const dir = t.testdir();
  const top = await run(['--help']);
  t.equal(top.code, 0);
  for (const name of ALL) t.match(top.stdout, new RegExp(`^  ${name} `, 'm'), `${name} is listed`);
  t.equal((await run([])).code, 2, 'no command: usage');
  t.equal((await run(['frobnicate'])).code, 2, 'unknown command: usage');
  for (const name of ALL) {
    const help = await run([name, '--help']);
    t.equal(help.code, 0, `${name} --help exits 0`);
    t.match(help.stdout, /^usage: mathneuro /m, `${name} --help has a usage line`);
    t.match(help.stdout, /^examples?:/m, `${name} --help has examples`);
    t.match(help.stdout, /--json/, `${name} --help documents --json`);

    const bad = await run([name, '--no-such-option', '--json']);
    t.equal(bad.code, 2, `${name}: unknown option exits 2`);
    t.equal(bad.stderr.trim().split('\n').length, 1, `${name}: one line on stderr`);
    t.notMatch(bad.stderr, /\n\s+at /, `${name}: no stack trace`);
    t.same(Object.keys(JSON.parse(bad.stdout)), ['ok', 'error'], `${name}: --json error object`);
    t.equal(JSON.parse(bad.stdout).error.code, 'EUSAGE');
  }
  // missing required arguments: usage (2)
  for (const argv of [['boost'], ['ablate'], ['report', 'm.gguf'], ['overlap'], ['stats', 'm.gguf'], ['boost', 'm.gguf', '--top-k', '0'], ['boost', 'm.gguf', '--scale', 'x'], ['boost', 'm.gguf', '--requant', 'fastest'], ['overlap', 'm.gguf', '--sizes', '1,0'], ['overlap', 'm.gguf', '--subsets', '1'], ['report', 'm.gguf', '--math', 'a', '--general', 'b', '--prune', '--scale', '2'], ['boost', 'ollama:../x']]) {
    const r = await run([...argv, '--json']);
    t.equal(r.code, 2, `${argv.join(' ')}: exit 2`);
    t.equal(JSON.parse(r.stdout).error.code, 'EUSAGE');
  }
  // failures: a missing model (1), a file that is not a GGUF (1), an Ollama model not in the store (1)
  writeFileSync(path.join(dir, 'text.gguf'), 'hello, not a model');
  for (const [argv, code] of [
    [['boost', path.join(dir, 'missing.gguf')], 'ENOENT'], [['ablate', path.join(dir, 'text.gguf')], 'EBADGGUF'],
    [['overlap', path.join(dir, 'missing.gguf')], 'ENOENT'], [['report', path.join(dir, 'missing.gguf'), '--math', 'a', '--general', 'b', '-o', path.join(dir, 'r.html')], 'ENOENT'],
    [['boost', 'ollama:nothere:1b'], 'ENOENT'],
  ] as const) {
    const r = await run([...argv, '--json'], { OLLAMA_MODELS: path.join(dir, 'store') });
    t.equal(r.code, 1, `${argv[0]} ${argv[1]}: exit 1`);
    t.equal(JSON.parse(r.stdout).error.code, code);
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
    const verbose = await run([...argv, '--verbose'], { OLLAMA_MODELS: path.join(dir, 'store') });
    t.match(verbose.stderr, /\n\s+at /, '--verbose adds the stack');
  }
});

t.test('--json shapes of boost, ablate, report and overlap', async (t) => {
  const dir = t.testdir();
  const model = path.join(dir, 'tiny.gguf');
  copyFileSync(await fixtureModel({ shape: 'tiny', type: 'q8_0', seed: 21 }), model);
  const env = { MATHNEURO_CACHE_DIR: path.join(dir, 'cache') };
  const b = await run(['boost', model, '--samples', '3', '--no-check', '--modelfile', '--json', '--top-k', '10%'], env);
  t.equal(b.code, 0, b.stderr);
  t.equal(b.stderr, '', 'nothing on stderr with --json');
  const bj = JSON.parse(b.stdout);
  t.same(Object.keys(bj).sort(), ['check', 'elapsedMs', 'intervention', 'method', 'model', 'modelfile', 'ok', 'output', 'patch', 'scale', 'statistics', 'topK'].filter((k) => k !== 'check' || 'check' in bj).sort());
  t.match(bj, { ok: true, intervention: 'scale', method: 'mathneuro', topK: 0.1, scale: 1.1, output: path.join(dir, 'tiny.boosted.gguf'), modelfile: { path: path.join(dir, 'tiny.boosted.Modelfile') } });
  t.match(bj.statistics.math, { cached: false, samples: 3, tokens: Number, path: String, dataset: 'builtin:math@1/seed0[0:3]' });
  t.match(bj.patch, { selectedWeights: Number, modelParameters: Number, realized: Array, mode: 'new-file' });
  t.ok(bj.statistics.math.path.startsWith(path.join(dir, 'cache', 'stats')), 'cache under $MATHNEURO_CACHE_DIR/stats');

  const k = await run(['boost', model, '--samples', '3', '--no-check', '--json', '--requant', 'keep-scale', '-o', path.join(dir, 'ks.gguf')], env);
  t.equal(k.code, 0, k.stderr);
  const kAll = JSON.parse(k.stdout).patch.realized.find((r: { type: string }) => r.type === 'all');
  t.ok(kAll.candidates['keep-scale'] > 0 && !kAll.candidates.plain && !kAll.candidates.weighted, `--requant keep-scale: only keep-scale blocks (${JSON.stringify(kAll.candidates)})`);
  t.equal(kAll.otherShareChanged, 0, 'keep-scale leaves the other weights of a block as they were');

  const a = await run(['ablate', model, '--samples', '3', '--json', '--kl-prompts', '1'], env);
  t.equal(a.code, 0, a.stderr);
  const aj = JSON.parse(a.stdout);
  t.match(aj, { ok: true, intervention: 'prune', topK: 0.15, scale: 0, statistics: { math: { cached: true } }, check: { kl: { prompts: 1, meanKl: Number, sameTopToken: Number } } });
  t.equal((await run(['ablate', model, '--samples', '3', '--scale', '2'], env)).code, 2, 'ablate has no --scale');

  const r = await run(['report', model, '--math', bj.statistics.math.path, '--general', bj.statistics.general.path, '--json', '--no-realized'], env);
  t.equal(r.code, 0, r.stderr);
  const rj = JSON.parse(r.stdout);
  t.match(rj, { ok: true, output: null, method: 'mathneuro', topK: 0.1, selection: { layers: ['0', '1'], kinds: Array, selected: Array, parameters: Array }, scores: { math: { edges: Array, counts: Array } } });
  t.equal(rj.selection.selectedTotal, bj.patch.selectedWeights, 'report selects what boost patched');
  t.equal(rj.realizedScale, undefined);

  const o = await run(['overlap', model, '--sizes', '1,2', '--subsets', '2', '--json', '-o', path.join(dir, 'ov.json')], env);
  t.equal(o.code, 0, o.stderr);
  const oj = JSON.parse(o.stdout);
  t.match(oj, { ok: true, method: 'mathneuro', topK: 0.1, samplesPerSet: 6, points: [{ samples: 1, subsets: 2, meanOverlap: Number, pairs: [{ a: String, b: String, intersection: Number, dice: Number, jaccard: Number }] }, { samples: 2 }] });
  const html = path.join(dir, 'r.html');
  const r2 = await run(['report', model, '--math', bj.statistics.math.path, '--general', bj.statistics.general.path, '--overlap', path.join(dir, 'ov.json'), '-o', html, '--quiet'], env);
  t.equal(r2.code, 0, r2.stderr);
  t.equal(r2.stdout, '', '--quiet prints nothing');
  t.equal((await run(['report', model, '--math', bj.statistics.math.path, '--general', bj.statistics.general.path, '-o', html], env)).code, 1, 'existing output: failure without --force');
});

t.test('colour only on a TTY and without NO_COLOR', async (t) => {
  const { colors } = await import('../../src/cli/common.ts');
  t.equal(colors({ isTTY: true }, {}).on, true);
  t.equal(colors({ isTTY: true }, { NO_COLOR: '' }).on, false, 'NO_COLOR, even empty');
  t.equal(colors({ isTTY: false }, {}).on, false);
  t.equal(colors({ isTTY: true }, { TERM: 'dumb' }).on, false);
  t.equal(colors({}, {}).red('x'), 'x');
  t.equal(colors({ isTTY: true }, {}).red('x'), '\x1b[31mx\x1b[0m');
});
