// Paths the builds need, printed for binding.gyp / CMakeLists.txt: `node scripts/paths.cjs bins|llama`.
'use strict';
const path = require('path');
const fs = require('fs');
const root = path.resolve(__dirname, '..');

function platformPackage() {
  const arch = process.arch;
  const plat = process.platform === 'darwin' ? 'mac' : process.platform === 'win32' ? 'win' : process.platform;
  return `${plat}-${arch}`;
}

function binsDir() {
  const name = platformPackage();
  const candidates = [
    path.join(root, 'node_modules', '@node-llama-cpp', name, 'bins', name),
  ];
  try {
    const pkg = require.resolve(`@node-llama-cpp/${name}/package.json`, { paths: [root] });
    candidates.push(path.join(path.dirname(pkg), 'bins', name));
  } catch {}
  for (const c of candidates) if (fs.existsSync(c)) return c;
  return candidates[0];
}

function llamaSourceDir() {
  return path.join(root, 'deps', 'llama.cpp');
}

function bundlePath() {
  try {
    const pkg = require.resolve('node-llama-cpp/package.json', { paths: [root] });
    return path.join(path.dirname(pkg), 'llama', 'gitRelease.bundle');
  } catch { return path.join(root, 'node_modules', 'node-llama-cpp', 'llama', 'gitRelease.bundle'); }
}

module.exports = { root, binsDir, llamaSourceDir, bundlePath, platformPackage };

if (require.main === module) {
  const what = process.argv[2];
  if (what === 'bins') process.stdout.write(binsDir());
  else if (what === 'llama') process.stdout.write(llamaSourceDir());
  else if (what === 'bundle') process.stdout.write(bundlePath());
  else { console.error('usage: paths.cjs bins|llama|bundle'); process.exit(2); }
}
