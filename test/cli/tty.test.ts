// Issue 16: progress on a terminal (ETA, a running clock, one line per finished stage), none of it
// on a pipe or with --quiet, and Ctrl-C -> exit 130 with nothing left behind. The terminal is a
// pseudo-terminal from util-linux `script`; Ctrl-C is the ^C byte typed into it (the terminal
// turns it into SIGINT for the command), sent only after a progress line with an ETA has appeared.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { Writable } from 'node:stream';
import { ProgressLine, interruptState, interruptible } from '../../src/cli/common.ts';
import { fixtureModel, repoRoot } from '../helpers/fixtures.ts';

const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');

const stories = path.resolve(repoRoot, '..', 'shared', 'models', 'stories260K.gguf');
const bin = path.join(repoRoot, 'scripts', 'mathneuro.mjs');
const hasScript = spawnSync('script', ['--version']).status === 0;
const strip = (s: string) => s.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '');
/** TMPDIR's entries but tsx's compile cache (tsx-<uid>), which is the test runner's */
const ours = (dir: string) => readdirSync(dir).filter((f) => !/^tsx-\d+$/.test(f));
const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

interface Run { code: number | null; output: string }

/** The command in a pseudo-terminal; `interruptWhen`: type ^C once the output matches it. */
function inPty(args: string[], env: NodeJS.ProcessEnv, interruptWhen?: RegExp, timeoutMs = 300_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const cmd = `exec node ${q(bin)} ${args.map(q).join(' ')}`;
    const child = spawn('script', ['-qefc', cmd, '/dev/null'], { env: { ...process.env, ...env, TERM: 'xterm', OMP_WAIT_POLICY: 'passive' }, stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    let sent = false;
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`timed out; output so far:\n${strip(output).slice(-2000)}`)); }, timeoutMs);
    child.stdout.on('data', (d) => {
      output += d.toString();
      if (interruptWhen && !sent && interruptWhen.test(strip(output))) { sent = true; child.stdin.write('\x03'); }
    });
    child.stderr.on('data', (d) => { output += d.toString(); });
    child.on('close', (code) => { clearTimeout(timer); resolve({ code, output: strip(output) }); });
  });
}

