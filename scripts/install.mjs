#!/usr/bin/env node
// `npm install` step (and the first native call of a package installed with --ignore-scripts): unpack
// the llama.cpp source that node-llama-cpp ships (offline, for the headers and vocabularies) and build
// the shim against node-llama-cpp's prebuilt libllama/libggml with node-gyp. `--force` rebuilds.
// Every step says what it does; a failure ends with the one command that retries it.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const paths = require('./paths.cjs');
const force = process.argv.includes('--force');
// --first-use: the first native call of a package whose install step did not run (src/native.ts)
const firstUse = process.argv.includes('--first-use');
const quiet = process.argv.includes('--quiet');
const log = (m) => { if (!quiet) console.error(`mathneuro: ${m}`); };

/** The command that retries this script from anywhere (the package's absolute path, quoted if needed). */
export function fixCommand() {
  const script = path.join(paths.root, 'scripts', 'install.mjs');
  return `node ${/[\s"'$]/.test(script) ? JSON.stringify(script) : script} --force`;
}

function which(cmd) {
  const r = spawnSync(process.platform === 'win32' ? 'where' : 'sh', process.platform === 'win32' ? [cmd] : ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
  return r.status === 0;
}

/** The build tools node-gyp needs that are missing, with how to get them. */
export function missingTools() {
  const missing = [];
  if (!which('git')) missing.push('git (to unpack the llama.cpp source bundle)');
  if (process.platform !== 'win32') {
    if (!which('make')) missing.push('make');
    if (!which(process.env.CXX || 'c++') && !which('g++') && !which('clang++')) missing.push('a C++17 compiler (g++ or clang++)');
    if (!which('python3') && !which('python')) missing.push('python3 (node-gyp runs on it)');
  }
  return missing;
}

export function ensureLlamaSource() {
  const dir = paths.llamaSourceDir();
  if (existsSync(path.join(dir, 'include', 'llama.h'))) return dir;
  const bundle = paths.bundlePath();
  if (!existsSync(bundle)) throw new Error(`llama.cpp source bundle not found at ${bundle}: node-llama-cpp@3.21.1 is installed without it`);
  mkdirSync(path.dirname(dir), { recursive: true });
  rmSync(dir, { recursive: true, force: true });
  log(`unpacking the llama.cpp source (headers, vocabularies) from ${bundle} into ${dir}`);
  execFileSync('git', ['clone', '--quiet', bundle, dir], { stdio: ['ignore', 'ignore', 'inherit'] });
  return dir;
}

function nodeGyp() {
  // npm exposes its bundled node-gyp; otherwise look beside npm.
  if (process.env.npm_config_node_gyp && existsSync(process.env.npm_config_node_gyp)) return [process.execPath, process.env.npm_config_node_gyp];
  const candidates = [
    path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    path.join(path.dirname(process.execPath), 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    '/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
    '/usr/local/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
  ];
  for (const c of candidates) if (existsSync(c)) return [process.execPath, c];
  return ['npx', '--no-install', 'node-gyp'];
}

export function buildPrebuilt() {
  const started = Date.now();
  ensureLlamaSource();
  const bins = paths.binsDir();
  if (!existsSync(bins)) throw new Error(`prebuilt llama.cpp libraries not found at ${bins}`);
  const [cmd, ...pre] = nodeGyp();
  log(`building the native shim with node-gyp against the prebuilt llama.cpp in ${bins} (about 10-60 s)`);
  const args = [...pre, 'rebuild', '--silent'];
  // Offline: point node-gyp at the headers that ship with this Node instead of downloading them.
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  if (!process.env.npm_config_nodedir && existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);
  const r = spawnSync(cmd, args, { cwd: paths.root, stdio: quiet ? ['ignore', 'ignore', 'inherit'] : ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) throw new Error(`node-gyp failed with exit code ${r.status ?? r.signal ?? r.error?.message}`);
  log(`built ${path.join(paths.root, 'build', 'Release', 'mathneuro.node')} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}

/** True when this package sits inside someone's node_modules (not a checkout of mathneuro). */
export function dependencyInstall() {
  return paths.root.split(path.sep).includes('node_modules');
}

function alive(pid) {
  try { process.kill(pid, 0); return true; } catch (e) { return /** @type {NodeJS.ErrnoException} */ (e).code === 'EPERM'; }
}

/**
 * Runs `fn` holding a lock folder in the package (made atomically, holding the owner's pid), so that
 * concurrent first uses build once: the others wait, then find the shim built. A lock whose owner
 * died is taken over. (Not inside build/: node-gyp rebuild removes that folder.)
 * @template T @param {() => T} fn @returns {T}
 */
export function withBuildLock(fn) {
  const lock = path.join(paths.root, '.mathneuro-build-lock');
  const deadline = Date.now() + 15 * 60_000;
  let announced = false;
  for (;;) {
    try {
      mkdirSync(lock);
      writeFileSync(path.join(lock, 'pid'), String(process.pid));
      break;
    } catch (e) {
      if (/** @type {NodeJS.ErrnoException} */ (e).code !== 'EEXIST') throw e;
      let owner = NaN;
      try { owner = Number(readFileSync(path.join(lock, 'pid'), 'utf8')); } catch {}
      if (owner > 0 && !alive(owner)) { rmSync(lock, { recursive: true, force: true }); continue; }
      if (Date.now() > deadline) throw new Error(`another build (pid ${owner}) has held ${lock} for 15 minutes; remove that folder if no build runs`);
      if (!announced) { log(`waiting for another build of the native shim (pid ${owner}) to finish`); announced = true; }
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 500);
    }
  }
  try { return fn(); } finally { rmSync(lock, { recursive: true, force: true }); }
}

/** The whole install step; returns the exit code. */
export function install() {
  try {
    withBuildLock(() => {
      // checked inside the lock: a build that finished while this one waited counts
      const built = existsSync(path.join(paths.root, 'build', 'Release', 'mathneuro.node'));
      if (built && !force) { ensureLlamaSource(); log('native shim already built (`npm run build` or --force rebuilds it)'); }
      else buildPrebuilt();
    });
    return 0;
  } catch (e) {
    console.error(`mathneuro: could not build the native shim: ${e.message}`);
    const missing = missingTools();
    if (missing.length) console.error(`mathneuro: missing build tools: ${missing.join(', ')} (Debian/Ubuntu: apt-get install git make g++ python3)`);
    console.error(`mathneuro: fix the cause above, then run:\n  ${fixCommand()}`);
    // As a dependency (npm's install step in someone's node_modules), a failed build must not roll
    // back their whole install: the first native call retries it. An explicit build fails loudly.
    if (!force && !firstUse && dependencyInstall()) {
      console.error('mathneuro: (the install goes on; the first command that needs the shim tries the build again)');
      return 0;
    }
    return 1;
  }
}

const isMain = process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) process.exit(install());
