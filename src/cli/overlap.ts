import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { DEFAULT_BOOST_TOP_K, overlapStudy, type PipelineStage } from '../pipeline.ts';
import { SELECTION_METHODS, type SelectionMethod } from '../select/select.ts';
import { calibrationChoices, calibrationOptions, parseFraction } from './boost.ts';
import { checkOutput } from '../preflight.ts';
import { ProgressLine, globalHelp, hardwareHelp, runInterruptible, modelArgument, modelCheckHelp, modelHelp, parse, parseHardware, parseNumber, UsageError, writeJson, type Command } from './common.ts';

export const command: Command = {
  name: 'overlap',
  summary: 'consistency of the identification: selections from disjoint calibration subsets (1, 10, 100 samples) and their overlap',
  help: `usage: mathneuro overlap <model.gguf | ollama:name[:tag]> [--sizes 1,10,100] [--subsets 2] [-o overlap.json] [options]

For each size n, collects statistics on --subsets disjoint calibration subsets of n samples (math
and general; no sample is in two subsets), selects from each, and measures the overlap of the
selected sets: |A & B| / mean(|A|, |B|), per pair. This is the paper's consistency measurement.
Subset statistics are cached like boost's. The output file feeds mathneuro report --overlap.

  --sizes LIST      samples per subset (default 1,10,100)
  --subsets N       disjoint subsets per size (default 2; pairs = N(N-1)/2)
  --top-k K         per-matrix fraction (default ${DEFAULT_BOOST_TOP_K})
  --method M        ${SELECTION_METHODS.join(' | ')} (default mathneuro)
  --math F, --general F   calibration files instead of the built-in sets
  --exclude-math-subjects, --seed S, --cache-dir D, --no-cache   as in boost
  -o, --output F    write the result as JSON (for mathneuro report --overlap)
  --force           overwrite the output
${modelHelp}
${modelCheckHelp}
${hardwareHelp}

${globalHelp}

examples:
  mathneuro overlap tiny.gguf --sizes 1,10 --subsets 3 -o overlap.json
  mathneuro overlap model.gguf --top-k 15% --json`,
  async run(argv, io) {
    const { values, positionals } = parse(argv, {
      sizes: { type: 'string' }, subsets: { type: 'string' }, 'top-k': { type: 'string' }, method: { type: 'string' },
      output: { type: 'string', short: 'o' }, force: { type: 'boolean' }, ...calibrationOptions,
    });
    const v = values as Record<string, string | boolean | undefined>;
    const modelSpec = modelArgument(v as { model?: string }, positionals, 'one model (a .gguf path or ollama:name[:tag])');
    const sizes = v.sizes === undefined ? undefined : String(v.sizes).split(',').map((x) => parseNumber('sizes', x.trim(), { integer: true, min: 1 })!);
    const subsets = parseNumber('subsets', v.subsets as string | undefined, { integer: true, min: 2 });
    const topK = parseFraction('top-k', v['top-k'] as string | undefined);
    if (topK !== undefined && (topK <= 0 || topK > 0.5)) throw new UsageError(`--top-k must be in (0, 50%], got ${v['top-k']}`);
    const method = (v.method as string | undefined ?? 'mathneuro') as SelectionMethod;
    if (!SELECTION_METHODS.includes(method)) throw new UsageError(`--method must be one of ${SELECTION_METHODS.join(', ')}`);
    const output = v.output ? path.resolve(String(v.output)) : undefined;
    if (output) checkOutput(output, { inputs: [modelSpec], force: !!v.force, bytes: 1 << 20, env: io.env });
    const hw = parseHardware(v, io);
    const progress = new ProgressLine(io, !!(v.quiet || v.json));
    const names: Partial<Record<PipelineStage, string>> = { 'stats-math': 'math stats', 'stats-general': 'general stats' };
    const study = await runInterruptible(io, progress, 'removing the temporary files', (signal) => overlapStudy({
      model: modelSpec, signal, sizes, subsets, topK, method, ...calibrationChoices(v as never),
      seed: parseNumber('seed', v.seed as string | undefined, { integer: true, min: 0 }),
      cacheDir: v['cache-dir'] as string | undefined, cache: !v['no-cache'],
      skipUnencodable: !!v['skip-unencodable'], modelChecks: !v['no-model-checks'],
      nCtx: hw.nCtx, nThreads: hw.nThreads, nBatch: hw.nBatch, nGpuLayers: hw.nGpuLayers, env: io.env,
      onProgress: (p) => progress.step(names[p.stage] ?? p.stage, p.done, p.total, p.detail ?? ''),
    }));
    if (output) writeFileSync(output, JSON.stringify(study, null, 2) + '\n');
    if (v.json) writeJson(io, { ok: true, output: output ?? null, ...study });
    else if (!v.quiet) {
      const lines = [`overlap of ${study.method} selections (K=${study.topK}) between disjoint calibration subsets:`, '  samples  pairs  selected  overlap (min-max)   Jaccard'];
      for (const p of study.points) lines.push(`  ${String(p.samples).padStart(7)}  ${String(p.pairs.length).padStart(5)}  ${String(Math.round(p.meanSelected)).padStart(8)}  ${(100 * p.meanOverlap).toFixed(1).padStart(5)}% (${(100 * p.minOverlap).toFixed(1)}-${(100 * p.maxOverlap).toFixed(1)}%)  ${(100 * p.meanJaccard).toFixed(1)}%`);
      if (output) lines.push(`wrote ${output}`);
      io.stdout.write(lines.join('\n') + '\n');
    }
    return 0;
  },
};
