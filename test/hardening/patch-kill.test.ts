// Crash safety of patching: kill -9 the CLI at many random moments of an in-place and of a
// new-file patch. Each time the model must be the original, or the fully patched file, or be
// restored to the original sha256 by `mathneuro unpatch`; a new-file patch leaves the source
// untouched and its output absent or complete. Nothing else may appear beside the model.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { FuzzRandom } from '../helpers/gguf-fuzz.ts';
import { fixtureModel, repoRoot } from '../helpers/fixtures.ts';
import { syntheticStatsFile } from '../patch/helpers.ts';

const cliPath = path.join(repoRoot, 'scripts', 'mathneuro.mjs');
const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');
const cli = (...args: string[]) => spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8' });

/**
 * Starts the CLI and SIGKILLs it `delayMs` after it starts or, with `afterFile`, after that file
 * appears (the journal or the temporary: the write phase). Resolves with how it ended and when
 * `afterFile` appeared (ms from the start), for timing the reference runs.
 */
function runAndKill(args: string[], delayMs: number, afterFile?: string): Promise<{ killed: boolean; code: number | null; fileAtMs?: number; endMs: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const child = spawn(process.execPath, [cliPath, ...args], { stdio: 'ignore' });
    let fileAtMs: number | undefined;
    let timer: NodeJS.Timeout | undefined;
    const arm = () => { timer = setTimeout(() => child.kill('SIGKILL'), delayMs); };
    const seen = () => afterFile && (afterFile.includes('*') ? readdirSync(path.dirname(afterFile)).some((f) => f.startsWith(path.basename(afterFile).replace('*', ''))) : existsSync(afterFile));
    const poll = afterFile ? setInterval(() => {
      if (fileAtMs === undefined && seen()) { fileAtMs = Date.now() - started; if (delayMs >= 0) arm(); }
    }, 2) : undefined;
    if (!afterFile && delayMs >= 0) arm();
    child.on('exit', (code, signal) => {
      clearTimeout(timer); clearInterval(poll);
      resolve({ killed: signal === 'SIGKILL', code, fileAtMs, endMs: Date.now() - started });
    });
  });
}

/** The tensor data of a GGUF by tensor name (headers of new-file patches carry a timestamp). */
function tensorBytes(file: string): Map<string, string> {
  const info = readGgufSync(file);
  const buf = readFileSync(file);
  return new Map(info.tensors.map((x) => [x.name, createHash('sha1').update(buf.subarray(x.absoluteOffset, x.absoluteOffset + x.byteSize)).digest('hex')]));
}

const KILLS = Number(process.env.MATHNEURO_KILLS ?? 10);

