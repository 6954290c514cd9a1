import path from 'node:path';
import { REQUANTIZE_STRATEGIES, type RequantizeStrategy } from '../core/codec.ts';
import { SELECTION_METHODS, type SelectionMethod } from '../select/select.ts';
import { tuneTaskNames } from '../tune/tasks.ts';
import {
  DEFAULT_GENERAL_PROMPTS, DEFAULT_KL_BUDGET, DEFAULT_NLL_MARGIN, DEFAULT_OBJECTIVE_SAMPLES, DEFAULT_REFINE_ROUNDS, DEFAULT_TUNE_KL_TOKENS,
  TUNE_SCALES, TUNE_TOP_K, tune, type ScoredCandidate, type TuneProgress, type TuneResult,
} from '../tune/tune.ts';
import { calibrationChoices, calibrationOptions, parseFraction, stageNames } from './boost.ts';
import { ProgressLine, colors, globalHelp, hardwareHelp, modelArgument, modelCheckHelp, modelHelp, parse, parseHardware, parseNumber, pipelineProgress, runInterruptible, UsageError, writeJson, type Command, type CommandIO } from './common.ts';

const tuneStageNames: Record<TuneProgress['stage'], string> = {
  ...stageNames, 'tune-load': 'load', 'tune-heldout': 'held-out check', 'check-confirm': 'confirm',
};

const pct = (k: number) => `${+(k * 100).toPrecision(4)}%`;
const sci = (x: number) => (x === 0 ? '0' : Math.abs(x) < 1e-3 ? x.toExponential(2) : x.toFixed(5));

function list(name: string, value: string | undefined, parseOne: (v: string) => number | undefined): number[] | undefined {
  if (value === undefined) return undefined;
  const items = value.split(',').map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) throw new UsageError(`--${name} needs at least one value`);
  return items.map((v) => parseOne(v)!);
}

