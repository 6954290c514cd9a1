// A selection file records the model's identity (device, inode, size, modification and change
// times) beside its sha256 when the model had settled before it was hashed; a patch from it takes
// the sha256 from there while the identity still matches, and hashes the model otherwise. The hash
// memo does the same across commands. Checked against the real sha256 (node:crypto over the whole
// file) and against patches that hash.
import t from 'tap';
import { copyFileSync, existsSync, openSync, closeSync, readdirSync, rmSync, statSync, utimesSync, writeSync, readSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { SelectionFile } from '../../src/select/file.ts';
import { patchModel, unpatchModel } from '../../src/patch/patch.ts';
import { SETTLED_MS } from '../../src/core/file-identity.ts';
import { cli, cycleModelIn, sha256, syntheticStatsFile, tensorBytes, workDir } from './helpers.ts';
import { readFileSync, writeFileSync } from 'node:fs';

const dir = path.join(workDir, 'selection-hash');

/** Waits until the file last changed more than SETTLED_MS ago (by its change time). */
async function settle(file: string) {
  const ctimeMs = Number(statSync(file, { bigint: true }).ctimeNs / 1000000n);
  const wait = ctimeMs + SETTLED_MS + 200 - Date.now();
  if (wait > 0) await sleep(wait);
}

/** The metadata of a patched file except its patch time, and every tensor's bytes. */
function contentsOf(file: string) {
  const info = readGgufSync(file);
  return {
    metadata: info.metadataEntries.filter((e) => e.key !== 'mathneuro.patched_at').map((e) => [e.key, String(e.value)]),
    tensors: info.tensors.map((x) => [x.name, tensorBytes(info, x).toString('base64')]),
  };
}

t.test('a patch takes the sha256 from a selection made on the same, unchanged file', async (t) => {
  const { model, math } = await cycleModelIn(dir, 11);
  const general = await syntheticStatsFile(model, 12, path.join(dir, 'general.stats.gguf'));
  const real = sha256(model);
  await settle(model);

  const sel = path.join(dir, 'sel.mnsel');
  const s = await cli(['select', model, '--math', math, '--general', general, '--top-k', '2%', '-o', sel, '--quiet']);
  t.equal(s.code, 0, s.stderr);
  const recorded = SelectionFile.open(sel).index.model;
  t.equal(recorded.sha256, real);
  const st = statSync(model, { bigint: true });
  t.same(recorded.files, [{ dev: String(st.dev), ino: String(st.ino), size: Number(st.size), mtimeNs: String(st.mtimeNs), ctimeNs: String(st.ctimeNs), sha256: real }], 'the selection records the model as it was hashed');

  const reused = path.join(dir, 'reused.gguf'), hashed = path.join(dir, 'hashed.gguf');
  const a = await cli(['patch', model, '-o', reused, '--selection', sel, '--json']);
  t.equal(a.code, 0, a.stderr);
  t.equal(JSON.parse(a.stdout).source.hashed, false, 'not hashed again');
  t.equal(JSON.parse(a.stdout).source.sha256, real);
  t.equal(readGgufSync(reused).metadata.get('mathneuro.source.sha256'), real, 'the header names the real sha256');
  const b = await cli(['patch', model, '-o', hashed, '--selection', sel, '--rehash', '--json']);
  t.equal(b.code, 0, b.stderr);
  t.equal(JSON.parse(b.stdout).source.hashed, true, '--rehash hashes');
  t.same(contentsOf(reused), contentsOf(hashed), 'the same file either way (but for the patch time)');

  // only the times changed (touch): hashed again, and still the same model
  const later = new Date(Date.now() - 60_000);
  utimesSync(model, later, later);
  const c = await cli(['patch', model, '-o', path.join(dir, 'touched.gguf'), '--selection', sel, '--json']);
  t.equal(c.code, 0, c.stderr);
  t.equal(JSON.parse(c.stdout).source.hashed, true, 'a touched model is hashed again');
  t.equal(JSON.parse(c.stdout).source.sha256, real);

  // a model whose times are not well before the hash (here: in the future) records no identity
  const future = new Date(Date.now() + 3600_000);
  utimesSync(model, future, future);
  const s2 = await cli(['select', model, '--math', math, '--general', general, '--top-k', '2%', '-o', sel, '--force', '--quiet']);
  t.equal(s2.code, 0, s2.stderr);
  t.equal(SelectionFile.open(sel).index.model.files, undefined, 'not settled before the hash: no identity recorded');
  t.equal(SelectionFile.open(sel).index.model.sha256, real);
  const e = await cli(['patch', model, '-o', path.join(dir, 'unsettled.gguf'), '--selection', sel, '--json']);
  t.equal(e.code, 0, e.stderr);
  t.equal(JSON.parse(e.stdout).source.hashed, true, 'so the patch hashes');

  // one byte changed and the modification time put back: the change time tells, the hash refuses
  utimesSync(model, later, later);
  await settle(model);
  t.equal((await cli(['select', model, '--math', math, '--general', general, '--top-k', '2%', '-o', sel, '--force', '--quiet'])).code, 0);
  t.ok(SelectionFile.open(sel).index.model.files, 'settled again: recorded');
  const before = statSync(model);
  const lastTensor = readGgufSync(model).tensors.at(-1)!;
  const fd = openSync(model, 'r+');
  const one = Buffer.alloc(1);
  readSync(fd, one, 0, 1, lastTensor.absoluteOffset);
  one[0] ^= 0x01;
  writeSync(fd, one, 0, 1, lastTensor.absoluteOffset);
  closeSync(fd);
  utimesSync(model, before.atime, before.mtime);
  t.equal(statSync(model).mtimeMs, before.mtimeMs, 'the modification time is the old one');
  const changed = path.join(dir, 'changed.gguf');
  const d = await cli(['patch', model, '-o', changed, '--selection', sel]);
  t.equal(d.code, 1);
  t.match(d.stderr, /was made on another file/, 'the changed model is hashed and refused');
  t.notOk(existsSync(changed));
});

t.test('a model changed while it is patched: nothing is written', async (t) => {
  const model = path.join(dir, 'model.gguf');
  const sel = path.join(dir, 'sel.mnsel');
  await settle(model);
  const math = path.join(dir, 'math.stats.gguf'), general = path.join(dir, 'general.stats.gguf');
  t.equal((await cli(['select', model, '--math', math, '--general', general, '--top-k', '2%', '-o', sel, '--force', '--quiet'])).code, 0);
  t.ok(SelectionFile.open(sel).index.model.files);
  const out = path.join(dir, 'during.gguf');
  let touched = false;
  await t.rejects(patchModel({
    model, out, selection: sel,
    onProgress: (p) => { if (!touched && p.phase === 'patch') { touched = true; const now = new Date(); utimesSync(model, now, now); } },
  }), { code: 'EIO', message: /changed while it was being patched/ });
  t.ok(touched);
  t.notOk(existsSync(out), 'no output');
  t.notOk(readdirSync(dir).some((f) => f.includes('mathneuro-tmp')), 'no temporary left behind');
});

t.test('in place: the journal gets the selection\'s sha256, and unpatch verifies it', async (t) => {
  const model = path.join(dir, 'model.gguf');
  const real = sha256(model);
  const sel = path.join(dir, 'sel.mnsel');
  await settle(model);
  const math = path.join(dir, 'math.stats.gguf'), general = path.join(dir, 'general.stats.gguf');
  t.equal((await cli(['select', model, '--math', math, '--general', general, '--top-k', '2%', '-o', sel, '--force', '--quiet'])).code, 0);
  const r = await cli(['patch', model, '--in-place', '--selection', sel, '--json']);
  t.equal(r.code, 0, r.stderr);
  t.equal(JSON.parse(r.stdout).source.hashed, false);
  t.not(sha256(model), real, 'patched');
  const u = await unpatchModel(model);
  t.equal(u.sha256, real, 'restored and verified against the sha256 the selection gave the journal');
});

t.test('the hash memo: remembered when hashed, trusted while the model is unchanged, --rehash and a broken memo', async (t) => {
  const model = path.join(dir, 'memo-model.gguf');
  copyFileSync(path.join(dir, 'model.gguf'), model);
  const real = sha256(model);
  const math = path.join(dir, 'math.stats.gguf'), general = path.join(dir, 'general.stats.gguf');
  const cache = path.join(dir, 'memo-cache'), memoFile = path.join(cache, 'file-hashes.json');
  const env = { MATHNEURO_CACHE_DIR: cache };
  rmSync(cache, { recursive: true, force: true });
  await settle(model);

  // from statistics (no selection file): hashed the first time, from the memo the second
  const patchArgs = (out: string) => ['patch', model, '-o', path.join(dir, out), '--math', math, '--general', general, '--top-k', '2%', '--force', '--json'];
  const first = await cli(patchArgs('m1.gguf'), env);
  t.equal(first.code, 0, first.stderr);
  t.equal(JSON.parse(first.stdout).source.hashed, true);
  const memo = JSON.parse(readFileSync(memoFile, 'utf8'));
  const key = Object.keys(memo.entries).find((k) => k.endsWith('memo-model.gguf'))!;
  t.ok(key, 'remembered by real path');
  t.equal(memo.entries[key].sha256, real);
  const second = await cli(patchArgs('m2.gguf'), env);
  t.equal(second.code, 0, second.stderr);
  t.equal(JSON.parse(second.stdout).source.hashed, false, 'the second patch takes it from the memo');
  t.equal(readGgufSync(path.join(dir, 'm2.gguf')).metadata.get('mathneuro.source.sha256'), real);
  t.same(contentsOf(path.join(dir, 'm1.gguf')), contentsOf(path.join(dir, 'm2.gguf')));

  // the memo is trusted while the identity matches (here: a wrong sha256 planted in it), and
  // --rehash does not read it
  memo.entries[key].sha256 = memo.entries[key].files[0].sha256 = 'ab'.repeat(32);
  writeFileSync(memoFile, JSON.stringify(memo));
  const sel = path.join(dir, 'memo.mnsel');
  t.equal((await cli(['select', model, '--math', math, '--general', general, '--top-k', '2%', '-o', sel, '--force', '--quiet'], env)).code, 0);
  t.equal(SelectionFile.open(sel).index.model.sha256, 'ab'.repeat(32), 'select takes the memo\'s sha256 while the identity matches');
  t.equal((await cli(['select', model, '--math', math, '--general', general, '--top-k', '2%', '-o', sel, '--force', '--quiet', '--rehash'], env)).code, 0);
  t.equal(SelectionFile.open(sel).index.model.sha256, real, '--rehash hashes');
  t.equal(JSON.parse(readFileSync(memoFile, 'utf8')).entries[key].sha256, real, 'and remembers the real one');
  const r = await cli([...patchArgs('m3.gguf'), '--rehash'], env);
  t.equal(JSON.parse(r.stdout).source.hashed, true, 'patch --rehash hashes');

  // a selection made on another file is refused when the model's sha256 comes from the memo too
  const other = path.join(dir, 'memo-other.gguf');
  rmSync(path.join(dir, 'o1.gguf'), { force: true });
  copyFileSync(model, other);
  const at = readGgufSync(other).tensors.at(-1)!.absoluteOffset;
  const ofd = openSync(other, 'r+');
  const b = Buffer.alloc(1);
  readSync(ofd, b, 0, 1, at);
  b[0] ^= 0x01;
  writeSync(ofd, b, 0, 1, at);
  closeSync(ofd);
  await settle(other);
  const otherArgs = (out: string, ...more: string[]) => ['patch', other, '-o', path.join(dir, out), '--json', ...more];
  const o1 = await cli(otherArgs('o1.gguf', '--math', math, '--general', general, '--top-k', '2%'), env);
  t.equal(o1.code, 0, o1.stderr);
  const otherSha = sha256(other);
  t.equal(JSON.parse(o1.stdout).source.sha256, otherSha);
  t.not(otherSha, real);
  const o2 = await cli(otherArgs('o2.gguf', '--selection', sel, '--top-k', '2%'), env);
  t.equal(o2.code, 1, 'refused');
  t.match(o2.stderr, /was made on another file/);
  t.notOk(existsSync(path.join(dir, 'o2.gguf')));
  const o3 = await cli(otherArgs('o3.gguf', '--selection', sel, '--top-k', '2%', '--in-place'), env);
  t.equal(o3.code, 2, 'in place with -o is a usage error');
  const o4 = await cli(['patch', other, '--in-place', '--selection', sel, '--top-k', '2%', '--json'], env);
  t.equal(o4.code, 1, 'refused in place too');
  t.match(o4.stderr, /was made on another file/);
  t.equal(sha256(other), otherSha, 'the model is unchanged');
  rmSync(path.join(dir, 'o1.gguf'), { force: true });

  // a touched model is hashed again
  const past = new Date(Date.now() - 120_000);
  utimesSync(model, past, past);
  const touched = await cli(patchArgs('m4.gguf'), env);
  t.equal(JSON.parse(touched.stdout).source.hashed, true, 'touched: hashed again');

  // a memo that is not JSON, or a cache folder that cannot be written, changes nothing but the speed
  writeFileSync(memoFile, 'not json');
  const broken = await cli(patchArgs('m5.gguf'), env);
  t.equal(broken.code, 0, broken.stderr);
  t.equal(JSON.parse(broken.stdout).source.sha256, real);
  const blocked = path.join(dir, 'a-file');
  writeFileSync(blocked, 'x');
  const unwritable = await cli(patchArgs('m6.gguf'), { MATHNEURO_CACHE_DIR: path.join(blocked, 'cache') });
  t.equal(unwritable.code, 0, unwritable.stderr);
  t.equal(JSON.parse(unwritable.stdout).source.sha256, real);
  for (const f of ['m1', 'm2', 'm3', 'm4', 'm5', 'm6']) rmSync(path.join(dir, `${f}.gguf`), { force: true });
});
