// Disk full: a file-size limit (ulimit -f, SIGXFSZ ignored so writes fail with EFBIG) and, where
// mounting is permitted, a 2 MiB tmpfs (ENOSPC). Writers give one clear EIO line, leave no temporary
// file, and leave what was at the destination (and the source) as it was.
import t from 'tap';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fixtureModel, repoRoot } from '../helpers/fixtures.ts';

const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');
const cliPath = path.join(repoRoot, 'scripts', 'mathneuro.mjs');

/** Runs `code` (an ES module body with the library imported as lib) under a file-size limit in KiB. */
function underLimit(limitKiB: number, code: string) {
  const script = `process.on('SIGXFSZ', () => {});
const lib = { ...(await import(${JSON.stringify(path.join(repoRoot, 'src', 'synth.ts'))})), ...(await import(${JSON.stringify(path.join(repoRoot, 'src', 'stats', 'index.ts'))})) };
try { ${code}; console.log(JSON.stringify({ ok: true })); }
catch (e) { console.log(JSON.stringify({ ok: false, code: e.code, message: e.message })); }`;
  const r = spawnSync('bash', ['-c', `ulimit -f ${limitKiB} && exec "$0" --import tsx --input-type=module -e "$1"`, process.execPath, script], { encoding: 'utf8', cwd: repoRoot });
  const last = r.stdout.trim().split('\n').pop() ?? '';
  try { return { ...JSON.parse(last), signal: r.signal, stderr: r.stderr }; } catch { return { ok: undefined, signal: r.signal, stderr: r.stderr + r.stdout }; }
}

t.test('file-size limit: synth and saveStats fail cleanly', async (t) => {
  const dir = t.testdir({ 'existing.gguf': 'an older file that must survive' });
  const model = await fixtureModel({ shape: 'tiny', type: 'q8_0', seed: 4 });
  const before = sha(model);
  const synth = underLimit(2048, `await lib.synthModel({ out: ${JSON.stringify(path.join(dir, 'existing.gguf'))}, shape: 'tiny', type: 'q8_0', overwrite: true })`);
  t.equal(synth.signal, null, 'not killed by SIGXFSZ');
  t.equal(synth.ok, false, synth.stderr);
  t.equal(synth.code, 'EIO');
  t.match(synth.message, /^file too large \(a file-size limit\) while writing .*existing\.gguf; no partial file was left and the source is untouched$/);
  t.equal(readFileSync(path.join(dir, 'existing.gguf'), 'utf8'), 'an older file that must survive', 'the destination is untouched');

  const stats = underLimit(16, `const r = await lib.collectStats(${JSON.stringify(model)}, ['one plus one is two.'], { nThreads: 1 });
    await lib.saveStats(r.stats, ${JSON.stringify(path.join(dir, 's.gguf'))})`);
  t.equal(stats.ok, false, stats.stderr);
  t.equal(stats.code, 'EIO');
  t.match(stats.message, /file too large .* while writing .*s\.gguf; no partial file was left/);
  t.same(readdirSync(dir).sort(), ['existing.gguf'], 'no temporary or partial files');
  t.equal(sha(model), before, 'the model is untouched');
});

t.test('a full 2 MiB tmpfs: the CLI prints one line, nothing is left', async (t) => {
  const dir = t.testdir();
  // outside the test directory: tap removes that before teardown runs, and a mount point is busy
  const small = mkdtempSync(path.join(tmpdir(), 'mathneuro-full-'));
  const mount = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', small], { encoding: 'utf8' });
  if (mount.status !== 0) { rmSync(small, { recursive: true, force: true }); t.skip(`cannot mount a tmpfs here (${mount.stderr.trim()}); the file-size-limit test covers the same paths`, () => {}); return; }
  t.teardown(() => { spawnSync('umount', [small]); rmSync(small, { recursive: true, force: true }); });
  const model = await fixtureModel({ shape: 'tiny', type: 'q8_0', seed: 4 });
  const before = sha(model);
  const synth = spawnSync(process.execPath, [cliPath, 'synth', path.join(small, 'm.gguf'), '--shape', 'tiny', '--type', 'q8_0'], { encoding: 'utf8' });
  t.equal(synth.status, 1);
  t.match(synth.stderr, /^mathneuro synth: no space left on device while writing .*m\.gguf; no partial file was left and the source is untouched\n$/);
  t.same(readdirSync(small), [], 'nothing left on the full disk');
  // fill the disk but for a few KiB, then write statistics (~100 KiB)
  writeFileSync(path.join(small, 'filler'), Buffer.alloc(2 * 1024 * 1024 - 12 * 1024, 7));
  writeFileSync(path.join(dir, 'd.txt'), 'One plus one is two.\n');
  // the statvfs check says so before any forward pass; with it out of the way (a test hook), the writer's ENOSPC does
  const early = spawnSync(process.execPath, [cliPath, 'stats', model, '--data', path.join(dir, 'd.txt'), '-o', path.join(small, 's.gguf'), '--threads', '1', '--json'], { encoding: 'utf8' });
  t.equal(early.status, 1, early.stderr);
  t.match(early.stderr, /^mathneuro stats: not enough disk space for the statistics file in .*: it needs .*, .* free\n$/);
  t.same(readdirSync(small), ['filler'], 'nothing written');
  const noStatfs = { ...process.env, MATHNEURO_TEST_FREE_BYTES: String(2 ** 50) };
  const stats = spawnSync(process.execPath, [cliPath, 'stats', model, '--data', path.join(dir, 'd.txt'), '-o', path.join(small, 's.gguf'), '--threads', '1', '--json'], { encoding: 'utf8', env: noStatfs });
  t.equal(stats.status, 1, stats.stderr);
  t.equal(JSON.parse(stats.stdout).error.code, 'EIO');
  t.match(stats.stderr, /no space left on device while writing .*s\.gguf/);
  t.equal(stats.stderr.trim().split('\n').length, 1, 'one line');
  t.same(readdirSync(small), ['filler'], 'no partial statistics file');
  t.equal(sha(model), before, 'the model is untouched');
  // a patched copy (12 MiB) onto the full disk: one line, no temporary, the model untouched
  const statsFile = path.join(dir, 's.gguf');
  const made = spawnSync(process.execPath, [cliPath, 'stats', model, '--data', path.join(dir, 'd.txt'), '-o', statsFile, '--threads', '1'], { encoding: 'utf8' });
  t.equal(made.status, 0, made.stderr);
  const patchEarly = spawnSync(process.execPath, [cliPath, 'patch', model, '-o', path.join(small, 'p.gguf'), '--math', statsFile, '--method', 'wanda', '--top-k', '0.05'], { encoding: 'utf8' });
  t.equal(patchEarly.status, 1, patchEarly.stderr);
  t.match(patchEarly.stderr, /^mathneuro patch: not enough disk space for the output in .*: it needs .*, .* free\n$/);
  const patched = spawnSync(process.execPath, [cliPath, 'patch', model, '-o', path.join(small, 'p.gguf'), '--math', statsFile, '--method', 'wanda', '--top-k', '0.05'], { encoding: 'utf8', env: noStatfs });
  t.equal(patched.status, 1, patched.stderr);
  t.match(patched.stderr, /no space left on device while writing .*p\.gguf; no partial file was left/);
  t.equal(patched.stderr.trim().split('\n').length, 1, 'one line');
  t.same(readdirSync(small), ['filler'], 'no partial patched file');
  t.equal(sha(model), before, 'the model is untouched');
});
