// Split models (gguf-split's <name>-0000i-of-0000N.gguf): a generated model is split into shards as
// gguf-split writes them (test/helpers/split.ts); llama.cpp loads the shards and computes what it
// computes on the single file; statistics, selections and patches of the split model equal those
// of the single file; a new-file patch is written as shards again, atomically as a set; an in-place
// patch journals every shard it touches and unpatch restores each shard's sha256.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { modelFiles, openModelSync, splitCountOfName, splitPath, splitPrefix } from '../../src/gguf/model.ts';
import { readGgufSync, type GgufInfo } from '../../src/gguf/reader.ts';
import { readJournal, journalPathFor } from '../../src/patch/journal.ts';
import { patchModel, unpatchModel } from '../../src/patch/patch.ts';
import { SelectionFile } from '../../src/select/file.ts';
import { StatsModel } from '../../src/stats/collect.ts';
import { loadStats } from '../../src/stats/index.ts';
import { fixtureModel, repoRoot } from '../helpers/fixtures.ts';
import { splitGguf } from '../helpers/split.ts';
import { cli, sha256, syntheticStats, syntheticStatsFile, tensorBytes, workDir } from './helpers.ts';

const jsonable = (v: unknown) => JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? `${x}n` : x));
const dir = path.join(workDir, 'split');
rmSync(dir, { recursive: true, force: true });
mkdirSync(dir, { recursive: true });

/** The bytes of every tensor of a model (all shards), by name. */
function tensorMap(info: GgufInfo): Map<string, Buffer> {
  const view = openModelSync(info.path);
  return new Map(view.tensors.map((x) => [x.name, tensorBytes({ ...view, path: x.file ?? view.path }, x)]));
}

/** Metadata of all shards without split.* keys and without mathneuro.* provenance. */
function plainMetadata(file: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of openModelSync(file).shards) {
    for (const e of s.metadataEntries) if (!e.key.startsWith('split.') && !e.key.startsWith('mathneuro.')) out[e.key] = jsonable(e.value);
  }
  return out;
}

/** Next-token logits at every position of a few tokens, through llama.cpp (the shim). */
async function logitsOf(file: string): Promise<Float32Array> {
  const model = await StatsModel.open(file, { nCtx: 128, nThreads: 2, kvType: 'f32' });
  try {
    const tokens = model.tokenize('Tom has 3 apples and buys 5 more, so he has 8.');
    return (await model.logits(tokens)).logits;
  } finally {
    model.dispose();
  }
}

t.test('llama.cpp\'s shard naming (llama_split_path / llama_split_prefix, src/llama.cpp)', async (t) => {
  t.equal(splitPath('/models/ggml-model-q4_0', 1, 4), '/models/ggml-model-q4_0-00002-of-00004.gguf', 'split_no is 0-based, the name 1-based');
  t.equal(splitPrefix('/models/ggml-model-q4_0-00002-of-00004.gguf', 1, 4), '/models/ggml-model-q4_0');
  t.equal(splitPrefix('/models/ggml-model-q4_0-00002-of-00004.gguf', 0, 4), undefined, 'the index must match');
  t.equal(splitPrefix('-00001-of-00002.gguf', 0, 2), undefined, 'an empty prefix is no split name');
  t.equal(splitPath('m', 0, 123456), 'm-00001-of-123456.gguf', '%05d widens past 5 digits');
  t.same(splitCountOfName('/a/b-00003-of-00007.gguf'), { index: 2, count: 7, prefix: '/a/b' });
  t.equal(splitCountOfName('/a/b-00008-of-00007.gguf'), undefined);
});

