// In-place patching with its undo journal: only selected blocks change, a second patch is
// refused, unpatch returns the original sha256; kill -9 at random moments of an in-place patch
// always leaves a file that unpatch restores, and a killed new-file patch leaves no output.
import t from 'tap';
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { main } from '../../src/cli/main.ts';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { journalPathFor, readJournal } from '../../src/patch/journal.ts';
import { topKCount } from '../../src/select/select.ts';
import { fixtureModel, repoRoot } from '../helpers/fixtures.ts';
import { dequantizedTensor, referenceMathNeuro, sha256, syntheticStats, syntheticStatsFile, tensorBytes, workDir } from './helpers.ts';

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '', stderr = '';
  const io = { stdout: { write: (s: string) => { stdout += s; return true; } } as any, stderr: { write: (s: string) => { stderr += s; return true; } } as any, env: { MATHNEURO_CACHE_DIR: process.env.MATHNEURO_CACHE_DIR } };
  const code = await main(args, io);
  return { code, stdout, stderr };
}

const dir = path.join(workDir, 'inplace');
rmSync(dir, { recursive: true, force: true });
mkdirSync(dir, { recursive: true });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('in place: selected blocks only, refused twice, unpatch restores the sha256', async (t) => {
  const source = await fixtureModel({ shape: 'tiny', type: 'cycle', seed: 1 });
  const model = path.join(dir, 'model.gguf');
  copyFileSync(source, model);
  const original = sha256(model);
  const mathFile = await syntheticStatsFile(model, 21, path.join(dir, 'math.stats.gguf'));
  const generalFile = await syntheticStatsFile(model, 22, path.join(dir, 'general.stats.gguf'));
  const K = 0.03;
  const r = await cli(['patch', model, '--in-place', '--math', mathFile, '--general', generalFile, '--top-k', String(K), '--json']);
  t.equal(r.code, 0, r.stderr);
  t.ok(existsSync(journalPathFor(model)), 'journal beside the model');
  t.ok(readJournal(journalPathFor(model)).commit, 'journal marked complete');
  t.not(sha256(model), original);

  const src = readGgufSync(source), dst = readGgufSync(model);
  const math = syntheticStats(src, 21), general = syntheticStats(src, 22);
  t.ok(tensorBytes(src, src.tensorByName.get('token_embd.weight')!).equals(tensorBytes(dst, dst.tensorByName.get('token_embd.weight')!)));
  for (const ts of src.tensors.filter((x) => x.name.startsWith('blk.') && x.shape.length === 2)) {
    const expected = referenceMathNeuro(dequantizedTensor(src, ts), ts.shape[0], math.weights.get(ts.name)!.normSum, general.weights.get(ts.name)!.normSum, topKCount(ts.numel, K));
    const blocks = new Set([...expected].map((i) => Math.floor(i / ts.blockSize)));
    const a = tensorBytes(src, ts), b = tensorBytes(dst, ts);
    let outside = 0;
    for (let x = 0; x < a.length; x++) if (a[x] !== b[x] && !blocks.has(Math.floor(x / ts.typeSize))) outside++;
    t.equal(outside, 0, `${ts.name} (${ts.typeName}): only blocks of selected weights changed`);
  }

  const twice = await cli(['patch', model, '--in-place', '--math', mathFile, '--general', generalFile, '--top-k', '0.01']);
  t.equal(twice.code, 1);
  t.match(twice.stderr, /patched in place/);
  const asSource = await cli(['patch', model, '-o', path.join(dir, 'x.gguf'), '--math', mathFile, '--general', generalFile, '--top-k', '0.01']);
  t.equal(asSource.code, 1, 'a model patched in place is not used as a source either');
  const inspect = JSON.parse((await cli(['inspect', model, '--json'])).stdout);
  t.ok(inspect.patched.inPlace.complete);
  const journalInfo = await cli(['inspect', journalPathFor(model), '--json']);
  t.equal(JSON.parse(journalInfo.stdout).kind, 'undo-journal');

  const u = await cli(['unpatch', model, '--json']);
  t.equal(u.code, 0, u.stderr);
  t.equal(sha256(model), original, 'unpatch returns the original sha256');
  t.notOk(existsSync(journalPathFor(model)), 'journal removed');
  const again = await cli(['unpatch', model]);
  t.equal(again.code, 1);
  t.match(again.stderr, /no undo journal/);
});

function spawnCli(args: string[]) {
  return spawn(process.execPath, [path.join(repoRoot, 'scripts', 'mathneuro.mjs'), ...args], { cwd: repoRoot, stdio: ['ignore', 'ignore', 'pipe'], env: process.env });
}

