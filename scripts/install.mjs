#!/usr/bin/env node
// `npm install` step: unpack the llama.cpp source that node-llama-cpp ships (offline) and build the
// shim against node-llama-cpp's prebuilt libllama/libggml with node-gyp. `--force` rebuilds.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);
const paths = require('./paths.cjs');
const force = process.argv.includes('--force');
const quiet = process.argv.includes('--quiet');
const log = (m) => { if (!quiet) console.error(`mathneuro: ${m}`); };

export function ensureLlamaSource() {
  const dir = paths.llamaSourceDir();
  if (existsSync(path.join(dir, 'include', 'llama.h'))) return dir;
  const bundle = paths.bundlePath();
  if (!existsSync(bundle)) throw new Error(`llama.cpp source bundle not found at ${bundle}: is node-llama-cpp@3.21.1 installed?`);
  mkdirSync(path.dirname(dir), { recursive: true });
  log(`unpacking llama.cpp source from ${path.relative(paths.root, bundle)}`);
  execFileSync('git', ['clone', '--quiet', bundle, dir], { stdio: ['ignore', 'ignore', 'inherit'] });
  return dir;
}

function nodeGyp() {
  // npm exposes its bundled node-gyp; otherwise look beside npm.
  if (process.env.npm_config_node_gyp && existsSync(process.env.npm_config_node_gyp)) return [process.execPath, process.env.npm_config_node_gyp];
  const candidates = [
    path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
    '/usr/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
    '/usr/local/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js',
  ];
  for (const c of candidates) if (existsSync(c)) return [process.execPath, c];
  return ['npx', '--no-install', 'node-gyp'];
}

export function buildPrebuilt() {
  ensureLlamaSource();
  const bins = paths.binsDir();
  if (!existsSync(bins)) throw new Error(`prebuilt llama.cpp libraries not found at ${bins}`);
  const [cmd, ...pre] = nodeGyp();
  log('building the native shim (node-gyp, against node-llama-cpp prebuilt libllama)');
  const args = [...pre, 'rebuild', '--silent'];
  // Offline: point node-gyp at the headers that ship with this Node instead of downloading them.
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  if (!process.env.npm_config_nodedir && existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);
  const r = spawnSync(cmd, args, { cwd: paths.root, stdio: quiet ? ['ignore', 'ignore', 'inherit'] : 'inherit' });
  if (r.status !== 0) throw new Error(`node-gyp failed with exit code ${r.status}`);
}

const isMain = import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('install.mjs');
if (isMain) {
  try {
    const built = existsSync(path.join(paths.root, 'build', 'Release', 'mathneuro.node'));
    if (built && !force) { ensureLlamaSource(); log('native shim already built (npm run build to rebuild)'); }
    else buildPrebuilt();
  } catch (e) {
    console.error(`mathneuro: install failed: ${e.message}`);
    process.exit(1);
  }
}
