// scripts/paths.cjs finds node-llama-cpp and its prebuilt platform package in every layout a
// package manager makes: hoisted, nested, a workspace's parent node_modules, pnpm's symlinked
// store. Fake packages (a package.json and an entry file each) stand in for the real ones.
import t, { type Test } from 'tap';
import { copyFileSync, mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../helpers/fixtures.ts';

const require = (await import('node:module')).createRequire(import.meta.url);
const { platformPackage } = require(path.join(repoRoot, 'scripts', 'paths.cjs')) as { platformPackage(): string };
const platform = platformPackage();

/** A package folder like npm lays it out: package.json with "exports" (no ./package.json) and dist/index.js. */
function fakePackage(dir: string, name: string) {
  mkdirSync(path.join(dir, 'dist'), { recursive: true });
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name, version: '3.21.1', type: 'module', exports: { '.': { import: './dist/index.js', node: './dist/index.js', default: './dist/index.js' } } }));
  writeFileSync(path.join(dir, 'dist', 'index.js'), 'export {};\n');
}

function fakeMathneuro(dir: string) {
  mkdirSync(path.join(dir, 'scripts'), { recursive: true });
  writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'mathneuro', version: '0.1.0', type: 'module' }));
  copyFileSync(path.join(repoRoot, 'scripts', 'paths.cjs'), path.join(dir, 'scripts', 'paths.cjs'));
}

function paths(mathneuro: string, what: string): { status: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [path.join(mathneuro, 'scripts', 'paths.cjs'), what], { encoding: 'utf8' });
  return { status: r.status, out: r.stdout, err: r.stderr };
}

function tempDir(t: Test): string {
  const dir = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'mathneuro-paths-')));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const layouts: Record<string, (root: string) => { mathneuro: string; nlc: string; platformDir: string }> = {
  hoisted(root) {
    const nm = path.join(root, 'app', 'node_modules');
    fakeMathneuro(path.join(nm, 'mathneuro'));
    fakePackage(path.join(nm, 'node-llama-cpp'), 'node-llama-cpp');
    fakePackage(path.join(nm, '@node-llama-cpp', platform), `@node-llama-cpp/${platform}`);
    return { mathneuro: path.join(nm, 'mathneuro'), nlc: path.join(nm, 'node-llama-cpp'), platformDir: path.join(nm, '@node-llama-cpp', platform) };
  },
  nested(root) {
    const m = path.join(root, 'app', 'node_modules', 'mathneuro');
    fakeMathneuro(m);
    const nlc = path.join(m, 'node_modules', 'node-llama-cpp');
    fakePackage(nlc, 'node-llama-cpp');
    const plat = path.join(nlc, 'node_modules', '@node-llama-cpp', platform);
    fakePackage(plat, `@node-llama-cpp/${platform}`);
    return { mathneuro: m, nlc, platformDir: plat };
  },
  workspace(root) {
    // npm workspaces: packages/tool/node_modules/mathneuro, the rest hoisted to the root's node_modules
    const nm = path.join(root, 'repo', 'node_modules');
    const m = path.join(root, 'repo', 'packages', 'tool', 'node_modules', 'mathneuro');
    fakeMathneuro(m);
    fakePackage(path.join(nm, 'node-llama-cpp'), 'node-llama-cpp');
    fakePackage(path.join(nm, '@node-llama-cpp', platform), `@node-llama-cpp/${platform}`);
    return { mathneuro: m, nlc: path.join(nm, 'node-llama-cpp'), platformDir: path.join(nm, '@node-llama-cpp', platform) };
  },
  pnpm(root) {
    // node_modules/.pnpm/<pkg>@<version>/node_modules/<pkg> holds each package; its dependencies are
    // symlinks beside it, and the app's node_modules only links its direct dependencies.
    const store = path.join(root, 'app', 'node_modules', '.pnpm');
    const m = path.join(store, 'mathneuro@0.1.0', 'node_modules', 'mathneuro');
    const nlc = path.join(store, 'node-llama-cpp@3.21.1', 'node_modules', 'node-llama-cpp');
    const plat = path.join(store, `@node-llama-cpp+${platform}@3.21.1`, 'node_modules', '@node-llama-cpp', platform);
    fakeMathneuro(m);
    fakePackage(nlc, 'node-llama-cpp');
    fakePackage(plat, `@node-llama-cpp/${platform}`);
    symlinkSync(nlc, path.join(store, 'mathneuro@0.1.0', 'node_modules', 'node-llama-cpp'), 'dir');
    mkdirSync(path.join(store, 'node-llama-cpp@3.21.1', 'node_modules', '@node-llama-cpp'), { recursive: true });
    symlinkSync(plat, path.join(store, 'node-llama-cpp@3.21.1', 'node_modules', '@node-llama-cpp', platform), 'dir');
    symlinkSync(m, path.join(root, 'app', 'node_modules', 'mathneuro'), 'dir');
    return { mathneuro: path.join(root, 'app', 'node_modules', 'mathneuro'), nlc, platformDir: plat };
  },
};

for (const [name, make] of Object.entries(layouts)) {
  t.test(name, async (t) => {
    const root = tempDir(t);
    const { mathneuro, nlc, platformDir } = make(root);
    const nlcReal = realpathSync(nlc);
    t.same(paths(mathneuro, 'node-llama-cpp'), { status: 0, out: nlcReal, err: '' }, 'node-llama-cpp');
    t.same(paths(mathneuro, 'bundle'), { status: 0, out: path.join(nlcReal, 'llama', 'gitRelease.bundle'), err: '' }, 'its llama.cpp bundle');
    t.same(paths(mathneuro, 'bins'), { status: 0, out: path.join(realpathSync(platformDir), 'bins', platform), err: '' }, `@node-llama-cpp/${platform}`);
  });
}

t.test('missing packages: an error that names the command to run', async (t) => {
  const root = tempDir(t);
  const m = path.join(root, 'app', 'node_modules', 'mathneuro');
  fakeMathneuro(m);
  const nlc = paths(m, 'bundle');
  t.equal(nlc.status, 1);
  t.match(nlc.err, /node-llama-cpp is not installed .*npm install node-llama-cpp@3\.21\.1/);
  fakePackage(path.join(root, 'app', 'node_modules', 'node-llama-cpp'), 'node-llama-cpp');
  const bins = paths(m, 'bins');
  t.equal(bins.status, 1);
  t.match(bins.err, new RegExp(`@node-llama-cpp/${platform} is not installed .*without --omit=optional`));
});
