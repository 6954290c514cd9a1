// Selection + patch against the I/O limit: wall time and peak RSS of `mathneuro patch` (new file)
// versus `cp` of the same file followed by an fsync of the copy (the floor: a patched new file is
// synced too) and one read of it (`cat > /dev/null`), all from a warm page cache; a K sweep (8 K
// from one statistics pair) versus one K; selection in-process too (without node's start-up); on
// quantized models, patching with each requantization strategy.
//   npm run bench -- patch [--model M.gguf | --shape llama-1b --type mixed] [--repeats 3]
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { modelIdentity, saveStats, type WeightStats } from '../../src/stats/index.ts';
import type { SynthShapeName, SynthTypeName } from '../../src/synth.ts';
import { benchDir, benchModel, machine, machineLine, median, parseTimeV, repoRoot, table, writeSection } from './common.ts';

/** Statistics with the model's shapes and random positive values (speed does not depend on them). */
export async function syntheticStats(model: string, seed: number): Promise<string> {
  const file = path.join(benchDir, `${path.basename(model, '.gguf')}.synthetic-${seed}.stats.gguf`);
  if (existsSync(file)) return file;
  const info = readGgufSync(model);
  let s = seed;
  const r = () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32; };
  const weights = new Map<string, WeightStats>();
  for (const t of info.tensors) {
    if (!t.name.startsWith('blk.') || t.shape.length < 2 || t.name.includes('norm')) continue;
    const nIn = t.shape[0], nMat = t.shape[2] ?? 1;
    weights.set(t.name, { name: t.name, nIn, nMat, normSum: new Float64Array(nIn * nMat).map(() => 0.1 + r() * 5), sum2: new Float64Array(nIn * nMat).map(() => 0.01 + r() * 3), counts: new Float64Array(nMat).fill(100) });
  }
  await saveStats({ model: modelIdentity(info), samples: 1, tokens: 100, datasets: [`synthetic-${seed}`], weights }, file);
  return file;
}

// The CLI as the installed package runs it: the compiled dist/ under plain node (MATHNEURO_DIST=1), not
// the checkout's TypeScript through tsx, whose start alone cost ~0.9 s more per command here.
const cliEnv = { ...process.env, MATHNEURO_DIST: '1' };

function timed(cmd: string[], env: NodeJS.ProcessEnv = cliEnv) {
  const r = spawnSync('/usr/bin/time', ['-v', ...cmd], { cwd: repoRoot, encoding: 'utf8', env, maxBuffer: 256 * 2 ** 20 });
  if (r.status !== 0) throw new Error(`${cmd.join(' ')} failed (${r.status}): ${r.stderr.slice(-1500)}`);
  return parseTimeV(r.stderr);
}

const cli = (...args: string[]) => [process.execPath, path.join(repoRoot, 'scripts', 'mathneuro.mjs'), ...args];

/** The second of two in-process runs of a CLI command (scripts/bench/in-process.ts); peak RSS of the process. */
function inProcess(args: string[]) {
  const r = spawnSync('/usr/bin/time', ['-v', process.execPath, '--import', 'tsx', path.join(repoRoot, 'scripts', 'bench', 'in-process.ts'), ...args], { cwd: repoRoot, encoding: 'utf8', maxBuffer: 256 * 2 ** 20 });
  if (r.status !== 0) throw new Error(`in-process ${args.join(' ')} failed (${r.status}): ${r.stderr.slice(-1500)}`);
  const last = JSON.parse(r.stdout.trim().split('\n').pop()!) as { second: number };
  return { wallSeconds: last.second, maxRssKiB: parseTimeV(r.stderr).maxRssKiB };
}