function onPipe(args: string[], env: NodeJS.ProcessEnv) {
  const r = spawnSync('node', [bin, ...args], { env: { ...process.env, ...env, OMP_WAIT_POLICY: 'passive' }, encoding: 'utf8', timeout: 300_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function sink(isTTY: boolean) {
  let text = '';
  const stream = new Writable({ write(chunk, _enc, cb) { text += chunk.toString(); cb(); } }) as Writable & { isTTY?: boolean };
  stream.isTTY = isTTY;
  return { stream, get text() { return text; } };
}

t.test('ProgressLine: ETA from the measured rate, counting down between reports; silent off a TTY', async (t) => {
  let now = 0;
  const err = sink(true);
  const p = new ProgressLine({ stdout: sink(true).stream, stderr: err.stream, env: { NO_COLOR: '1' } }, false, () => now);
  p.step('stats', 0, 100);
  t.ok(Number.isNaN(p.eta()), 'no rate yet: no ETA');
  t.match(err.text, /stats \[\.+\] 0\/100  0s  ETA --/);
  now = 10_000;
  p.step('stats', 10, 100);
  t.equal(p.eta(), 90_000, '10 units in 10 s, 90 left: 90 s');
  t.match(err.text, /10\/100  10s  ETA 1m30s/);
  now = 15_000;
  t.equal(p.eta(), 85_000, 'the ETA counts down while no report comes');
  p.step('patch', 1, 2);
  t.match(err.text, /done stats {10}15s\n/, 'a finished stage gets one line');
  p.done();
  t.match(err.text, /done patch/);
  const pipe = sink(false);
  const quiet = new ProgressLine({ stdout: pipe.stream, stderr: pipe.stream, env: {} }, false, () => now);
  quiet.step('stats', 1, 2); quiet.update('x'); quiet.done('finished');
  t.equal(pipe.text, '', 'nothing on a pipe');
  const q2 = sink(true);
  const withQuiet = new ProgressLine({ stdout: q2.stream, stderr: q2.stream, env: {} }, true);
  withQuiet.step('stats', 1, 2); withQuiet.done();
  t.equal(q2.text, '', 'nothing with --quiet/--json');
});

t.test('the clock keeps running while no progress report comes (a slow first item, a model load)', async (t) => {
  let now = 0;
  const err = sink(true);
  const p = new ProgressLine({ stdout: sink(true).stream, stderr: err.stream, env: { NO_COLOR: '1' } }, false, () => now);
  p.update('gsm8k model: loading model (0/6 cached)...', 'gsm8k model');
  t.match(err.text, /loading model \(0\/6 cached\)\.\.\.  0s/);
  now = 7000;   // no report for 7 s: the line is redrawn by the once-a-second timer
  for (let waited = 0; waited < 10_000 && !/ 7s/.test(err.text); waited += 100) await new Promise((r) => setTimeout(r, 100));
  t.match(err.text, /loading model \(0\/6 cached\)\.\.\.  7s/, 'redrawn with the new time');
  p.step('gsm8k model', 1, 6);
  t.match(err.text, /1\/6  7s  ETA --/, 'the load and the first item are one stage: its clock goes on');
  p.done();
  const length = err.text.length;
  now = 9000;
  await new Promise((r) => setTimeout(r, 1500));
  t.equal(err.text.length, length, 'done() stops the clock');
});

t.test('Ctrl-C: the first aborts, the next ones say the cleanup is finishing', async (t) => {
  const err = sink(false);
  const before = process.listenerCount('SIGINT');
  const i = interruptible({ stdout: err.stream, stderr: err.stream, env: {} }, 'finishing the undo: restoring the model from its journal');
  t.equal(process.listenerCount('SIGINT'), before + 1);
  process.emit('SIGINT');
  t.equal(i.signal.aborted, true);
  t.match(err.text, /interrupted: finishing the undo/);
  process.emit('SIGINT');
  t.match(err.text, /still finishing the undo: restoring the model from its journal; it ends by itself/);
  t.equal(i.signal.aborted, true);
  i.dispose();
  t.equal(process.listenerCount('SIGINT'), before, 'the handler is removed');
  const quiet = sink(true);
  const p = new ProgressLine({ stdout: quiet.stream, stderr: quiet.stream, env: {} }, false);
  p.step('stats', 1, 2);
  t.equal(quiet.text, '', 'after Ctrl-C no progress line is drawn over the "interrupted" line');
  interruptState.interrupted = false;   // main() resets it for every command
});

t.test('on a terminal: ETA and a running clock; Ctrl-C exits 130 and leaves nothing', { skip: !hasScript && 'util-linux script is not installed' }, async (t) => {
  const dir = t.testdir();
  const tmp = path.join(dir, 'tmp');
  mkdirSync(tmp);
  const data = path.join(dir, 'big.txt');
  writeFileSync(data, Array.from({ length: 20000 }, (_, i) => `Once upon a time there was a little cat number ${i} who liked to play in the sun.`).join('\n\n') + '\n');
  const small = path.join(dir, 'small.txt');
  writeFileSync(small, Array.from({ length: 40 }, (_, i) => `Sample ${i}: two plus two is four.`).join('\n\n') + '\n');
  const env = { TMPDIR: tmp, MATHNEURO_CACHE_DIR: path.join(dir, 'cache') };

  // stats: interrupted after the first progress line with an ETA
  const out = path.join(dir, 'big.stats.gguf');
  const r = await inPty(['stats', stories, '-f', data, '-o', out, '-t', '1', '--checkpoint-every', '1000'], env, /ETA \d/);
  t.equal(r.code, 130, `exit 130 (${r.output.slice(-300)})`);
  t.match(r.output, /\d+\/20000 .* \d+s  ETA \d/, 'bar, counts, clock and ETA');
  t.match(r.output, /interrupted: /);
  t.match(r.output, /mathneuro stats: interrupted/);
  t.notOk(existsSync(out), 'no output');
  t.notOk(existsSync(`${out}.partial`), 'no checkpoint file: it was written only at 1000 samples, or removed');
  t.same(ours(tmp), [], 'nothing in TMPDIR');
  t.same(readdirSync(dir).sort(), ['big.txt', 'small.txt', 'tmp'], 'nothing beside the inputs');

  // boost: interrupted during the math statistics; no output, no cache entry, no temporary file
  const b = await inPty(['boost', stories, '--math', data, '--samples', '20000', '-t', '1', '--no-check'], env, /math stats .*ETA \d/);
  t.equal(b.code, 130, `boost: exit 130 (${b.output.slice(-300)})`);
  t.notOk(existsSync(stories.replace(/\.gguf$/, '.boosted.gguf')), 'boost: no output');
  const cached = existsSync(env.MATHNEURO_CACHE_DIR) ? readdirSync(env.MATHNEURO_CACHE_DIR, { recursive: true }).map(String).filter((f) => f.endsWith('.gguf') || f.endsWith('.tmp') || f.includes('.mathneuro-tmp-')) : [];
  t.same(cached, [], 'boost: no statistics file or temporary in the cache');
  t.same(ours(tmp), [], 'boost: nothing in TMPDIR');

  // a run that finishes: one line per finished stage
  const done = await inPty(['stats', stories, '-f', small, '-o', path.join(dir, 'small.stats.gguf'), '-t', '1'], env);
  t.equal(done.code, 0, done.output);
  t.match(done.output, /done stats +\d+s/, 'a "done" line for the stage');
  const quiet = await inPty(['stats', stories, '-f', small, '-o', path.join(dir, 'q.stats.gguf'), '-t', '1', '--quiet'], env);
  t.equal(quiet.code, 0);
  t.notMatch(quiet.output, /ETA \d|ETA --|done stats|\r\x1b/, '--quiet on a terminal: no progress');
  const json = await inPty(['stats', stories, '-f', small, '-o', path.join(dir, 'j.stats.gguf'), '-t', '1', '--json'], env);
  t.notMatch(json.output, /ETA \d|ETA --|done stats/, '--json on a terminal: no progress');
});

t.test('Ctrl-C during an in-place patch: the model is restored, exit 130, no journal; a new-file patch is one stage', { skip: !hasScript && 'util-linux script is not installed' }, async (t) => {
  const dir = t.testdir({ 'math.txt': 'Two plus two is four.\n\nHalf of ten is five.\n', 'general.txt': 'The cat sat on the mat.\n\nA tree grows in the park.\n' });
  // big enough that patching every q4_k block of half the weights takes seconds on one thread
  const source = await fixtureModel({ shape: { nEmbd: 512, nFf: 1536, nLayer: 4 }, type: 'q4_k', seed: 16 });
  const model = path.join(dir, 'm.gguf');
  copyFileSync(source, model);
  const before = sha(model);
  const stats = (which: string) => onPipe(['stats', model, '-f', path.join(dir, `${which}.txt`), '-o', path.join(dir, `${which}.stats.gguf`), '-t', '1', '-q'], {});
  t.equal(stats('math').code, 0);
  t.equal(stats('general').code, 0);
  const r = await inPty(['patch', model, '--in-place', '--math', path.join(dir, 'math.stats.gguf'), '--general', path.join(dir, 'general.stats.gguf'), '--method', 'wanda', '--top-k', '50%', '-t', '1'], {}, /patching .*ETA/);
  t.equal(r.code, 130, `exit 130 (${r.output.slice(-400)})`);
  t.match(r.output, /interrupted: finishing the undo/);
  t.match(r.output, /the model was restored from its undo journal/);
  t.equal(sha(model), before, 'the model is bit-exactly the original');
  t.notOk(existsSync(`${model}.mathneuro-undo`), 'no journal left');
  t.same(readdirSync(dir).sort(), ['general.stats.gguf', 'general.txt', 'm.gguf', 'math.stats.gguf', 'math.txt']);

  // a new file that completes: copies and patched tensors take turns, all one stage with one "done" line
  const n = await inPty(['patch', model, '-o', path.join(dir, 'new.gguf'), '--math', path.join(dir, 'math.stats.gguf'), '--general', path.join(dir, 'general.stats.gguf'), '--method', 'wanda', '--top-k', '10%', '-t', '1'], {});
  t.equal(n.code, 0, n.output.slice(-400));
  t.equal(n.output.match(/done patching/g)?.length, 1, 'one "done patching" line');
  t.notMatch(n.output, /done copying/);
  t.ok(existsSync(path.join(dir, 'new.gguf')));
});

t.test('on a pipe: no progress, no ETA, no carriage returns', async (t) => {
  const dir = t.testdir({ 'small.txt': Array.from({ length: 40 }, (_, i) => `Sample ${i}: two plus two is four.`).join('\n\n') + '\n' });
  const r = onPipe(['stats', stories, '-f', path.join(dir, 'small.txt'), '-o', path.join(dir, 's.stats.gguf'), '-t', '1'], {});
  t.equal(r.code, 0, r.stderr);
  t.notMatch(r.stderr, /ETA \d|ETA --|done stats|\r/);
  t.match(r.stdout, /^wrote /);
});