export const command: Command = {
  name: 'tune',
  summary: 'search K and scale for this model: a math objective under a KL budget on general text, then write the best',
  help: `usage: mathneuro tune <model.gguf | ollama:name[:tag]> [-o out.gguf] [options]

Picks boost's K and scale for this model: statistics once (boost's stage and cache), then each
candidate of a grid (K ${TUNE_TOP_K.map(pct).join(', ')} x scale ${TUNE_SCALES.join(', ')}) and of a
refinement around the best feasible point is written over the weights of the model loaded once in
memory and scored by forward passes only: the objective (mean NLL of the answer tokens of held-out
math problems given their question, teacher-forced) and, against the unpatched model, the mean KL
divergence and the NLL on general prompts. Feasible: KL <= --kl-budget and general NLL at most
--nll-margin above the unpatched model's. The feasible point with the lowest objective is written
(boost's patch, a new GGUF) when it beats the unpatched model; otherwise nothing is written (exit 1).
Scored candidates are cached beside the statistics: a repeated or interrupted run scores none again.

  -o, --output F        output GGUF (default <model>.tuned.gguf)
  --kl-budget X         mean KL per general token, nats (default ${DEFAULT_KL_BUDGET}; provisional)
  --nll-margin X        general NLL may rise this much, nats/token (default ${DEFAULT_NLL_MARGIN}; provisional)
  --task T              objective and prompts: ${tuneTaskNames().join(' | ')} (default gsm8k: worked
                        solutions of GSM8K train items the calibration does not use; general prompts
                        from the built-in passages)
  --objective-data F    objective samples from a JSON-lines file: {"prompt","answer"} or {"question","answer"}
  --objective-samples N objective samples of the search, and as many held out (default ${DEFAULT_OBJECTIVE_SAMPLES})
  --general-prompts N   general prompts of the search, and as many held out (default ${DEFAULT_GENERAL_PROMPTS})
  --kl-tokens N         tokens per general prompt (default ${DEFAULT_TUNE_KL_TOKENS})
  --top-k LIST          the grid's K, e.g. 0.5%,1%,5% (default ${TUNE_TOP_K.map(pct).join(',')})
  --scales LIST         the grid's scales (default ${TUNE_SCALES.join(',')})
  --refine N            refinement rounds around the best feasible point (default ${DEFAULT_REFINE_ROUNDS})
  --method M            ${SELECTION_METHODS.join(' | ')} (default mathneuro)
  --confirm N           check the written model: generation accuracy on N held-out problems against
                        the unpatched model, with McNemar's p
  --dry-run             search only, write nothing
  --samples N, --seed S, --math F, --general F, --exclude-math-subjects, --cache-dir D, --no-cache
                        the statistics, as boost has them (the task picks the calibration sets by default)
  --requant S           auto (default) | best | plain | keep-scale, as boost
  --force               overwrite the output
${modelHelp}
${modelCheckHelp}
${hardwareHelp}

${globalHelp}

The model is loaded once without mmap (its weights in RAM, written in place per candidate) and the
unpatched model's distributions on the general prompts are kept: prompts x tokens x vocabulary
float32, at most 512 MiB (longer prompts are cut to fit, e.g. 8 x 128 tokens of a 128k vocabulary).

examples:
  mathneuro tune model.gguf -o model.tuned.gguf
  mathneuro tune model.gguf --kl-budget 0.005 --confirm 50 --json
  mathneuro tune test/fixtures/arith/model.gguf --task arith-fixture --dry-run`,
  async run(argv, io) {
    const { values, positionals } = parse(argv, {
      output: { type: 'string', short: 'o' }, 'kl-budget': { type: 'string' }, 'nll-margin': { type: 'string' }, task: { type: 'string' },
      'objective-data': { type: 'string' }, 'objective-samples': { type: 'string' }, 'general-prompts': { type: 'string' }, 'kl-tokens': { type: 'string' },
      'top-k': { type: 'string' }, scales: { type: 'string' }, refine: { type: 'string' }, method: { type: 'string' }, confirm: { type: 'string' },
      'dry-run': { type: 'boolean' }, requant: { type: 'string' }, force: { type: 'boolean' },
      ...calibrationOptions,
    });
    const v = values as Record<string, string | boolean | undefined>;
    const modelSpec = modelArgument(v as { model?: string }, positionals, 'one model (a .gguf path or ollama:name[:tag])');
    const method = (v.method as string | undefined ?? 'mathneuro') as SelectionMethod;
    if (!SELECTION_METHODS.includes(method)) throw new UsageError(`--method must be one of ${SELECTION_METHODS.join(', ')}`);
    const klBudget = parseNumber('kl-budget', v['kl-budget'] as string | undefined);
    if (klBudget !== undefined && !(klBudget > 0)) throw new UsageError(`--kl-budget must be a positive number of nats per token, got ${v['kl-budget']}`);
    const nllMargin = parseNumber('nll-margin', v['nll-margin'] as string | undefined, { min: 0 });
    const task = v.task as string | undefined;
    if (task !== undefined && !tuneTaskNames().includes(task)) throw new UsageError(`--task must be one of ${tuneTaskNames().join(', ')}`);
    const topK = list('top-k', v['top-k'] as string | undefined, (x) => parseFraction('top-k', x));
    const scales = list('scales', v.scales as string | undefined, (x) => parseNumber('scales', x, { min: 0 }));
    if (scales?.some((s) => s <= 0)) throw new UsageError('--scales must be positive factors');
    const strategy = (v.requant as string | undefined ?? 'auto') as RequantizeStrategy;
    if (!REQUANTIZE_STRATEGIES.includes(strategy)) throw new UsageError(`--requant must be ${REQUANTIZE_STRATEGIES.join(', ')}, got "${v.requant}"`);
    const int = (name: string, min: number) => parseNumber(name, v[name] as string | undefined, { integer: true, min });
    const hw = parseHardware(v, io);
    const quiet = !!(v.quiet || v.json);
    const progress = new ProgressLine(io, quiet);
    const c = colors(io.stderr, io.env);
    const result: TuneResult = await runInterruptible(io, progress, 'stopping after the current candidate (scored ones stay cached)', (signal) => tune({
        model: modelSpec, out: v.output as string | undefined, task, objectiveFile: v['objective-data'] as string | undefined, method,
        klBudget, nllMargin, topK, scales, refine: int('refine', 0), objectiveSamples: int('objective-samples', 1), generalPrompts: int('general-prompts', 1),
        klTokens: int('kl-tokens', 2), confirm: int('confirm', 1), write: !v['dry-run'], force: !!v.force, strategy,
        samples: int('samples', 1), seed: int('seed', 0),
        ...(v.math || v.general ? calibrationChoices(v as never) : {}),
        cacheDir: v['cache-dir'] as string | undefined, cache: !v['no-cache'],
        skipUnencodable: !!v['skip-unencodable'], modelChecks: !v['no-model-checks'],
        nCtx: hw.nCtx, nThreads: hw.nThreads, nBatch: hw.nBatch, nGpuLayers: hw.nGpuLayers, env: io.env, signal,
        onProgress: pipelineProgress(progress, tuneStageNames),
        // one line per candidate on stderr (the progress line is redrawn under it on a terminal)
        onCandidate: (x, i, total) => {
          if (quiet) return;
          io.stderr.write(`${io.stderr.isTTY ? '\r\x1b[2K' : ''}${candidateLine(x, i, total, c)}\n`);
        },
      }));
    if (v.json) writeJson(io, { ok: !!result.chosen, ...result });
    else if (!v.quiet) printSummary(io, result);
    if (!result.chosen && !v.json) io.stderr.write(`mathneuro tune: nothing written: ${result.reason}\n`);
    return result.chosen ? 0 : 1;
  },
};

