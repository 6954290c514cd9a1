// Inputs and paths: bad data files give clear errors (never a silent partial run); the output may
// not be the input (symbolic and hard links resolved); nothing is written beside the model.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, linkSync, readFileSync, readdirSync, symlinkSync, writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { MathneuroError } from '../../src/errors.ts';
import { readSamples } from '../../src/stats/index.ts';
import { fixtureModel, repoRoot } from '../helpers/fixtures.ts';
import { syntheticStatsFile } from '../patch/helpers.ts';

const cliPath = path.join(repoRoot, 'scripts', 'mathneuro.mjs');
const cli = (...args: string[]) => spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8' });
const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');

function dataError(file: string): string {
  try { readSamples(file); return 'accepted'; } catch (e) { return `${(e as MathneuroError).code}: ${(e as Error).message}`; }
}

t.test('data files: invalid UTF-8, empty lines, a 100 MB line, wrong CSV columns', async (t) => {
  const dir = t.testdir({
    'blank-lines.jsonl': '\n{"text":"a"}\n\n\n{"text":"b"}\n\n',
    'blank-lines.txt': '\n\nfirst block\n\n\n\nsecond block\n\n',
    'cols.csv': 'q,a,b,c,d,A\nq2,a,b,c,d,B,extra\n',
  });
  t.same(readSamples(path.join(dir, 'blank-lines.jsonl')).map((s) => s.text), ['a', 'b'], 'blank jsonl lines are skipped (documented)');
  t.same(readSamples(path.join(dir, 'blank-lines.txt')).map((s) => s.text), ['first block', 'second block'], 'blank lines separate txt samples');
  t.match(dataError(path.join(dir, 'cols.csv')), /^EDATA: .*cols\.csv:2: expected 6 columns .* found 7/);
  writeFileSync(path.join(dir, 'utf8.jsonl'), Buffer.concat([Buffer.from('{"text":"ok"}\n{"text":"bad '), Buffer.from([0xc3, 0x28]), Buffer.from('"}\n')]));
  t.match(dataError(path.join(dir, 'utf8.jsonl')), /^EDATA: .*utf8\.jsonl:2: invalid UTF-8/);
  const big = Buffer.alloc(100 * 1024 * 1024, 'x');
  for (const name of ['big.txt', 'big.jsonl']) {
    writeFileSync(path.join(dir, name), name.endsWith('.jsonl') ? Buffer.concat([Buffer.from('{"text":"short"}\n{"text":"'), big, Buffer.from('"}\n')]) : Buffer.concat([Buffer.from('short\n\n'), big, Buffer.from('\n')]));
    t.match(dataError(path.join(dir, name)), new RegExp(`^EDATA: .*${name.replace('.', '\\.')}:3?\\d*: one sample of 104857\\d+ bytes is more than the 4194304-byte limit`), `${name}: a 100 MB line is refused, not run`);
  }
});

t.test('stats and synth: output is never the input, nothing beside the model', async (t) => {
  const dir = t.testdir({ 'd.txt': 'One plus one is two.\n', models: {}, out: {} });
  const model = path.join(dir, 'models', 'm.gguf');
  copyFileSync(await fixtureModel({ shape: 'tiny', type: 'q8_0', seed: 4 }), model);
  const before = sha(model);
  symlinkSync(model, path.join(dir, 'out', 'link.gguf'));
  symlinkSync(path.join(dir, 'models'), path.join(dir, 'models-link'));
  linkSync(model, path.join(dir, 'out', 'hard.gguf'));
  const data = path.join(dir, 'd.txt');
  for (const [label, m, o] of [
    ['same path', model, model],
    ['output is a symlink to the model', model, path.join(dir, 'out', 'link.gguf')],
    ['model through a symlink, output its real path', path.join(dir, 'out', 'link.gguf'), model],
    ['through a linked folder', path.join(dir, 'models-link', 'm.gguf'), model],
    ['a hard link', model, path.join(dir, 'out', 'hard.gguf')],
  ]) {
    const r = cli('stats', m, '--data', data, '-o', o, '--force', '--quiet');
    t.equal(r.status, 2, `${label}: refused (${r.stderr.trim()})`);
    t.match(r.stderr, /would overwrite the model/);
    t.equal(sha(model), before, `${label}: the model is intact`);
  }
  const r = cli('stats', model, '--data', data, '-o', path.join(dir, 'out', 's.gguf'), '--checkpoint-every', '1', '--quiet');
  t.equal(r.status, 0, r.stderr);
  t.same(readdirSync(path.join(dir, 'models')), ['m.gguf'], 'nothing written beside the model');
  t.same(readdirSync(path.join(dir, 'out')).sort(), ['hard.gguf', 'link.gguf', 's.gguf'], 'only the output (the checkpoint is removed at the end)');
  const synthDir = path.join(dir, 'synth');
  mkdirSync(synthDir);
  t.equal(cli('synth', path.join(synthDir, 'x.gguf'), '--shape', 'tiny', '--type', 'q4_0', '--quiet').status, 0);
  t.same(readdirSync(synthDir), ['x.gguf'], 'synth writes its output and nothing else');
});

t.test('patch: output is never the input (symbolic links resolved)', async (t) => {
  const dir = t.testdir({ models: {}, out: {} });
  const model = path.join(dir, 'models', 'm.gguf');
  copyFileSync(await fixtureModel({ shape: 'tiny', type: 'q8_0', seed: 4 }), model);
  const before = sha(model);
  const math = await syntheticStatsFile(model, 1, path.join(dir, 'math.stats.gguf'));
  const general = await syntheticStatsFile(model, 2, path.join(dir, 'general.stats.gguf'));
  symlinkSync(model, path.join(dir, 'out', 'link.gguf'));
  const sel = ['--math', math, '--general', general, '--top-k', '1%', '--quiet', '--force'];
  const same = cli('patch', model, '-o', model, ...sel);
  t.equal(same.status, 2, 'same path refused');
  t.equal(sha(model), before);
  const viaLink = cli('patch', model, '-o', path.join(dir, 'out', 'link.gguf'), ...sel);
  t.equal(sha(model), before, 'output symlinked to the model: the model is intact');
  t.not(viaLink.status, 0, `output symlinked to the model: refused (${viaLink.stderr.trim()})`);
  const ok = cli('patch', model, '--in-place', ...sel);
  t.equal(ok.status, 0, ok.stderr);
  t.same(readdirSync(path.join(dir, 'models')).sort(), ['m.gguf', 'm.gguf.mathneuro-undo'], 'in place: only the documented journal beside the model');
  t.equal(cli('unpatch', model, '--quiet').status, 0);
  t.same(readdirSync(path.join(dir, 'models')), ['m.gguf'], 'unpatch removes the journal');
  t.equal(sha(model), before);
  // the model given through a symlink and -o its real path: with --force this replaced the source
  const victim = path.join(dir, 'out', 'victim.gguf');
  copyFileSync(model, victim);
  symlinkSync(victim, path.join(dir, 'out', 'victim-link.gguf'));
  const through = cli('patch', path.join(dir, 'out', 'victim-link.gguf'), '-o', victim, ...sel);
  t.not(through.status, 0, 'model through a symlink, output its real path: refused');
  t.equal(sha(victim), before, 'the source is intact');
});
