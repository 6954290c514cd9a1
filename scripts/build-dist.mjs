#!/usr/bin/env node
// @ts-check
// `npm run build:dist` (and npm's prepack): compiles src/ to dist/ (ESM JavaScript and .d.ts) with
// tsc -p tsconfig.build.json, then copies the files of src/ that are not TypeScript (e.g.
// core/hash-file.cjs, which the background hash worker loads) to the same place under dist/.
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const src = path.join(root, 'src');
const dist = path.join(root, 'dist');
const started = Date.now();

rmSync(dist, { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const r = spawnSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.build.json')], { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  console.error(`mathneuro: tsc failed (exit ${r.status}); dist/ is incomplete`);
  process.exit(1);
}

/** @param {string} dir */
function copyAssets(dir) {
  let n = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const from = path.join(dir, entry.name);
    if (entry.isDirectory()) n += copyAssets(from);
    else if (!entry.name.endsWith('.ts')) {
      const to = path.join(dist, path.relative(src, from));
      mkdirSync(path.dirname(to), { recursive: true });
      copyFileSync(from, to);
      n++;
    }
  }
  return n;
}
const assets = copyAssets(src);
console.error(`mathneuro: built dist/ from src/ (${assets} non-TypeScript file${assets === 1 ? '' : 's'} copied) in ${((Date.now() - started) / 1000).toFixed(1)} s`);