t.test('a split model is one view over its shards, and llama.cpp computes on it what it computes on the single file', async (t) => {
  const model = await fixtureModel({ shape: 'tiny', type: 'cycle', seed: 1 });
  const shards = await splitGguf(model, path.join(dir, 'view'), 8);
  t.ok(shards.length >= 3, `${shards.length} shards`);
  const view = openModelSync(shards[0]);
  const single = readGgufSync(model);
  t.equal(view.shards.length, shards.length);
  t.same(modelFiles(view), shards, 'the shards found by llama.cpp\'s naming');
  t.same(view.tensors.map((x) => x.name), single.tensors.map((x) => x.name), 'every tensor, in order');
  t.same(view.tensors.map((x) => x.shard), single.tensors.map((_, i) => Math.floor(i / 8)), 'each with its shard');
  const a = tensorMap(view), b = tensorMap(single);
  for (const [name, bytes] of b) if (!bytes.equals(a.get(name)!)) t.fail(`tensor ${name} differs`);
  t.equal(view.totalBytes, shards.reduce((s, f) => s + readGgufSync(f).fileSize, 0));

  const inspect = await cli(['inspect', shards[0], '--json']);
  t.equal(inspect.code, 0, inspect.stderr);
  const r = JSON.parse(inspect.stdout);
  t.equal(r.shards.length, shards.length, 'inspect lists the shards');
  t.equal(r.tensorCount, single.tensors.length, 'and counts the tensors of all');

  t.same(Array.from(await logitsOf(shards[0])), Array.from(await logitsOf(model)), 'llama.cpp: the same logits from the shards as from the single file');

  // refused as llama.cpp refuses: opened at another shard; a shard missing; a wrong split.no
  t.throws(() => openModelSync(shards[1]), /opened at its first shard/);
  const lone = splitPath(path.join(dir, 'lone'), 0, shards.length);
  copyFileSync(shards[0], lone);
  t.throws(() => openModelSync(lone), { code: 'ENOENT', message: /shard 2 \(.*lone-00002-of-0000\d\.gguf\) is missing/ });
  const renamed = path.join(dir, 'renamed.gguf');
  copyFileSync(shards[0], renamed);
  t.throws(() => openModelSync(renamed), /must be named <name>-00001-of-0000\d\.gguf/);
});

t.test('statistics and selections of the split model equal those of the single file', async (t) => {
  const model = await fixtureModel({ shape: 'tiny', type: 'f32', seed: 3 });
  const shards = await splitGguf(model, path.join(dir, 'f32'), 7);
  const texts = ['Natalia sold clips to 48 of her friends in April, and then half as many in May.', 'The river flows north through the valley.', 'x'];
  const collect = async (file: string) => {
    const m = await StatsModel.open(file, { nCtx: 128, nThreads: 2, kvType: 'f32' });
    try { return (await m.collect(texts)).stats; } finally { m.dispose(); }
  };
  const split = await collect(shards[0]), single = await collect(model);
  t.equal(split.tokens, single.tokens);
  t.same([...split.weights.keys()].sort(), [...single.weights.keys()].sort(), 'the same weights observed');
  let exact = true;
  for (const [name, w] of single.weights) {
    const s = split.weights.get(name)!;
    for (const k of ['normSum', 'sum2', 'counts'] as const) if (!Buffer.from(w[k].buffer).equals(Buffer.from(s[k].buffer))) { exact = false; t.fail(`${name} ${k} differs`); }
  }
  t.ok(exact, 'statistics bit-identical (F32 weights)');
  t.not(split.model.headerSha256, single.model.headerSha256, 'the split model has its own identity (all shard headers)');

  // select through the CLI on both, with the same statistics: the same masks
  const math = await syntheticStatsFile(model, 21, path.join(dir, 'f32.math.stats.gguf'));
  const general = await syntheticStatsFile(model, 22, path.join(dir, 'f32.general.stats.gguf'));
  const selSplit = path.join(dir, 'f32-split.mnsel'), selSingle = path.join(dir, 'f32-single.mnsel');
  for (const [m, o] of [[shards[0], selSplit], [model, selSingle]]) {
    const r = await cli(['select', m, '--math', math, '--general', general, '--top-k', '1%,5%', '-o', o, '--json']);
    t.equal(r.code, 0, r.stderr);
  }
  const fa = SelectionFile.open(selSplit), fb = SelectionFile.open(selSingle);
  t.equal(fa.index.tensors.length, fb.index.tensors.length);
  t.equal(fa.index.model.tensorCount, readGgufSync(model).tensors.length, 'the selection counts the tensors of every shard');
  t.equal(fa.index.model.sha256, sha256FilesConcat(shards), 'the model sha256 is that of the shards one after the other');
  for (const x of fb.index.tensors) for (let q = 0; q < 2; q++) t.ok(Buffer.from(fa.mask(x.name, q)).equals(Buffer.from(fb.mask(x.name, q))), `${x.name} K#${q}: same mask`);
});

