// Paths the builds need, printed for binding.gyp / CMakeLists.txt: `node scripts/paths.cjs bins|llama|bundle|node-llama-cpp`.
//
// node-llama-cpp and its prebuilt @node-llama-cpp/<platform> package are found through Node's own
// resolution of their entry points (neither exports its package.json), so every npm layout works:
// hoisted (node_modules/node-llama-cpp beside mathneuro), nested (inside mathneuro/node_modules),
// workspaces (a parent node_modules) and pnpm's symlinked store (the platform package is only
// resolvable from node-llama-cpp's own real folder, so it is resolved from there).
'use strict';
const path = require('path');
const fs = require('fs');
const root = path.resolve(__dirname, '..');

function platformPackage() {
  const arch = process.arch;
  const plat = process.platform === 'darwin' ? 'mac' : process.platform === 'win32' ? 'win' : process.platform;
  return `${plat}-${arch}`;
}

/** The folder of the package `name` whose entry point resolves from `from`: the nearest folder above
 * the entry file whose package.json has that name. Undefined when it does not resolve. */
function packageDir(name, from) {
  let entry;
  try { entry = require.resolve(name, { paths: [from] }); } catch { return undefined; }
  let dir = path.dirname(fs.realpathSync(entry));
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg)) {
      try { if (JSON.parse(fs.readFileSync(pkg, 'utf8')).name === name) return dir; } catch {}
    }
    const up = path.dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

/** node-llama-cpp's folder; throws with the fix when it is not installed. */
function nodeLlamaCppDir() {
  const dir = packageDir('node-llama-cpp', root);
  if (!dir) throw new Error(`node-llama-cpp is not installed where mathneuro (${root}) can resolve it: run \`npm install node-llama-cpp@3.21.1\` in your project`);
  return dir;
}

/** The prebuilt libllama/libggml folder of @node-llama-cpp/<platform>. */
function binsDir() {
  const name = platformPackage();
  const from = [];
  try { from.push(nodeLlamaCppDir()); } catch {}
  from.push(root);
  for (const f of from) {
    const dir = packageDir(`@node-llama-cpp/${name}`, f);
    if (dir) return path.join(dir, 'bins', name);
  }
  throw new Error(`the prebuilt llama.cpp package @node-llama-cpp/${name} is not installed (node-llama-cpp installs it as an optional dependency for this platform): run \`npm install node-llama-cpp@3.21.1\` in your project, without --omit=optional`);
}

function llamaSourceDir() {
  return path.join(root, 'deps', 'llama.cpp');
}

/** The git bundle of the llama.cpp source that node-llama-cpp ships. */
function bundlePath() {
  return path.join(nodeLlamaCppDir(), 'llama', 'gitRelease.bundle');
}

module.exports = { root, binsDir, llamaSourceDir, bundlePath, nodeLlamaCppDir, packageDir, platformPackage };

if (require.main === module) {
  const what = process.argv[2];
  try {
    if (what === 'bins') process.stdout.write(binsDir());
    else if (what === 'llama') process.stdout.write(llamaSourceDir());
    else if (what === 'bundle') process.stdout.write(bundlePath());
    else if (what === 'node-llama-cpp') process.stdout.write(nodeLlamaCppDir());
    else { console.error('usage: paths.cjs bins|llama|bundle|node-llama-cpp'); process.exit(2); }
  } catch (e) {
    console.error(`mathneuro: ${e.message}`);
    process.exit(1);
  }
}