function candidateLine(x: ScoredCandidate, i: number, total: number, c: ReturnType<typeof colors>): string {
  const mark = x.feasible ? c.green('ok') : c.yellow('--');
  const cost = x.cached ? 'cached' : `${(x.patchMs + x.measureMs).toFixed(0)} ms`;
  return `${x.phase.padEnd(6)} ${String(i + 1).padStart(2)}/${total}  K=${pct(x.topK).padEnd(8)} x${String(x.scale).padEnd(7)} objective ${x.objective.toFixed(5)}  KL ${sci(x.kl).padEnd(9)} general NLL ${x.generalNll.toFixed(5)}  ${mark}  ${cost}`;
}

/** The Pareto table (objective vs KL) as markdown-ish rows. */
export function paretoTable(r: TuneResult): string[] {
  const rows = [`  ${'K'.padEnd(9)}${'scale'.padEnd(9)}${'objective'.padEnd(12)}${'KL'.padEnd(11)}${'general NLL'.padEnd(13)}weights     feasible`];
  for (const p of r.pareto) {
    const mark = p === r.chosen ? ' <- chosen' : '';
    rows.push(`  ${pct(p.topK).padEnd(9)}${String(p.scale).padEnd(9)}${p.objective.toFixed(5).padEnd(12)}${sci(p.kl).padEnd(11)}${p.generalNll.toFixed(5).padEnd(13)}${String(p.selectedWeights).padEnd(12)}${p.feasible ? 'yes' : 'no'}${mark}`);
  }
  return rows;
}

function printSummary(io: CommandIO, r: TuneResult) {
  const c = colors(io.stdout, io.env);
  const lines = [
    `${c.bold('tune')} ${r.model.spec}  (${r.method}; ${r.candidates.length} candidates, ${r.cache.scored} scored, ${r.cache.hits} from the cache)`,
    `  objective      ${r.objective}`,
    `  budget         KL <= ${r.budget.kl} nats/token, general NLL <= unpatched + ${r.budget.nllMargin}`,
    `  unpatched      objective ${r.baseline.objective.toFixed(5)} over ${r.baseline.objectiveTokens} answer tokens; general NLL ${r.baseline.generalNll.toFixed(5)} over ${r.baseline.generalTokens} tokens`,
    `  Pareto front (objective vs KL):`,
    ...paretoTable(r),
  ];
  if (r.chosen) {
    lines.push(`  chosen         K=${pct(r.chosen.topK)} x${r.chosen.scale}: objective ${r.chosen.objective.toFixed(5)} (unpatched ${r.baseline.objective.toFixed(5)}), KL ${sci(r.chosen.kl)}`);
    if (r.heldOut) lines.push(`  held out       objective ${r.heldOut.chosen.objective.toFixed(5)} (unpatched ${r.heldOut.baseline.objective.toFixed(5)}), KL ${sci(r.heldOut.chosen.kl)}, general NLL ${r.heldOut.chosen.generalNll.toFixed(5)} (unpatched ${r.heldOut.baseline.generalNll.toFixed(5)})${r.heldOut.feasible ? '' : c.yellow('  over the budget on held-out prompts')}`);
  }
  if (r.confirm) lines.push(`  confirm        ${(100 * r.confirm.source).toFixed(1)}% -> ${(100 * r.confirm.patched).toFixed(1)}% (${r.confirm.what}; McNemar p=${r.confirm.pValue.toFixed(3)})`);
  if (Number.isFinite(r.timing.ratio)) lines.push(`  cost           ${r.timing.candidateMs.toFixed(0)} ms per candidate (patch ${r.timing.patchMs.toFixed(0)} ms) vs ${r.timing.forwardMs.toFixed(0)} ms unpatched: x${r.timing.ratio.toFixed(2)}`);
  if (r.output) {
    const cal = (which: 'math' | 'general') => { const x = r.calibration[which]; return 'file' in x ? ` --${which} ${x.file}` : ''; };
    lines.push(`${c.green('wrote')} ${r.output}   (as: mathneuro boost ${path.basename(r.model.path)} --top-k ${r.chosen!.topK} --scale ${r.chosen!.scale}${r.method !== 'mathneuro' ? ` --method ${r.method}` : ''}${r.statistics.math.samples !== 100 ? ` --samples ${r.statistics.math.samples}` : ''}${cal('math')}${cal('general')})`);
  }
  io.stdout.write(lines.join('\n') + '\n');
}