function sha256FilesConcat(files: string[]): string {
  const h = createHash('sha256');
  for (const f of files) h.update(readFileSync(f));
  return h.digest('hex');
}

t.test('new-file patch of a split model writes the same shards, patched as the single file is', async (t) => {
  const model = await fixtureModel({ shape: 'tiny', type: 'cycle', seed: 1 });
  const shards = await splitGguf(model, path.join(dir, 'nf'), 8);
  const math = await syntheticStatsFile(model, 11, path.join(dir, 'nf.math.stats.gguf'));
  const general = await syntheticStatsFile(model, 12, path.join(dir, 'nf.general.stats.gguf'));
  const sel = path.join(dir, 'nf.mnsel');
  t.equal((await cli(['select', shards[0], '--math', math, '--general', general, '--top-k', '5%', '-o', sel])).code, 0);

  const outDir = path.join(dir, 'nf-out');
  mkdirSync(outDir, { recursive: true });
  const bad = await cli(['patch', shards[0], '-o', path.join(outDir, 'patched.gguf'), '--selection', sel]);
  t.equal(bad.code, 2, 'an output not named as shards is refused');
  t.match(bad.stderr, /-00001-of-0000\d\.gguf/);

  const out = splitPath(path.join(outDir, 'patched'), 0, shards.length);
  const r = await cli(['patch', shards[0], '-o', out, '--selection', sel, '--json']);
  t.equal(r.code, 0, r.stderr);
  const result = JSON.parse(r.stdout);
  const outs = shards.map((_, i) => splitPath(path.join(outDir, 'patched'), i, shards.length));
  t.same(result.output.shards, outs, 'written as shards, named as llama.cpp names them');
  t.ok(result.selectedWeights > 0);
  t.same(readdirSync(outDir).sort(), outs.map((o) => path.basename(o)).sort(), 'no temporary left');

  // the single file, patched with the same selection (--force: the selection was made on the shards)
  const single = path.join(dir, 'nf-single.gguf');
  const s = await cli(['patch', model, '-o', single, '--selection', sel, '--force', '--json']);
  t.equal(s.code, 0, s.stderr);
  t.equal(JSON.parse(s.stdout).selectedWeights, result.selectedWeights);

  // same tensors per shard as the source, split keys as gguf-split writes them, provenance in shard 1
  for (let i = 0; i < shards.length; i++) {
    const src = readGgufSync(shards[i]), dst = readGgufSync(outs[i]);
    t.same(dst.tensors.map((x) => [x.name, x.offset]), src.tensors.map((x) => [x.name, x.offset]), `shard ${i + 1}: same tensors, same layout`);
    const splitKeys = (g: GgufInfo) => g.metadataEntries.filter((e) => e.key.startsWith('split.')).map((e) => [e.key, e.type, e.value]);
    t.same(splitKeys(dst), splitKeys(src), `shard ${i + 1}: split keys kept`);
    t.equal(dst.metadata.has('mathneuro.method'), i === 0, `shard ${i + 1}: provenance only in the first`);
  }
  const first = readGgufSync(outs[0]);
  t.equal(first.metadata.get('mathneuro.source.sha256'), sha256FilesConcat(shards));
  t.equal(first.metadata.get('mathneuro.source.shards'), shards.length);
  // merged, the patched shards equal the patched single file
  const a = tensorMap(readGgufSync(outs[0])), b = tensorMap(readGgufSync(single));
  t.equal(a.size, b.size);
  let same = 0;
  for (const [name, bytes] of b) if (bytes.equals(a.get(name)!)) same++; else t.fail(`tensor ${name} differs`);
  t.equal(same, b.size, 'every tensor byte-identical to the patched single file');
  t.same(plainMetadata(outs[0]), plainMetadata(single), 'metadata equal apart from split keys and provenance');
  t.same(Array.from(await logitsOf(outs[0])), Array.from(await logitsOf(single)), 'llama.cpp loads the patched shards: the logits of the patched single file');

  // from statistics too, and again onto existing shards only with --force
  const again = await cli(['patch', shards[0], '-o', out, '--math', math, '--general', general, '--top-k', '5%']);
  t.equal(again.code, 1);
  t.match(again.stderr, /exists/);
  const forced = await cli(['patch', shards[0], '-o', out, '--math', math, '--general', general, '--top-k', '5%', '--force', '--json']);
  t.equal(forced.code, 0, forced.stderr);
  t.equal(JSON.parse(forced.stdout).selectedWeights, result.selectedWeights, 'selecting from statistics reads every shard');

  // --upcast: each shard's header is built anew (tensors change type); merged, the single file's upcast
  const up = splitPath(path.join(outDir, 'up'), 0, shards.length), upSingle = path.join(dir, 'nf-single-up.gguf');
  t.equal((await cli(['patch', shards[0], '-o', up, '--selection', sel, '--upcast', 'q8_0', '--quiet'])).code, 0);
  t.equal((await cli(['patch', model, '-o', upSingle, '--selection', sel, '--upcast', 'q8_0', '--force', '--quiet'])).code, 0);
  const upView = openModelSync(up);
  t.same(upView.shards.map((x) => x.tensors.map((y) => y.name)), shards.map((f) => readGgufSync(f).tensors.map((y) => y.name)), 'upcast: the same tensors per shard');
  const ua = tensorMap(upView), ub = tensorMap(readGgufSync(upSingle));
  t.ok([...ub].every(([k, v]) => v.equals(ua.get(k)!)), 'upcast: every tensor as in the single file\'s upcast');
});

