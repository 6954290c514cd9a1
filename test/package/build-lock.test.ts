// Concurrent first uses of a package installed without its install step build the shim once:
// scripts/install.mjs takes turns on a lock folder, and takes over a lock whose owner died.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { repoRoot } from '../helpers/fixtures.ts';

const dir = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'mathneuro-lock-')));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const pkg = path.join(dir, 'mathneuro');
mkdirSync(path.join(pkg, 'scripts'), { recursive: true });
for (const f of ['install.mjs', 'paths.cjs']) copyFileSync(path.join(repoRoot, 'scripts', f), path.join(pkg, 'scripts', f));
const lock = path.join(pkg, '.mathneuro-build-lock');
const log = path.join(dir, 'log');

// one "build": holds the lock 300 ms, writing start/end lines
const job = `import(${JSON.stringify(pathToFileURL(path.join(pkg, 'scripts', 'install.mjs')).href)}).then(({ withBuildLock }) => withBuildLock(() => {
  const fs = require('node:fs');
  fs.appendFileSync(${JSON.stringify(log)}, 'start ' + process.pid + '\\n');
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 300);
  fs.appendFileSync(${JSON.stringify(log)}, 'end ' + process.pid + '\\n');
}));`;

const runJob = () => new Promise<{ code: number | null; stderr: string }>((resolve) => {
  const child = spawn(process.execPath, ['-e', job], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  child.on('close', (code) => resolve({ code, stderr }));
});

t.test('three at once take turns', async (t) => {
  writeFileSync(log, '');
  const results = await Promise.all([runJob(), runJob(), runJob()]);
  t.same(results.map((r) => r.code), [0, 0, 0], results.map((r) => r.stderr).join(''));
  const lines = readFileSync(log, 'utf8').trim().split('\n');
  t.equal(lines.length, 6);
  for (let i = 0; i < lines.length; i += 2) {
    const [a, pa] = lines[i]!.split(' '), [b, pb] = lines[i + 1]!.split(' ');
    t.same([a, b, pa], ['start', 'end', pb], `job ${i / 2 + 1} ran alone`);
  }
  t.ok(results.some((r) => /waiting for another build of the native shim/.test(r.stderr)), 'a waiter says so');
  t.notOk(existsSync(lock), 'the lock is gone afterwards');
});

t.test("a dead owner's lock is taken over", async (t) => {
  writeFileSync(log, '');
  const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  mkdirSync(lock);
  writeFileSync(path.join(lock, 'pid'), dead.stdout);
  const r = await runJob();
  t.equal(r.code, 0, r.stderr);
  t.equal(readFileSync(log, 'utf8').trim().split('\n').length, 2, 'it ran');
  t.notOk(existsSync(lock));
});
