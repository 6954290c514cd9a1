// What a new user does: `npm pack`, then `npm install ./mathneuro-<version>.tgz` in a fresh app, then
// use it from that app: a plain-Node ESM import that synthesizes a model and collects statistics,
// a TypeScript file type-checked against the shipped .d.ts (moduleResolution nodenext), and the
// CLI (`npx mathneuro boost`, `npx mathneuro eval --task gsm8k --limit 2` with no data flags).
// Two installs: hoisted with install scripts, and nested with --ignore-scripts (the first native
// call then builds the shim). Packages come from the npm cache (--prefer-offline).
//
// Slow (a pack and two installs of node-llama-cpp's ~700 MB tree, two native builds: minutes), so
// `npm test` leaves it out; `npm run test:package` runs it, and .ci/run does as its own step.
// MATHNEURO_PACKAGE_TEST_KEEP=1 keeps the temporary apps (their path is printed).
import t, { type Test } from 'tap';
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { repoRoot } from '../helpers/fixtures.ts';

const work = realpathSync(mkdtempSync(path.join(os.tmpdir(), 'mathneuro-package-')));
if (process.env.MATHNEURO_PACKAGE_TEST_KEEP === '1') t.comment(`keeping ${work}`);
else t.teardown(() => rmSync(work, { recursive: true, force: true }));

// A user's shell: none of the npm_* settings of the `npm test` that runs this, no tsx or tap loader.
const env: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(npm_|NODE_OPTIONS$|TAP|_TAPJS|NODE_V8_COVERAGE$)/i.test(k)));
Object.assign(env, { OMP_WAIT_POLICY: 'passive', NO_COLOR: '1' });
delete env.MATHNEURO_DATA_DIR;
delete env.MATHNEURO_BUILD;