t.test('a failure while writing the shards leaves none behind', async (t) => {
  const model = await fixtureModel({ shape: 'tiny', type: 'cycle', seed: 1 });
  const shards = await splitGguf(model, path.join(dir, 'fail'), 8);
  const view = openModelSync(shards[0]);
  const stats = syntheticStats(view, 31), general = syntheticStats(view, 32);
  const outDir = path.join(dir, 'fail-out');
  mkdirSync(outDir, { recursive: true });
  const out = splitPath(path.join(outDir, 'x'), 0, shards.length);
  // shards are written 2..N, then 1: fail while patching a tensor of the last shard written before the first
  const lastShard = shards.length - 1;
  const victim = view.tensors.filter((x) => x.shard === 0 && x.name.startsWith('blk.')).pop()!.name;
  let sawVictim = false;
  await t.rejects(patchModel({
    model: shards[0], out, math: stats, general, topK: 0.05,
    onProgress: (p) => {
      if (p.phase === 'patch' && p.item === victim) { sawVictim = true; throw new Error('simulated write failure'); }
    },
  }), /simulated write failure while writing .*x-00001-of-0000\d\.gguf; none of the \d shards was left/);
  t.ok(sawVictim, `the failure came while writing shard 1, after shards 2..${lastShard + 1} were written`);
  t.same(readdirSync(outDir), [], 'no shard and no temporary left');

  // cancelled in the middle: the same
  const controller = new AbortController();
  await t.rejects(patchModel({
    model: shards[0], out, math: stats, general, topK: 0.05, signal: controller.signal,
    onProgress: (p) => { if (p.phase === 'patch' && p.item === victim) controller.abort(); },
  }), { code: 'EABORT' });
  t.same(readdirSync(outDir), [], 'cancelled: nothing left');
  t.notOk(existsSync(out));
});

