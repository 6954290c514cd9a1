// MATHNEURO_CPU_VARIANT: the prebuilt loads the one CPU library asked for (libggml-cpu-<variant>.so),
// for mathneuro's shim and node-llama-cpp alike; an unknown, unsupported or too-late variant is an
// error that lists the variants, never an abort. Each case runs in a child process (one backend per process).
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { buildPaths, prebuiltBinsDir } from '../../src/native.ts';
import { repoRoot } from '../helpers/fixtures.ts';

const cliPath = path.join(repoRoot, 'scripts', 'mathneuro.mjs');
const bins = prebuiltBinsDir();
const variants = existsSync(bins) ? readdirSync(bins).map((f) => /^libggml-cpu-(.+)\.so$/.exec(f)?.[1]).filter((v): v is string => !!v) : [];
const skip = !existsSync(buildPaths.prebuilt) ? 'prebuilt build absent' : !variants.includes('x64') ? 'this platform has no CPU variants' : false;

// child scripts live inside the repository so that node_modules resolves as for the tests
mkdirSync(path.join(repoRoot, '.cache'), { recursive: true });
const scriptDir = mkdtempSync(path.join(repoRoot, '.cache', 'cpu-variant-'));
t.teardown(() => rmSync(scriptDir, { recursive: true, force: true }));
let scripts = 0;

function run(args: string[], env: Record<string, string | undefined>, script?: string) {
  const childEnv: NodeJS.ProcessEnv = { ...process.env, ...env };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete childEnv[k];
  let argv = [cliPath, ...args];
  if (script) {
    const file = path.join(scriptDir, `child-${scripts++}.mts`);
    writeFileSync(file, script);
    argv = ['--import', 'tsx', file];
  }
  return spawnSync(process.execPath, argv, { env: childEnv, encoding: 'utf8', cwd: repoRoot });
}

t.test('doctor: the loaded variant and the one the default picks', { skip }, async (t) => {
  const dflt = run(['doctor', '--json'], { MATHNEURO_CPU_VARIANT: undefined, MATHNEURO_BUILD: 'prebuilt' });
  t.equal(dflt.status, 0, dflt.stderr);
  const d = JSON.parse(dflt.stdout).cpuBackend;
  t.ok(d.defaultVariant, `the default picks ${d.defaultVariant}`);
  t.equal(d.loaded, d.defaultVariant, 'without the variable, the default is loaded');
  t.equal(d.forced, null);
  t.same(d.variants.map((v: { name: string }) => v.name).sort(), [...variants].sort(), 'every libggml-cpu-*.so listed');

  // without MATHNEURO_BUILD: the variant selects the prebuilt even where a newer source build exists
  const forced = run(['doctor', '--json'], { MATHNEURO_CPU_VARIANT: 'x64', MATHNEURO_BUILD: undefined });
  t.equal(forced.status, 0, forced.stderr);
  const f = JSON.parse(forced.stdout);
  t.equal(f.used, 'prebuilt');
  t.equal(f.cpuBackend.loaded, 'x64');
  t.equal(f.cpuBackend.forced, 'x64');
  t.equal(f.cpuBackend.defaultVariant, d.defaultVariant, 'doctor still says which one the default would pick');
  t.match(run(['doctor'], { MATHNEURO_CPU_VARIANT: 'x64', MATHNEURO_BUILD: 'prebuilt' }).stdout, /CPU backend: x64 .*forced by MATHNEURO_CPU_VARIANT/);
});

t.test('unknown, unsupported and misplaced variants are errors that list the variants', { skip }, async (t) => {
  const unknown = run(['doctor', '--json'], { MATHNEURO_CPU_VARIANT: 'no-such-cpu', MATHNEURO_BUILD: 'prebuilt' });
  t.equal(unknown.signal, null, 'no abort');
  t.equal(unknown.status, 1);
  const err = JSON.parse(unknown.stdout).error;
  t.equal(err.code, 'ENOBACKEND');
  t.match(err.message, /no-such-cpu is not a CPU variant of the prebuilt; available in .*x64.*; this CPU supports: .*; the default picks/);

  const info = JSON.parse(run(['doctor', '--json'], { MATHNEURO_CPU_VARIANT: undefined, MATHNEURO_BUILD: 'prebuilt' }).stdout).cpuBackend;
  const unsupported = info.variants.find((v: { supported: boolean }) => !v.supported);
  if (unsupported) {
    const r = run(['doctor', '--json'], { MATHNEURO_CPU_VARIANT: unsupported.name, MATHNEURO_BUILD: 'prebuilt' });
    t.equal(r.signal, null, `${unsupported.name}: no abort`);
    t.equal(r.status, 1);
    t.match(JSON.parse(r.stdout).error.message, new RegExp(`${unsupported.name} needs instructions this CPU lacks`));
  } else {
    t.comment('this CPU supports every variant: the unsupported case is not exercised here');
  }

  if (existsSync(buildPaths.source)) {
    const r = run(['doctor', '--json'], { MATHNEURO_CPU_VARIANT: 'x64', MATHNEURO_BUILD: 'source' });
    t.equal(r.status, 1);
    t.match(JSON.parse(r.stdout).error.message, /applies to the prebuilt build only: the source build has its CPU backend compiled in/);
    // the source build scans the prebuilt's variants for doctor without aborting (libggml-base is kept loaded)
    for (let i = 0; i < 3; i++) {
      const s = run(['doctor', '--json'], { MATHNEURO_CPU_VARIANT: undefined, MATHNEURO_BUILD: 'source' });
      t.equal(s.status, 0, `source doctor run ${i}: ${s.stderr.slice(-300)}`);
      if (s.status === 0) t.equal(JSON.parse(s.stdout).cpuBackend.loaded, 'built-in');
    }
  }

  // node-llama-cpp first, then the shim: too late to choose; an error, not a silent other variant
  const late = run([], { MATHNEURO_CPU_VARIANT: 'x64', MATHNEURO_BUILD: 'prebuilt' }, `
    import { getLlama } from 'node-llama-cpp';
    await getLlama({ gpu: false, build: 'never' });
    const { loadNative } = await import(${JSON.stringify(path.join(repoRoot, 'src', 'native.ts'))});
    try { loadNative(); console.log('loaded'); } catch (e) { console.log(e.code, e.message); }`);
  t.equal(late.signal, null, 'no abort');
  t.match(late.stdout, /ENOBACKEND .*a CPU backend was already loaded in this process from .*libggml-cpu-/, late.stderr.slice(-300));
});

t.test('the variant holds for node-llama-cpp in the same process', { skip }, async (t) => {
  const r = run([], { MATHNEURO_CPU_VARIANT: 'x64', MATHNEURO_BUILD: 'prebuilt' }, `
    import { sharedLlama } from ${JSON.stringify(path.join(repoRoot, 'src', 'eval', 'runtime.ts'))};
    import { cpuBackendInfo } from ${JSON.stringify(path.join(repoRoot, 'src', 'native.ts'))};
    const llama = await sharedLlama({ gpu: false });
    const info = cpuBackendInfo();
    console.log(JSON.stringify({ loaded: info.loaded, cpuDevices: info.cpuDevices, gpu: llama.gpu }));`);
  t.equal(r.status, 0, r.stderr.slice(-500));
  t.same(JSON.parse(r.stdout.trim().split('\n').pop()!), { loaded: 'x64', cpuDevices: 1, gpu: false }, 'one CPU backend in the process: x64');
});