const timings: string[] = [];
function run(cmd: string, args: string[], options: SpawnSyncOptions & { cwd: string }) {
  const started = Date.now();
  // each app its own caches (statistics, eval results), so no scenario reuses another's forward passes
  const r = spawnSync(cmd, args, { env: { ...env, MATHNEURO_CACHE_DIR: path.join(options.cwd, '.mathneuro-cache') }, encoding: 'utf8', timeout: 900_000, maxBuffer: 64 << 20, ...options });
  const seconds = (Date.now() - started) / 1000;
  timings.push(`${seconds.toFixed(1).padStart(6)} s  ${[cmd, ...args].map((a) => a.replace(work, '$TMP')).join(' ')}`);
  return { status: r.status, signal: r.signal, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), seconds };
}
/** Exit 0, or a failure with the command's last output. */
function check(t: Test, r: ReturnType<typeof run>, what: string) {
  if (r.status === 0) t.pass(`${what} (${r.seconds.toFixed(1)} s)`);
  else t.fail(`${what}: exit ${r.status ?? r.signal}\n--- stdout\n${r.stdout.slice(-4000)}\n--- stderr\n${r.stderr.slice(-4000)}`);
}
t.teardown(() => { console.log(`# package test timings:\n${timings.map((l) => `#  ${l}`).join('\n')}`); });

const pkg = JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { name: string; version: string };
let tarball = '';

t.test('npm pack: what the tarball holds', async (t) => {
  const r = run('npm', ['pack', '--json', '--pack-destination', work], { cwd: repoRoot });
  check(t, r, 'npm pack');
  const [info] = JSON.parse(r.stdout.slice(r.stdout.indexOf('['))) as { filename: string; size: number; unpackedSize: number; entryCount: number; files: { path: string; size: number }[] }[];
  tarball = path.join(work, info.filename);
  t.ok(existsSync(tarball), tarball);
  const files = info.files.map((f) => f.path);
  t.comment(`${info.filename}: ${info.entryCount} files, ${(info.size / 1e6).toFixed(2)} MB packed, ${(info.unpackedSize / 1e6).toFixed(2)} MB unpacked`);
  const unwanted = files.filter((f) => /^(test|src|\.ci|\.tap|build|build-source|deps|node_modules)\/|^scripts\/(bench|fuzz|fixture|example|realized)|BENCHMARKS|isolate-.*\.log$|\.log$|^tsconfig|\.tgz$/.test(f));
  t.same(unwanted, [], 'no test, source, benchmark, CI, build or log file');
  for (const need of ['package.json', 'README.md', 'LICENSE', 'dist/index.js', 'dist/index.d.ts', 'dist/cli/main.js', 'dist/core/hash-file.cjs',
    'binding.gyp', 'CMakeLists.txt', 'native/addon.cpp', 'native/patches/kv-gradient.diff', 'scripts/install.mjs', 'scripts/paths.cjs', 'scripts/mathneuro.mjs', 'scripts/build-source.mjs',
    'data/README.md', 'data/LICENSE', 'data/gsm8k_test.jsonl.gz', 'data/gsm8k_train.jsonl.gz', 'data/math500_test.jsonl.gz', 'data/mmlu/test/abstract_algebra_test.csv.gz', 'data/mmlu/dev/abstract_algebra_dev.csv.gz']) {
    t.ok(files.includes(need), need);
  }
  t.equal(files.filter((f) => /^data\/mmlu\/test\/.*_test\.csv\.gz$/.test(f)).length, 57, '57 MMLU test subjects');
  t.equal(files.filter((f) => /^data\/mmlu\/dev\/.*_dev\.csv\.gz$/.test(f)).length, 57, '57 MMLU dev subjects');
  t.ok(info.size < 6e6, `packed size ${info.size} bytes stays small`);
});

const esm = `// plain Node, no TypeScript loader: the package's compiled dist/
import { synthModel, collectStats, readGgufSync, DEFAULT_BOOST_SCALE } from 'mathneuro';
const model = await synthModel({ out: 'tiny.gguf', shape: 'tiny', overwrite: true });
const { stats } = await collectStats(model.path, ['What is 12 times 7? 12 * 7 = 84.', 'The cat sat on the mat and looked at the door.'], { nThreads: 1, nCtx: 128 });
console.log(JSON.stringify({ tensors: readGgufSync(model.path).tensors.length, samples: stats.samples, tokens: stats.tokens, weights: stats.weights.size, scale: DEFAULT_BOOST_SCALE }));
`;

const typed = `// type-checked against node_modules/mathneuro's .d.ts (tsc --noEmit, moduleResolution nodenext)
import { synthModel, collectStats, MathneuroError, defaultDataDir, type CollectResult, type SynthResult, type WeightStats } from 'mathneuro';
const model: SynthResult = await synthModel({ out: 'typed.gguf', shape: 'tiny' });
const result: CollectResult = await collectStats(model.path, ['1 + 1 = 2'], { nThreads: 1, onProgress: (p) => console.log(p.tokensPerSecond.toFixed(1)) });
const first: WeightStats | undefined = result.stats.weights.values().next().value;
const width: number = first?.nIn ?? 0;
const data: string = defaultDataDir();
// @ts-expect-error nThreads is a number
await collectStats(model.path, [], { nThreads: 'two' });
try { await synthModel({ out: '' }); } catch (e) { if (e instanceof MathneuroError) console.log(e.code satisfies string, width, data); }
`;

const tsconfig = {
  compilerOptions: {
    target: 'ES2022', module: 'nodenext', moduleResolution: 'nodenext', strict: true, noEmit: true, skipLibCheck: false,
    types: ['node'], typeRoots: [path.join(repoRoot, 'node_modules', '@types')],
  },
  files: ['check.ts'],
};

const scenarios = [
  { name: 'hoisted, install scripts run', dir: 'hoisted', args: [] as string[], scripts: true, typecheck: true },
  { name: 'nested, --ignore-scripts', dir: 'nested', args: ['--install-strategy=nested', '--ignore-scripts'], scripts: false, typecheck: false },
];

for (const s of scenarios) {
  t.test(s.name, async (t) => {
    if (!tarball) { t.fail('no tarball'); return; }
    const app = path.join(work, s.dir);
    mkdirSync(app, { recursive: true });
    writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: `app-${s.dir}`, version: '1.0.0', private: true, type: 'module' }, null, 2));
    const install = run('npm', ['install', tarball, '--prefer-offline', '--no-audit', '--no-fund', ...s.args], { cwd: app });
    check(t, install, `npm install ${s.args.join(' ')}`);
    if (install.status !== 0) return;

    const m = path.join(app, 'node_modules', pkg.name);
    const hoisted = existsSync(path.join(app, 'node_modules', 'node-llama-cpp'));
    const nested = existsSync(path.join(m, 'node_modules', 'node-llama-cpp'));
    t.same({ hoisted, nested }, s.scripts ? { hoisted: true, nested: false } : { hoisted: false, nested: true }, 'where npm put node-llama-cpp');
    t.notOk(existsSync(path.join(app, 'node_modules', 'tsx')) || existsSync(path.join(m, 'node_modules', 'tsx')), 'tsx is not installed with it');
    t.notOk(existsSync(path.join(m, 'src')), 'no TypeScript sources shipped');
    const shim = path.join(m, 'build', 'Release', 'mathneuro.node');
    t.equal(existsSync(shim), s.scripts, s.scripts ? 'the install script built the shim' : 'nothing built yet');

    const useFile = path.join(app, 'use.mjs');
    writeFileSync(useFile, esm);
    const use = run(process.execPath, [useFile], { cwd: app });
    check(t, use, `node use.mjs`);
    if (use.status === 0) {
      const out = JSON.parse(use.stdout.trim().split('\n').pop()!) as { tensors: number; samples: number; tokens: number; weights: number };
      t.ok(out.tensors > 0 && out.samples === 2 && out.tokens > 10 && out.weights > 0, `statistics collected: ${JSON.stringify(out)}`);
    }
    if (!s.scripts) {
      t.match(use.stderr, /the native shim is not built yet .*building it now, once/, 'the first native call builds, with a progress line');
      t.ok(existsSync(shim), 'and the shim is there afterwards');
    }

    if (s.typecheck) {
      writeFileSync(path.join(app, 'check.ts'), typed);
      writeFileSync(path.join(app, 'tsconfig.json'), JSON.stringify(tsconfig, null, 2));
      // skipLibCheck off, so mathneuro's own .d.ts are checked too. node-llama-cpp 3.21.1's declarations
      // (which EvalModel's types reach) have errors of their own there (an undeclared option, no
      // @types/async-retry): those are reported, not failed; anything else fails.
      const tsc = run(process.execPath, [path.join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', app, '--pretty', 'false'], { cwd: app });
      const errors = tsc.stdout.split('\n').filter((l) => /: error TS\d+:/.test(l));
      const theirs = errors.filter((l) => /^(\S*\/)?node_modules\/node-llama-cpp\//.test(l));
      const ours = errors.filter((l) => !theirs.includes(l));
      t.same(ours, [], `tsc (moduleResolution nodenext, skipLibCheck false) on check.ts and the shipped .d.ts (${tsc.seconds.toFixed(1)} s)`);
      if (theirs.length) t.comment(`node-llama-cpp's own declarations: ${theirs.length} error(s), e.g. ${theirs[0]}`);
      t.ok(tsc.status === 0 || errors.length > 0, `tsc ran (exit ${tsc.status}${tsc.stderr ? `, ${tsc.stderr.trim()}` : ''})`);
    }

    const boost = run('npx', ['--no', 'mathneuro', 'boost', 'tiny.gguf', '-o', 'tiny.boost.gguf', '--samples', '8', '--kl-prompts', '2', '--threads', '1', '--json'], { cwd: app });
    check(t, boost, `npx mathneuro boost`);
    if (boost.status === 0) {
      t.match(JSON.parse(boost.stdout), { ok: true }, 'boost --json');
      t.ok(existsSync(path.join(app, 'tiny.boost.gguf')), 'boosted model written');
    }

    const evalRun = run('npx', ['--no', 'mathneuro', 'eval', 'tiny.gguf', '--task', 'gsm8k', '--limit', '2', '--shots', '1', '--max-tokens', '6', '--threads', '1', '--json'], { cwd: app });
    check(t, evalRun, `npx mathneuro eval --task gsm8k --limit 2`);
    if (evalRun.status === 0) {
      const json = JSON.parse(evalRun.stdout) as { ok: boolean; items: number; settings: { data: string; train: string } };
      t.equal(json.items, 2, 'two GSM8K items');
      const dataDir = path.join(realpathSync(m), 'data');
      t.equal(path.dirname(json.settings.data), dataDir, 'test items from the data shipped in the package');
      t.equal(path.dirname(json.settings.train), dataDir, 'exemplars too');
    }
    t.ok(lstatSync(path.join(app, 'node_modules', '.bin', 'mathneuro')).isSymbolicLink(), 'the bin is linked');
  });
}