t.test('in-place patch of a split model journals every shard; unpatch restores each bit-exactly', async (t) => {
  const model = await fixtureModel({ shape: 'tiny', type: 'cycle', seed: 1 });
  const shards = await splitGguf(model, path.join(dir, 'ip'), 8);
  const before = shards.map(sha256);
  const math = await syntheticStatsFile(model, 41, path.join(dir, 'ip.math.stats.gguf'));
  const general = await syntheticStatsFile(model, 42, path.join(dir, 'ip.general.stats.gguf'));
  const r = await cli(['patch', shards[0], '--in-place', '--math', math, '--general', general, '--top-k', '5%', '--json']);
  t.equal(r.code, 0, r.stderr);
  const journal = journalPathFor(shards[0]);
  t.ok(existsSync(journal), 'one journal, beside the first shard');
  const after = shards.map(sha256);
  const changed = after.map((h, i) => h !== before[i]);
  t.ok(changed.filter(Boolean).length >= 2, `several shards patched (${changed.map((c) => (c ? 'x' : '-')).join('')})`);
  const contents = readJournal(journal);
  t.same(contents.header!.shards!.map((s) => s.sha256), before, 'the journal holds each shard\'s sha256');
  t.same([...new Set(contents.records.map((x) => x.shard))].sort(), changed.map((c, i) => (c ? i : -1)).filter((i) => i >= 0), 'its ranges carry the shard they belong to');
  const inspected = await cli(['inspect', journal, '--json']);
  t.equal(inspected.code, 0);
  t.same(JSON.parse(inspected.stdout).shards.map((s: { sha256: string }) => s.sha256), before, 'inspect shows the journal\'s shards');

  // patching again is refused; unpatch of another shard points to the first
  t.match((await cli(['patch', shards[0], '--in-place', '--math', math, '--general', general, '--top-k', '5%'])).stderr, /undo journal/);
  t.match((await cli(['unpatch', shards[1]])).stderr, /shard 2 of a split model patched in place: run mathneuro unpatch .*ip-00001-of-0000\d\.gguf/);
  t.same(shards.map(sha256), after, 'nothing restored from another shard');

  const u = await cli(['unpatch', shards[0], '--json']);
  t.equal(u.code, 0, u.stderr);
  const ur = JSON.parse(u.stdout);
  t.same(ur.shards.map((s: { sha256: string }) => s.sha256), before, 'unpatch checks and reports every shard\'s sha256');
  t.same(shards.map(sha256), before, 'every shard bit-exact again');
  t.notOk(existsSync(journal));

  // an in-place patch that fails halfway puts every shard back
  const view = openModelSync(shards[0]);
  const victim = view.tensors.filter((x) => x.shard === shards.length - 1 && x.name.startsWith('blk.')).pop()!.name;
  await t.rejects(patchModel({
    model: shards[0], inPlace: true, math: (await loadStats(math)), general: (await loadStats(general)), topK: 0.05,
    onProgress: (p) => { if (p.phase === 'patch' && p.item === victim) throw new Error('simulated failure'); },
  }), /simulated failure/);
  t.same(shards.map(sha256), before, 'failed halfway: every shard restored');
  t.notOk(existsSync(journal), 'and the journal dropped');
  await t.rejects(unpatchModel(shards[0]), { code: 'EJOURNAL' });
});

