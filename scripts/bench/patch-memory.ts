// Peak memory of patching a ~1 GB generated model (qwen-0.5b shape, F16 by default), measured with
// GNU /usr/bin/time -v around the CLI, against the bound: the largest tensor in f32 x 3 plus the
// process baseline (the same CLI inspecting the model). Usage:
//   npx tsx scripts/bench/patch-memory.ts [--shape qwen-0.5b] [--type f16] [--top-k 0.01] [--no-write]
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, rmSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { readGgufSync } from '../../src/gguf/reader.ts';
import type { SynthShapeName, SynthTypeName } from '../../src/synth.ts';
import { modelIdentity, saveStats, type WeightStats } from '../../src/stats/index.ts';
import { benchDir, benchModel, machine, machineLine, parseTimeV, repoRoot, table, writeSection } from './common.ts';

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: 'qwen-0.5b' }, type: { type: 'string', default: 'f16' },
    'top-k': { type: 'string', default: '0.01' }, 'no-write': { type: 'boolean', default: false },
  },
});
const m = machine();
const model = await benchModel(values.shape as SynthShapeName, values.type as SynthTypeName);
const info = readGgufSync(model);

async function statsFile(seed: number): Promise<string> {
  const file = path.join(benchDir, `${path.basename(model, '.gguf')}.synthetic-${seed}.stats.gguf`);
  if (existsSync(file)) return file;
  let s = seed;
  const r = () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32; };
  const weights = new Map<string, WeightStats>();
  for (const t of info.tensors) {
    if (!t.name.startsWith('blk.') || t.shape.length < 2) continue;
    const nIn = t.shape[0], nMat = t.shape[2] ?? 1;
    weights.set(t.name, { name: t.name, nIn, nMat, normSum: new Float64Array(nIn * nMat).map(() => 0.1 + r() * 5), sum2: new Float64Array(nIn * nMat).map(() => 0.01 + r() * 3), counts: new Float64Array(nMat).fill(100) });
  }
  await saveStats({ model: modelIdentity(info), samples: 1, tokens: 100, datasets: [`synthetic-${seed}`], weights }, file);
  return file;
}
const math = await statsFile(1), general = await statsFile(2);

function measure(label: string, args: string[]) {
  const r = spawnSync('/usr/bin/time', ['-v', process.execPath, path.join(repoRoot, 'scripts', 'mathneuro.mjs'), ...args], { cwd: repoRoot, encoding: 'utf8', env: process.env });
  if (r.status !== 0) throw new Error(`${label} failed (${r.status}): ${r.stderr.slice(-2000)}`);
  const t = parseTimeV(r.stderr);
  process.stderr.write(`${label}: peak RSS ${(t.maxRssKiB / 1024).toFixed(0)} MiB, ${t.wallSeconds.toFixed(1)} s\n`);
  return t;
}

const out = path.join(benchDir, 'patched.gguf');
const copy = path.join(benchDir, 'inplace.gguf');
const baseline = measure('baseline (inspect)', ['inspect', model, '--json']);
const newFile = measure('patch, new file', ['patch', model, '-o', out, '--math', math, '--general', general, '--top-k', values['top-k'], '--quiet', '--force']);
rmSync(out, { force: true });
copyFileSync(model, copy);
rmSync(`${copy}.mathneuro-undo`, { force: true });
const inPlace = measure('patch, in place', ['patch', copy, '--in-place', '--math', math, '--general', general, '--top-k', values['top-k'], '--quiet']);
const unpatch = measure('unpatch', ['unpatch', copy, '--quiet']);
rmSync(copy, { force: true });

const largest = info.tensors.reduce((a, t) => (t.numel > a.numel ? t : a));
const boundKiB = (largest.numel * 4 * 3) / 1024 + baseline.maxRssKiB;
const rows = [['new file', newFile], ['in place', inPlace], ['unpatch', unpatch]].map(([name, t]) => {
  const x = t as ReturnType<typeof parseTimeV>;
  return [name as string, Math.round(x.maxRssKiB / 1024), Math.round((x.maxRssKiB - baseline.maxRssKiB) / 1024), Math.round(boundKiB / 1024), x.maxRssKiB <= boundKiB ? 'yes' : 'NO', x.wallSeconds];
});
const md = [
  `### Patching memory (${values.shape} ${values.type}, ${(info.fileSize / 2 ** 30).toFixed(2)} GiB, K=${values['top-k']})`,
  '',
  '`npx tsx scripts/bench/patch-memory.ts` ' + `(peak RSS by /usr/bin/time -v; baseline = \`mathneuro inspect\` of the same model: ${Math.round(baseline.maxRssKiB / 1024)} MiB; largest tensor ${largest.name}, ${largest.shape.join('x')}, x3 in f32 = ${Math.round(largest.numel * 12 / 2 ** 20)} MiB)`,
  '',
  table(['run', 'peak RSS MiB', 'above baseline MiB', 'bound MiB', 'within bound', 'wall s'], rows),
  '',
  machineLine(m),
].join('\n');
process.stdout.write(md + '\n');
if (!values['no-write']) writeSection('patch-memory', md, { machine: m, model: path.basename(model), fileSize: info.fileSize, baseline, newFile, inPlace, unpatch, boundKiB, largest: { name: largest.name, shape: largest.shape } });
