#!/usr/bin/env node
// `npm run build:source`: build the bundled llama.cpp from source (static, symbols hidden) and the same
// shim as the prebuilt build into build-source/Release/mathneuro.node, with cmake-js (CMakeLists.txt).
// The source is a patched copy of deps/llama.cpp (deps/llama.cpp-patched): node-llama-cpp's own patches,
// then ours from native/patches/ (the K/V-gradient fix that training needs).
//
//   npm run build:source [-- --cuda | --metal | --vulkan] [--native] [--imatrix] [--jobs N] [--debug] [-DNAME=VALUE ...]
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { ensureLlamaSource } from './install.mjs';

const require = createRequire(import.meta.url);
const paths = require('./paths.cjs');
const log = (m) => console.error(`mathneuro: ${m}`);

const usage = `usage: npm run build:source -- [--cuda] [--metal] [--vulkan] [--native] [--imatrix] [--jobs N] [--debug] [--clean] [-DNAME=VALUE ...]
  --cuda / --metal / --vulkan  enable that ggml backend (GGML_CUDA / GGML_METAL / GGML_VULKAN)
  --native                     optimize for this CPU (GGML_NATIVE=ON; the result may not run elsewhere)
  --imatrix                    also build llama-imatrix (benchmarks only) into build-source/imatrix/
  --jobs N                     parallel compile jobs (default: MATHNEURO_BUILD_JOBS or the CPU count)
  --clean                      remove build-source/ first
  -DNAME=VALUE                 passed to CMake as is`;

export function parseArgs(argv) {
  const options = { defines: {}, jobs: Number(process.env.MATHNEURO_BUILD_JOBS) || os.availableParallelism(), imatrix: false, debug: false, clean: false };
  options.defines.GGML_NATIVE = 'OFF';
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--cuda') options.defines.GGML_CUDA = 'ON';
    else if (arg === '--metal') options.defines.GGML_METAL = 'ON';
    else if (arg === '--vulkan') options.defines.GGML_VULKAN = 'ON';
    else if (arg === '--native') options.defines.GGML_NATIVE = 'ON';
    else if (arg === '--imatrix') options.imatrix = true;
    else if (arg === '--debug') options.debug = true;
    else if (arg === '--clean') options.clean = true;
    else if (arg === '--jobs' || arg === '-j') options.jobs = Number(argv[++i]);
    else if (arg.startsWith('-D') && arg.includes('=')) {
      const [name, ...rest] = arg.slice(2).split('=');
      options.defines[name] = rest.join('=');
    } else if (arg === '--help' || arg === '-h') { console.log(usage); process.exit(0); }
    else throw new Error(`unknown option ${arg}\n${usage}`);
  }
  if (!Number.isInteger(options.jobs) || options.jobs < 1) throw new Error('--jobs needs a positive integer');
  if (options.imatrix) options.defines.MATHNEURO_IMATRIX = 'ON';
  return options;
}

/** The patches the source build applies, in order: node-llama-cpp's, then the project's own. */
export function patchList() {
  const bundle = paths.bundlePath();
  const upstreamDir = path.join(path.dirname(bundle), 'patches');
  const ownDir = path.join(paths.root, 'native', 'patches');
  const list = (dir) => (existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.diff') || f.endsWith('.patch')).sort().map((f) => path.join(dir, f)) : []);
  return [...list(upstreamDir), ...list(ownDir)];
}

export function patchedSourceDir() { return path.join(paths.root, 'deps', 'llama.cpp-patched'); }

const git = (cwd, args, opts = {}) => execFileSync('git', ['-c', 'advice.detachedHead=false', ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'], ...opts });

/**
 * A copy of deps/llama.cpp with every patch applied exactly once. A stamp of the patches' contents
 * decides whether the copy is current; when they change, the copy is reset to the pristine commit
 * and patched again (deps/llama.cpp itself stays pristine for the prebuilt build's headers).
 */
export function preparePatchedSource() {
  const pristine = ensureLlamaSource();
  const dir = patchedSourceDir();
  const patches = patchList();
  const stampPath = path.join(dir, '.mathneuro-patches');
  const hash = createHash('sha256');
  for (const p of patches) hash.update(path.basename(p)).update(readFileSync(p));
  const stamp = hash.digest('hex');
  if (!existsSync(path.join(dir, '.git'))) {
    log(`copying llama.cpp source to ${path.relative(paths.root, dir)}`);
    rmSync(dir, { recursive: true, force: true });
    execFileSync('git', ['clone', '--quiet', pristine, dir], { stdio: ['ignore', 'ignore', 'inherit'] });
  } else if (existsSync(stampPath) && readFileSync(stampPath, 'utf8').trim() === stamp) {
    return dir;
  }
  const head = git(pristine, ['rev-parse', 'HEAD']).toString().trim();
  git(dir, ['fetch', '--quiet', pristine, head]);
  git(dir, ['checkout', '--quiet', '--force', head]);
  git(dir, ['clean', '--quiet', '-fd']);
  for (const p of patches) {
    try {
      git(dir, ['apply', '--whitespace=nowarn', p]);
    } catch (e) {
      throw new Error(`patch ${path.relative(paths.root, p)} does not apply to llama.cpp ${head.slice(0, 7)}: ${e.stderr?.toString().trim()}`);
    }
    log(`applied ${path.relative(paths.root, p)}`);
  }
  writeFileSync(stampPath, `${stamp}\n`);
  return dir;
}

function cmakeJs() {
  const pkg = require.resolve('cmake-js/package.json', { paths: [paths.root] });
  return path.join(path.dirname(pkg), 'bin', 'cmake-js');
}

export function buildSource(options) {
  const llamaDir = preparePatchedSource();
  const out = path.join(paths.root, 'build-source');
  if (options.clean) rmSync(out, { recursive: true, force: true });
  const defines = { ...options.defines, MATHNEURO_LLAMA_DIR: llamaDir };
  const args = [cmakeJs(), 'build', '--out', out, '--parallel', String(options.jobs), '--directory', paths.root];
  if (options.debug) args.push('--debug');
  for (const [name, value] of Object.entries(defines)) args.push(`--CD${name}=${value}`);
  const started = Date.now();
  log(`building llama.cpp and the shim from source (${options.jobs} jobs; ${Object.entries(options.defines).map(([k, v]) => `${k}=${v}`).join(' ')})`);
  let r = spawnSync(process.execPath, [...args, '--target', 'mathneuro'], { cwd: paths.root, stdio: 'inherit' });
  if (r.status !== 0) throw new Error(`cmake-js failed with exit code ${r.status}`);
  if (options.imatrix) {
    r = spawnSync(process.execPath, [...args, '--target', 'llama-imatrix'], { cwd: paths.root, stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`building llama-imatrix failed with exit code ${r.status}`);
  }
  const addon = path.join(out, options.debug ? 'Debug' : 'Release', 'mathneuro.node');
  if (!existsSync(addon)) throw new Error(`the build finished but ${addon} is missing`);
  log(`built ${path.relative(paths.root, addon)} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return addon;
}

const isMain = process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname);
if (isMain) {
  try {
    buildSource(parseArgs(process.argv.slice(2)));
  } catch (e) {
    console.error(`mathneuro: source build failed: ${e.message}`);
    process.exit(1);
  }
}