t.test('kill -9 during in-place and new-file patches of a split model', async (t) => {
  const cliPath = path.join(repoRoot, 'scripts', 'mathneuro.mjs');
  const model = await fixtureModel({ shape: 'tiny', type: 'q8_0', seed: 4 });
  const kdir = path.join(dir, 'kill');
  mkdirSync(kdir, { recursive: true });
  const shards = await splitGguf(model, path.join(kdir, 'm'), 8);
  const before = shards.map(sha256);
  const math = await syntheticStatsFile(model, 1, path.join(kdir, 'math.stats.gguf'));
  const general = await syntheticStatsFile(model, 2, path.join(kdir, 'general.stats.gguf'));
  const sel = ['--math', math, '--general', general, '--top-k', '5%', '--quiet'];
  const journal = journalPathFor(shards[0]);
  const run = (args: string[], killAfterMs: number, when: () => boolean) => new Promise<{ killed: boolean; code: number | null }>((resolve) => {
    const child = spawn(process.execPath, [cliPath, ...args], { stdio: 'ignore' });
    let timer: NodeJS.Timeout | undefined;
    const poll = setInterval(() => { if (!timer && when()) timer = setTimeout(() => child.kill('SIGKILL'), killAfterMs); }, 2);
    child.on('exit', (code, signal) => { clearInterval(poll); clearTimeout(timer); resolve({ killed: signal === 'SIGKILL', code }); });
  });
  const outDir = path.join(kdir, 'out');
  mkdirSync(outDir, { recursive: true });
  const out = splitPath(path.join(outDir, 'p'), 0, shards.length);
  let reference: Map<string, Buffer> | undefined;
  let killed = 0;
  const outcomes = { unpatched: 0, untouched: 0, outputComplete: 0, outputAbsent: 0 };
  for (const delay of [0, 5, 20, 60, 150]) {
    // in place: killed after the journal appears; unpatch restores every shard
    const r = await run(['patch', shards[0], '--in-place', ...sel], delay, () => existsSync(journal));
    if (r.killed) killed++;
    if (existsSync(journal)) {
      outcomes.unpatched++;
      const u = spawnSync(process.execPath, [cliPath, 'unpatch', shards[0], '--quiet'], { encoding: 'utf8' });
      t.equal(u.status, 0, `unpatch after a kill ${delay} ms into the write: ${u.stderr}`);
    } else { outcomes.untouched++; t.same(shards.map(sha256), before, `kill ${delay} ms in: no journal, so nothing was changed`); }
    t.same(shards.map(sha256), before, `kill ${delay} ms into the in-place write: every shard is the original`);
    // new file: killed after a temporary appears; the output set is absent or complete (the first shard is renamed last)
    const r2 = await run(['patch', shards[0], '-o', out, '--force', ...sel], delay, () => readdirSync(outDir).some((f) => f.includes('mathneuro-tmp')));
    if (r2.killed) killed++;
    const present = readdirSync(outDir).filter((f) => !f.includes('mathneuro-tmp'));
    if (existsSync(out)) {
      outcomes.outputComplete++;
      t.equal(present.length, shards.length, `kill ${delay} ms in: the first shard exists only with all the others`);
      const bytes = tensorMap(readGgufSync(out));
      reference ??= bytes;
      t.ok([...reference].every(([k, v]) => v.equals(bytes.get(k)!)), 'and holds the complete patch');
      for (const f of present) rmSync(path.join(outDir, f));
    } else { outcomes.outputAbsent++; for (const f of present) rmSync(path.join(outDir, f)); }   // shards 2..N renamed before a kill: never loadable without the first
    t.same(shards.map(sha256), before, 'the source shards are untouched');
  }
  const last = spawnSync(process.execPath, [cliPath, 'patch', shards[0], '-o', out, '--force', ...sel], { encoding: 'utf8' });
  t.equal(last.status, 0, last.stderr);
  t.same(readdirSync(outDir).filter((f) => f.includes('mathneuro-tmp')), [], 'a later run removes the temporaries of killed runs');
  t.comment(`${killed} of 10 runs killed; ${JSON.stringify(outcomes)}`);
});
