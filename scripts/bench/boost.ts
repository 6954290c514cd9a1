// End to end: `mathneuro boost` with one math and one general calibration sample (the paper's
// single-sample mode) on a generated model, cold statistics cache; wall time and where it goes
// (from the pipeline's stage progress), with and without the KL check.
//   npm run bench -- boost [--model M.gguf | --shape llama-1b --type mixed] [--repeats 3] [--requant auto|best|plain|keep-scale] [--skip-check]
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { boost } from '../../src/pipeline.ts';
import type { RequantizeStrategy } from '../../src/core/codec.ts';
import type { SynthShapeName, SynthTypeName } from '../../src/synth.ts';
import { benchDir, benchModel, machine, machineLine, median, table, writeSection } from './common.ts';

export async function benchBoost(argv: string[]) {
  const { values } = parseArgs({ args: argv, options: {
    model: { type: 'string' }, shape: { type: 'string', default: 'llama-1b' }, type: { type: 'string', default: 'mixed' },
    repeats: { type: 'string', default: '3' }, 'no-write': { type: 'boolean' }, requant: { type: 'string', default: 'auto' }, 'skip-check': { type: 'boolean' },
  } });
  const strategy = values.requant as RequantizeStrategy;
  if (!['auto', 'best', 'plain', 'keep-scale'].includes(strategy)) throw new Error('--requant must be auto, best, plain or keep-scale');
  const m = machine();
  const model = values.model ?? await benchModel(values.shape as SynthShapeName, values.type as SynthTypeName);
  const repeats = Number(values.repeats);
  const out = path.join(benchDir, 'bench-boosted.gguf');
  const runs: { check: boolean; totalMs: number; stages: Record<string, number> }[] = [];
  const checks = values['skip-check'] ? [false] : [false, true];
  for (const check of checks) {
    for (let i = 0; i < repeats; i++) {
      const cacheDir = mkdtempSync(path.join(os.tmpdir(), 'mathneuro-bench-cache-'));
      const stages: Record<string, number> = {};
      let current = 'start';
      let since = Date.now();
      const t0 = since;
      try {
        await boost({
          model, out, samples: 1, force: true, cacheDir, check: check ? {} : false, strategy,
          onProgress: (p) => {
            // the patch stage split: selection, then writing (copy, patch, and the wait for the source's hash)
            const key = p.stage === 'patch' ? (p.detail === 'select' ? 'select' : 'write') : p.stage;
            if (key !== current) { const now = Date.now(); stages[current] = (stages[current] ?? 0) + now - since; current = key; since = now; }
          },
        });
      } finally { rmSync(cacheDir, { recursive: true, force: true }); }
      const end = Date.now();
      stages[current] = (stages[current] ?? 0) + end - since;
      runs.push({ check, totalMs: end - t0, stages });
      process.stderr.write(`boost${check ? ' + KL check' : ''}: ${((end - t0) / 1000).toFixed(1)} s ${JSON.stringify(stages)}\n`);
    }
  }
  rmSync(out, { force: true });
  const stageNames = ['start', 'resolve', 'stats-math', 'stats-general', 'select', 'write', 'check-kl'];
  const rows = checks.map((check) => {
    const rs = runs.filter((r) => r.check === check);
    return [check ? 'boost (default: with KL check)' : 'boost --no-check', (median(rs.map((r) => r.totalMs)) / 1000).toFixed(1),
      ...stageNames.map((s) => (median(rs.map((r) => r.stages[s] ?? 0)) / 1000).toFixed(1))];
  });
  const cmd = `npm run bench -- boost ${values.model ? `--model ${values.model}` : `--shape ${values.shape} --type ${values.type}`} --repeats ${repeats}${strategy === 'auto' ? '' : ` --requant ${strategy}`}${values['skip-check'] ? ' --skip-check' : ''}`;
  const md = `## End to end: boost with one math and one general sample${strategy === 'auto' ? '' : ` (--requant ${strategy})`}

\`${cmd}\`

${machineLine(m)} Model: ${path.basename(model)}; built-in calibration sets, 1 sample each, cold statistics cache, in-process API (what \`mathneuro boost --samples 1${strategy === 'auto' ? '' : ` --requant ${strategy}`}\` runs, without the CLI's ~1 s start-up); requantization of touched blocks: ${strategy}; median of ${repeats}. Seconds per stage: "start" is validation and fingerprinting before the first stage event, "stats-*" include loading the model, "select" and "write" are the patch stage (selection; the kernel copy, patching the touched blocks and the source's sha256). Goal: under 30 s on 2 cores.

${table(['run', 'total s', ...stageNames], rows)}`;
  if (!values['no-write']) writeSection(`boost-${path.basename(model, '.gguf')}${strategy === 'auto' ? '' : `-${strategy}`}`, md, { machine: m, model: path.basename(model), strategy, repeats, runs });
  process.stdout.write(md + '\n');
}