export async function benchPatch(argv: string[]) {
  const { values } = parseArgs({ args: argv, options: {
    model: { type: 'string' }, shape: { type: 'string', default: 'llama-1b' }, type: { type: 'string', default: 'mixed' },
    repeats: { type: 'string', default: '3' }, 'top-k': { type: 'string', default: '0.1' }, 'no-write': { type: 'boolean' },
  } });
  const m = machine();
  const model = values.model ?? await benchModel(values.shape as SynthShapeName, values.type as SynthTypeName);
  const size = statSync(model).size;
  const quantized = readGgufSync(model).tensors.some((t) => t.name.startsWith('blk.') && /^(Q|IQ)/i.test(t.typeName));
  const math = await syntheticStats(model, 1);
  const general = await syntheticStats(model, 2);
  const repeats = Number(values.repeats);
  const out = path.join(benchDir, 'bench-patched.gguf');
  const sel = path.join(benchDir, 'bench.mnsel');
  const kSweep = '0.0001,0.001,0.005,0.01,0.025,0.05,0.1,0.15';
  timed(['sh', '-c', `cat "${model}" > /dev/null`]); // warm the page cache
  // dist/ from the sources as they are now (npm run build:dist)
  const built = spawnSync(process.execPath, [path.join(repoRoot, 'scripts', 'build-dist.mjs')], { cwd: repoRoot, encoding: 'utf8' });
  if (built.status !== 0) throw new Error(`npm run build:dist failed: ${built.stderr.slice(-1500)}`);

  const series: Record<string, { wall: number[]; rss: number[] }> = {};
  const record = (label: string, t: { wallSeconds: number; maxRssKiB: number }) => {
    (series[label] ??= { wall: [], rss: [] }).wall.push(t.wallSeconds);
    series[label].rss.push(t.maxRssKiB);
    process.stderr.write(`${label}: ${t.wallSeconds.toFixed(2)} s, peak RSS ${(t.maxRssKiB / 1024).toFixed(0)} MiB\n`);
  };
  for (let i = 0; i < repeats; i++) {
    record('read once (cat > /dev/null)', timed(['sh', '-c', `cat "${model}" > /dev/null`]));
    record('cp + fsync of the copy', timed(['sh', '-c', `cp "${model}" "${out}" && sync "${out}"`])); rmSync(out, { force: true });
    record('node baseline (mathneuro inspect)', timed(cli('inspect', model, '--json')));
    record(`select, 1 K (${values['top-k']})`, timed(cli('select', model, '--math', math, '--general', general, '--top-k', values['top-k'], '-o', sel, '--force', '--quiet', '--json')));
    // the row above takes the model's sha256 from the hash memo (the model unchanged since an earlier
    // run hashed it); this one hashes it, as the first command on a model does
    record(`select, 1 K (${values['top-k']}), --rehash`, timed(cli('select', model, '--math', math, '--general', general, '--top-k', values['top-k'], '-o', sel, '--force', '--quiet', '--json', '--rehash')));
    record(`select, 1 K (${values['top-k']}), in-process (no node start-up)`, inProcess(['select', model, '--math', math, '--general', general, '--top-k', values['top-k'], '-o', sel, '--force', '--quiet', '--json']));
    record('select, 8 K', timed(cli('select', model, '--math', math, '--general', general, '--top-k', kSweep, '-o', sel, '--force', '--quiet', '--json')));
    record(`select + patch, new file (K ${values['top-k']}, x1.1)`, timed(cli('patch', model, '-o', out, '--math', math, '--general', general, '--top-k', values['top-k'], '--force', '--quiet', '--json')));
    rmSync(out, { force: true });
    record(`select + patch, new file (K ${values['top-k']}, x1.1), --rehash`, timed(cli('patch', model, '-o', out, '--math', math, '--general', general, '--top-k', values['top-k'], '--force', '--quiet', '--json', '--rehash')));
    rmSync(out, { force: true });
    record('patch from selection file, new file', timed(cli('patch', model, '-o', out, '--selection', sel, '--top-k', values['top-k'], '--force', '--quiet', '--json')));
    rmSync(out, { force: true });
    // the row above takes the model's sha256 from the selection file (its record of the file still
    // matches); this one reads and hashes the model, as a patch of a model not hashed before does
    record('patch from selection file, new file, --rehash', timed(cli('patch', model, '-o', out, '--selection', sel, '--top-k', values['top-k'], '--force', '--quiet', '--json', '--rehash')));
    rmSync(out, { force: true });
    record('patch from selection file, new file, in-process (no node start-up)', inProcess(['patch', model, '-o', out, '--selection', sel, '--top-k', values['top-k'], '--force', '--quiet', '--json']));
    rmSync(out, { force: true });
    if (quantized) {
      for (const s of ['keep-scale', 'best']) {
        record(`patch from selection file, new file, --requant ${s}`, timed(cli('patch', model, '-o', out, '--selection', sel, '--top-k', values['top-k'], '--force', '--quiet', '--json', '--requant', s)));
        rmSync(out, { force: true });
      }
    }
    // thread scaling: the same on one thread
    record(`select, 1 K (${values['top-k']}), 1 thread`, timed(cli('select', model, '--math', math, '--general', general, '--top-k', values['top-k'], '-o', `${sel}.1`, '--force', '--quiet', '--json', '--threads', '1')));
    rmSync(`${sel}.1`, { force: true });
    record('patch from selection file, new file, 1 thread', timed(cli('patch', model, '-o', out, '--selection', sel, '--top-k', values['top-k'], '--force', '--quiet', '--json', '--threads', '1')));
    rmSync(out, { force: true });
  }
  const med = Object.fromEntries(Object.entries(series).map(([k, v]) => [k, { wallSeconds: median(v.wall), maxRssMiB: median(v.rss) / 1024 }]));
  const cp = med['cp + fsync of the copy'].wallSeconds;
  const rows = Object.entries(med).map(([k, v]) => [k, v.wallSeconds.toFixed(2), (v.wallSeconds / cp).toFixed(2), v.maxRssMiB.toFixed(0)]);
  const info = readGgufSync(model);
  const largest = info.tensors.filter((t) => t.name.startsWith('blk.')).reduce((a, t) => (t.numel > a.numel ? t : a));
  const cmd = `npm run bench -- patch ${values.model ? `--model ${values.model}` : `--shape ${values.shape} --type ${values.type}`} --repeats ${repeats}`;
  const md = `## Selection and patching versus the I/O limit: ${path.basename(model)}

\`${cmd}\`

${machineLine(m)} Model: ${path.basename(model)} (${(size / 2 ** 30).toFixed(2)} GiB); synthetic statistics (speed does not depend on values); warm page cache; median of ${repeats}; peak RSS from /usr/bin/time -v; the CLI as the package runs it (compiled dist/, built by the bench; MATHNEURO_DIST=1). Goals: select (one K) <= 2 x read + 1 x cp; select + patch <= 3 x cp; patch from a selection file <= 1.5 x cp ("cp" is cp + fsync of the copy). Requantization: auto (the default) unless the row says otherwise. The model's sha256 (selection files, provenance) is taken from the hash memo or, for a patch from a selection file, from the selection (both record the unchanged model's device, inode, size and times) unless the row says --rehash, which hashes it as the first command on a model does.

${table(['operation', 'wall s', 'x cp', 'peak RSS MiB'], rows)}

Largest scored tensor: ${largest.name}, ${largest.numel.toLocaleString('en-US')} weights (${((largest.numel * 4) / 2 ** 20).toFixed(0)} MiB in f32).`;
  if (!values['no-write']) writeSection(`patch-${path.basename(model, '.gguf')}`, md, { machine: m, model: path.basename(model), sizeBytes: size, repeats, medians: med, series });
  process.stdout.write(md + '\n');
}