t.test(`kill -9 at ${KILLS} random moments of in-place and new-file patches`, async (t) => {
  const dir = t.testdir();
  const fixture = await fixtureModel({ shape: 'tiny', type: 'q8_0', seed: 4 });
  const original = path.join(dir, 'original.gguf');
  copyFileSync(fixture, original);
  const originalSha = sha(original);
  const math = await syntheticStatsFile(original, 1, path.join(dir, 'math.stats.gguf'));
  const general = await syntheticStatsFile(original, 2, path.join(dir, 'general.stats.gguf'));
  const sel = ['--math', math, '--general', general, '--top-k', '5%', '--quiet'];

  // references: a complete in-place patch and a complete new-file patch, timed for the kill windows
  const model = path.join(dir, 'model.gguf');
  copyFileSync(original, model);
  const journalPath = `${model}.mathneuro-undo`;
  const ref = await runAndKill(['patch', model, '--in-place', ...sel], -1, journalPath);
  t.equal(ref.code, 0, 'reference in-place patch');
  t.ok(ref.fileAtMs !== undefined, 'the journal appeared');
  const patchedSha = sha(model);
  t.not(patchedSha, originalSha, 'the patch changes the model');
  t.equal(cli('unpatch', model, '--quiet').status, 0);
  t.equal(sha(model), originalSha, 'unpatch restores the reference');
  const refOut = path.join(dir, 'reference.gguf');
  const refNew = await runAndKill(['patch', original, '-o', refOut, ...sel], -1, path.join(dir, '.reference.gguf.mathneuro-tmp-*'));
  t.equal(refNew.code, 0, 'reference new-file patch');
  const refTensors = tensorBytes(refOut);
  rmSync(refOut);
  const inPlaceMs = ref.endMs, newFileMs = refNew.endMs;
  const inPlaceWriteMs = ref.endMs - (ref.fileAtMs ?? 0), newFileWriteMs = refNew.endMs - (refNew.fileAtMs ?? 0);

  const rng = new FuzzRandom(20241016);
  const allowed = new Set(['original.gguf', 'model.gguf', 'math.stats.gguf', 'general.stats.gguf', 'model.gguf.mathneuro-undo']);
  const outcomes = { original: 0, patched: 0, restored: 0, newFileAbsent: 0, newFileComplete: 0, finished: 0, killedWhileWriting: 0 };
  for (let i = 0; i < KILLS; i++) {
    // in place
    // even kills: any moment of the run; odd kills: a moment of the write phase (after the journal appears)
    const inWrite = i % 2 === 1;
    const delay = Math.floor(rng.next() * (inWrite ? inPlaceWriteMs : inPlaceMs * 1.1));
    const r = await runAndKill(['patch', model, '--in-place', ...sel], delay, inWrite ? journalPath : undefined);
    if (!r.killed) outcomes.finished++;
    if (inWrite && r.killed) outcomes.killedWhileWriting++;
    // (temporaries of killed new-file runs below are removed by the next new-file run)
    const stray = readdirSync(dir).filter((f) => !allowed.has(f) && !f.startsWith('.out.gguf.mathneuro-tmp-'));
    t.same(stray, [], `in-place kill at ${delay} ms: nothing but the model and its journal`);
    const now = sha(model);
    const journal = existsSync(`${model}.mathneuro-undo`);
    if (now === originalSha && !journal) outcomes.original++;
    else {
      if (now === patchedSha) outcomes.patched++;
      else outcomes.restored++;
      t.ok(journal, `kill at ${delay} ms: a changed model has its journal`);
      const u = cli('unpatch', model, '--quiet');
      t.equal(u.status, 0, `unpatch after a kill at ${delay} ms: ${u.stderr}`);
      t.equal(sha(model), originalSha, `kill at ${delay} ms: unpatch restores the original sha256`);
    }
    t.notOk(existsSync(`${model}.mathneuro-undo`), 'no journal left');

    // new file
    const out = path.join(dir, 'out.gguf');
    const d2 = Math.floor(rng.next() * (inWrite ? newFileWriteMs : newFileMs * 1.1));
    const r2 = await runAndKill(['patch', original, '-o', out, '--force', ...sel], d2, inWrite ? path.join(dir, '.out.gguf.mathneuro-tmp-*') : undefined);
    if (!r2.killed) outcomes.finished++;
    t.equal(sha(original), originalSha, `new-file kill at ${d2} ms: the source is untouched`);
    if (existsSync(out)) {
      t.same(tensorBytes(out), refTensors, `new-file kill at ${d2} ms: the output is the complete patch`);
      outcomes.newFileComplete++;
      rmSync(out);
    } else outcomes.newFileAbsent++;
    // a killed run may leave its temporary (.out.gguf.mathneuro-tmp-PID): the next run removes it
    const temps = readdirSync(dir).filter((f) => f.startsWith('.out.gguf.mathneuro-tmp-'));
    t.same(readdirSync(dir).filter((f) => !allowed.has(f) && !temps.includes(f)), [], 'nothing else beside the model');
  }
  const last = cli('patch', original, '-o', path.join(dir, 'out.gguf'), '--force', ...sel);
  t.equal(last.status, 0, last.stderr);
  t.same(readdirSync(dir).filter((f) => f.includes('mathneuro-tmp')), [], 'a later run removes temporaries of killed runs');
  t.comment(`outcomes: ${JSON.stringify(outcomes)} (in place ~${inPlaceMs} ms, ${inPlaceWriteMs} ms after the journal; new file ~${newFileMs} ms, ${newFileWriteMs} ms after the temporary)`);
  t.ok(outcomes.restored + outcomes.patched + outcomes.newFileComplete + outcomes.original > 0);
});
