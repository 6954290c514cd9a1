import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { MathneuroError } from '../errors.ts';
import { DEFAULT_BOOST_SCALE, DEFAULT_BOOST_TOP_K, type OverlapStudy } from '../pipeline.ts';
import { buildReport } from '../report/build-report.ts';
import { renderReportHtml } from '../report/index.ts';
import { SELECTION_METHODS, type SelectionMethod } from '../select/select.ts';
import { parseFraction } from './boost.ts';
import { checkOutput, checkReadable } from '../preflight.ts';
import { ProgressLine, globalHelp, hardwareHelp, hardwareOptions, runInterruptible, modelArgument, modelHelp, modelOption, parse, parseHardware, parseNumber, UsageError, writeJson, type Command } from './common.ts';

export const command: Command = {
  name: 'report',
  summary: 'a self-contained HTML report (SVG charts) of the selection: per layer and matrix kind, scores, realized scale, overlap',
  help: `usage: mathneuro report <model.gguf | ollama:name[:tag]> --math <stats> --general <stats> [-o report.html] [options]

Selects as boost does and writes one HTML file (inline SVG, no scripts, opens offline): selected
weights per layer and matrix kind (heatmap), the math and general score distributions, the
realized-scale table (from a temporary patched copy), and with --overlap the consistency figure.
The statistics files come from mathneuro stats, or from the cache paths boost prints (--json).

  --math F, --general F   statistics files
  -o, --output F    HTML file (default report.html)
  --top-k K         per-matrix fraction (default ${DEFAULT_BOOST_TOP_K})
  --method M        ${SELECTION_METHODS.join(' | ')} (default mathneuro)
  --scale C         scale of the realized-scale table (default ${DEFAULT_BOOST_SCALE}); --prune: zeroing
  --prune           realized values of zeroing instead
  --no-realized     no realized-scale table (it writes a temporary copy of the model)
  --overlap F       draw the consistency figure from this file (mathneuro overlap -o F, or its --json)
  --force           overwrite the output
${modelHelp}
${hardwareHelp}
                           (report runs no forward pass: -t is used by the realized-scale patch;
                           the others are checked and accepted, so one command line works everywhere)

${globalHelp.replace('print one JSON object on stdout (and nothing else there)', "print the report's numbers (and write no HTML unless -o is given)")}

examples:
  mathneuro report tiny.gguf --math math.stats.gguf --general general.stats.gguf -o tiny.report.html
  mathneuro report model.gguf --math m.stats.gguf --general g.stats.gguf --overlap overlap.json --top-k 15% --prune
  mathneuro report model.gguf --math m.stats.gguf --general g.stats.gguf --json > report.json`,
  async run(argv, io) {
    const { values, positionals } = parse(argv, {
      math: { type: 'string' }, general: { type: 'string' }, output: { type: 'string', short: 'o' }, 'top-k': { type: 'string' },
      method: { type: 'string' }, scale: { type: 'string' }, prune: { type: 'boolean' }, 'no-realized': { type: 'boolean' },
      overlap: { type: 'string' }, force: { type: 'boolean' }, ...hardwareOptions, ...modelOption,
    });
    const modelSpec = modelArgument(values, positionals, 'one model (a .gguf path or ollama:name[:tag])');
    if (!values.math || !values.general) throw new UsageError('--math and --general statistics files are required');
    const { math, general } = values;
    const method = (values.method ?? 'mathneuro') as SelectionMethod;
    if (!SELECTION_METHODS.includes(method)) throw new UsageError(`--method must be one of ${SELECTION_METHODS.join(', ')}`);
    const topK = parseFraction('top-k', values['top-k']);
    if (topK !== undefined && (topK <= 0 || topK > 0.5)) throw new UsageError(`--top-k must be in (0, 50%], got ${values['top-k']}`);
    if (values.prune && values.scale) throw new UsageError('--prune and --scale exclude each other');
    const scale = parseNumber('scale', values.scale, { min: 0 });
    const output = values.output ? path.resolve(values.output) : values.json ? undefined : path.resolve('report.html');
    const hw = parseHardware(values, io);
    checkReadable([values.math, values.general], 'statistics file');
    if (output) checkOutput(output, { inputs: [modelSpec, values.math, values.general], force: values.force, what: 'report', bytes: 1 << 20, env: io.env });
    let overlap: OverlapStudy | undefined;
    if (values.overlap) {
      if (!existsSync(values.overlap)) throw new MathneuroError('ENOENT', `no such overlap file: ${values.overlap}`);
      try { overlap = JSON.parse(readFileSync(values.overlap, 'utf8')); } catch (e) { throw new MathneuroError('EDATA', `${values.overlap}: not JSON (${(e as Error).message})`); }
      if (!overlap || !Array.isArray(overlap.points)) throw new MathneuroError('EDATA', `${values.overlap}: no "points" (expected the output of mathneuro overlap)`);
    }
    const progress = new ProgressLine(io, !!(values.quiet || values.json));
    const data = await runInterruptible(io, progress, 'removing the temporary copy', (signal) => buildReport({
      model: modelSpec, threads: hw.nThreads, signal, math, general, topK, method,
      realizedScale: values['no-realized'] ? false : values.prune ? 0 : scale, overlap, env: io.env,
      onProgress: (p) => progress.step(p.stage === 'select' ? 'selection' : 'realized scale', p.done, p.total),
    }));
    if (output) writeFileSync(output, renderReportHtml(data));
    if (values.json) writeJson(io, { ok: true, output: output ?? null, ...data });
    else if (!values.quiet) io.stdout.write(`wrote ${output}: ${data.selection.layers.length} layers x ${data.selection.kinds.length} matrix kinds, ${data.selection.selectedTotal} weights selected${data.realizedScale ? ', realized-scale table' : ''}${data.overlap ? ', overlap figure' : ''}\n`);
    return 0;
  },
};