async function waitFor(predicate: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) { if (predicate()) return true; await sleep(2); }
  return false;
}

t.test('kill -9 of an in-place patch at random moments: unpatch restores the original', async (t) => {
  const source = await fixtureModel({ shape: 'tiny', type: 'cycle', seed: 1 });
  const model = path.join(dir, 'killed.gguf');
  copyFileSync(source, model);
  const original = sha256(model);
  const mathFile = path.join(dir, 'math.stats.gguf'), generalFile = path.join(dir, 'general.stats.gguf');
  const args = ['patch', model, '--in-place', '--math', mathFile, '--general', generalFile, '--top-k', '0.3', '--quiet'];
  const journal = journalPathFor(model);

  // One uninterrupted run measures how long the journal phase lasts.
  const start = Date.now();
  let journalSeen = 0;
  const full = spawnCli(args);
  await waitFor(() => existsSync(journal), 60_000);
  journalSeen = Date.now();
  const code = await new Promise<number | null>((r) => full.on('exit', r));
  const window = Math.max(50, Date.now() - journalSeen);
  t.equal(code, 0, `full run (${Date.now() - start} ms, journal phase ${window} ms)`);
  t.equal((await cli(['unpatch', model])).code, 0);
  t.equal(sha256(model), original);

  let interrupted = 0;
  const fractions = [0.05, 0.3, 0.55, 0.8];
  // Timing on a shared machine: a kill timed from the first run's journal phase can land before or
  // after another run's. Every kill is checked; more rounds (up to 12) run until one has landed mid-patch.
  let round = 0;
  for (; round < fractions.length || (interrupted === 0 && round < 12); round++) {
    const child = spawnCli(args);
    const exited = new Promise<void>((r) => child.on('exit', () => r()));
    await waitFor(() => existsSync(journal), 60_000);
    const delay = Math.floor(window * (fractions[round % fractions.length] + Math.random() * 0.2));
    await sleep(delay);
    child.kill('SIGKILL');
    await exited;
    if (existsSync(journal)) {
      const c = readJournal(journal);
      if (!c.commit && c.records.length > 0) interrupted++;
      const u = await cli(['unpatch', model, '--json']);
      t.equal(u.code, 0, `round ${round}: unpatch after kill at +${delay} ms (${c.records.length} records, ${c.commit ? 'complete' : 'interrupted'}, ${c.tornBytes} torn bytes) ${u.stderr}`);
    }
    t.equal(sha256(model), original, `round ${round}: original sha256 after kill and unpatch`);
  }
  t.ok(interrupted >= 1, `${interrupted} of ${round} kills landed in the middle of the patch`);
});

t.test('kill -9 of a new-file patch leaves no output; the next run cleans up', async (t) => {
  const source = await fixtureModel({ shape: 'tiny', type: 'cycle', seed: 1 });
  const mathFile = path.join(dir, 'math.stats.gguf'), generalFile = path.join(dir, 'general.stats.gguf');
  const out = path.join(dir, 'new.gguf');
  const args = ['patch', source, '-o', out, '--math', mathFile, '--general', generalFile, '--top-k', '0.3', '--quiet'];
  const temporaries = () => readdirSync(dir).filter((f) => f.startsWith('.new.gguf.mathneuro-tmp-'));
  // the tiny model is patched within tens of milliseconds of its temporary appearing: a run whose
  // output was committed (renamed) before the kill landed left a whole file, not a partial one;
  // it is removed, and the next run is killed sooner
  let landed = 0;
  for (let attempt = 0; landed < 2 && attempt < 30; attempt++) {
    const child = spawnCli(args);
    const exited = new Promise<void>((r) => child.on('exit', () => r()));
    await waitFor(() => temporaries().length > 0 || child.exitCode !== null, 60_000);
    await sleep(Math.floor((Math.random() * 150) / (attempt + 1)));
    child.kill('SIGKILL');
    await exited;
    if (existsSync(out)) {
      t.equal(readGgufSync(out).tensors.length, readGgufSync(source).tensors.length, `attempt ${attempt}: committed before the kill landed, a whole file`);
      rmSync(out, { force: true });
      continue;
    }
    landed++;
  }
  t.equal(landed, 2, 'two kills landed before the commit and left no output');
  t.ok(temporaries().length >= 1, 'the killed runs left their temporaries');
  const r = await cli(['patch', source, '-o', out, '--math', mathFile, '--general', generalFile, '--top-k', '0.3', '--quiet']);
  t.equal(r.code, 0, r.stderr);
  t.ok(existsSync(out));
  t.same(temporaries(), [], 'stale temporaries of dead processes removed');
});
