// Both native builds run the collector's float64-reference test: the prebuilt-linked one (npm install)
// and the source build (npm run build:source) when it exists.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { buildPaths } from '../../src/native.ts';
import { repoRoot } from '../helpers/fixtures.ts';

for (const kind of ['prebuilt', 'source'] as const) {
  t.test(`the ${kind} build passes the collector reference test`, { skip: existsSync(buildPaths[kind]) ? false : `${kind} build absent` }, async (t) => {
    // the source build has its CPU backend compiled in: MATHNEURO_CPU_VARIANT (set by .ci/run's rerun) is the prebuilt's
    const env: NodeJS.ProcessEnv = { ...process.env, MATHNEURO_BUILD: kind, TAP_BAIL: '0', TAP_TIMEOUT: '600' };
    if (kind === 'source') delete env.MATHNEURO_CPU_VARIANT;
    const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'test', 'stats', 'collector.test.ts')], {
      env, encoding: 'utf8', cwd: repoRoot,
    });
    t.equal(r.status, 0, `exit status (stderr: ${r.stderr.slice(-500)})`);
    t.notMatch(r.stdout, /^\s*not ok/m, 'no failing assertion');
    t.match(r.stdout, /^ok \d+ - layer-0/m, 'the reference subtests ran');
  });
}
