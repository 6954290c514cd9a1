import { REQUANTIZE_STRATEGIES, type RequantizeStrategy } from '../core/codec.ts';
import path from 'node:path';
import { DEFAULT_ABLATE_TOP_K, DEFAULT_BOOST_SCALE, DEFAULT_BOOST_TOP_K, DEFAULT_KL_PROMPTS, DEFAULT_SAMPLES, boost, type BoostResult, type CalibrationChoice, type Intervention, type PipelineStage } from '../pipeline.ts';
import { SELECTION_METHODS, type SelectionMethod } from '../select/select.ts';
import { openModelSync } from '../gguf/model.ts';
import { emptySelectionWarning, minimumTopK } from './select.ts';
import { ProgressLine, colors, globalHelp, hardwareHelp, hardwareOptions, modelArgument, modelCheckHelp, modelCheckOptions, modelHelp, modelOption, parse, parseHardware, parseNumber, pipelineProgress, runInterruptible, UsageError, writeJson, type Command, type CommandIO } from './common.ts';

/** "10%" or "0.1" -> 0.1 */
export function parseFraction(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const percent = value.trim().endsWith('%');
  const n = parseNumber(name, percent ? value.trim().slice(0, -1) : value, { min: 0 });
  return percent ? n! / 100 : n;
}

export const stageNames: Record<PipelineStage, string> = {
  resolve: 'model', 'stats-math': 'math stats', 'stats-general': 'general stats', patch: 'patch', 'check-kl': 'check: KL', 'check-gsm8k': 'check: GSM8K', modelfile: 'Modelfile',
};

export const calibrationOptions = {
  math: { type: 'string' }, general: { type: 'string' }, samples: { type: 'string' }, seed: { type: 'string' },
  'exclude-math-subjects': { type: 'boolean' }, 'cache-dir': { type: 'string' }, 'no-cache': { type: 'boolean' },
  ...hardwareOptions, ...modelOption, ...modelCheckOptions,
} as const;

export function calibrationChoices(values: { math?: string; general?: string; 'exclude-math-subjects'?: boolean }): { math: CalibrationChoice; general: CalibrationChoice } {
  return {
    math: values.math ? { file: values.math } : { builtin: 'math' },
    general: values.general ? { file: values.general, excludeMathSubjects: values['exclude-math-subjects'] } : { builtin: 'general' },
  };
}

function makeCommand(name: 'boost' | 'ablate', intervention: Intervention): Command {
  const isBoost = intervention === 'scale';
  const defaultK = isBoost ? DEFAULT_BOOST_TOP_K : DEFAULT_ABLATE_TOP_K;
  const suffix = isBoost ? 'boosted' : 'ablated';
  return {
    name,
    summary: isBoost
      ? 'scale the math-specific weights (x1.1): statistics, selection, patch and a check in one command'
      : 'zero the math-specific weights (the model loses math, keeps the rest): one command',
    help: `usage: mathneuro ${name} <model.gguf | ollama:name[:tag]> [-o out.gguf] [options]

Collects statistics on math and general calibration text (built-in sets unless --math/--general
give files; cached per model, so another K${isBoost ? ' or scale' : ''} does no forward pass), selects the
weights in each matrix's math top-K but not in its general top-K (MathNeuro), ${isBoost ? 'multiplies them by\nthe scale' : 'sets them to zero'}, writes a new GGUF (tokenizer and chat template metadata kept) and checks it against
the source: KL divergence on general text, and GSM8K-style accuracy with --gsm8k N.${isBoost ? `
The defaults are the paper's setting; \`mathneuro tune\` searches K and scale for one model (a
math objective under a KL budget on general text) and writes the best the same way.` : ''}

  -o, --output F    output GGUF (default <model>.${suffix}.gguf; for ollama:, ./<name>-<tag>.${suffix}.gguf)
  --top-k K         per-matrix fraction, e.g. 0.1 or 10% (default ${defaultK})
${isBoost ? `  --scale C         factor of the selected weights (default ${DEFAULT_BOOST_SCALE})\n` : ''}  --samples N       calibration samples per set (default ${DEFAULT_SAMPLES})
  --seed S          seed of the built-in sets and of draws from files (default 0)
  --math F          math calibration file (.jsonl GSM8K/MATH, .txt, .csv) instead of the built-in set
  --general F       general calibration file or MMLU folder instead of the built-in set
  --exclude-math-subjects   with an MMLU --general folder: leave out its math subjects
  --method M        ${SELECTION_METHODS.join(' | ')} (default mathneuro)
  --no-check        skip the before/after check
  --kl-prompts N    prompts of the KL check (default ${DEFAULT_KL_PROMPTS})
  --gsm8k N         also compare accuracy on N built-in word problems (generation: slow on big models)
  --gsm8k-data F    GSM8K-format test file for --gsm8k instead of the built-in problems
  --modelfile       write an Ollama Modelfile next to the output (template, parameters, system prompt kept)
  --cache-dir D     statistics cache (default $MATHNEURO_CACHE_DIR/stats or ~/.cache/mathneuro/stats)
  --no-cache        collect again and do not write the cache; the model is hashed again too (no
                    hash memo: see mathneuro select --help)
  --requant S       quantized blocks holding selected weights: auto (default: keep-scale, and
                    where a selected weight sits at its block's largest code the sub-block scale
                    raised; ggml only where neither can) | best (the closest of ggml's plain and
                    importance-weighted requantization and keep-scale; as costly as requantizing
                    them) | plain | keep-scale (only the selected weights' codes move; the fastest)
  --force           overwrite the output
  --strict          exit 1 when the selection is empty (the patch would change nothing)
${modelHelp}
${modelCheckHelp}
${hardwareHelp}
                           (-c: the statistics' context, default min(train ctx, 4096))

${globalHelp}

examples:
  mathneuro ${name} tiny.gguf -o tiny.${suffix}.gguf
  mathneuro ${name} model.gguf ${isBoost ? '--top-k 5% --scale 1.05' : '--top-k 15%'} --gsm8k 20
  mathneuro ${name} ollama:llama3.2:1b --modelfile     # then: ollama create llama3.2-${suffix} -f llama3.2-1b.${suffix}.Modelfile
  mathneuro ${name} model.gguf --math ../shared/data/gsm8k_train.jsonl --general ../shared/data/mmlu/test --exclude-math-subjects --json`,
    async run(argv, io) {
      const { values, positionals } = parse(argv, {
        output: { type: 'string', short: 'o' }, 'top-k': { type: 'string' }, ...(isBoost ? { scale: { type: 'string' } } : {}),
        method: { type: 'string' }, 'no-check': { type: 'boolean' }, 'kl-prompts': { type: 'string' }, gsm8k: { type: 'string' },
        'gsm8k-data': { type: 'string' }, modelfile: { type: 'boolean' }, force: { type: 'boolean' }, requant: { type: 'string' }, strict: { type: 'boolean' },
        ...calibrationOptions,
      });
      const v = values as Record<string, string | boolean | undefined>;
      const modelSpec = modelArgument(v as { model?: string }, positionals, 'one model (a .gguf path or ollama:name[:tag])');
      const method = (v.method as string | undefined ?? 'mathneuro') as SelectionMethod;
      if (!SELECTION_METHODS.includes(method)) throw new UsageError(`--method must be one of ${SELECTION_METHODS.join(', ')}`);
      const topK = parseFraction('top-k', v['top-k'] as string | undefined);
      if (topK !== undefined && (topK <= 0 || topK > 0.5)) throw new UsageError(`--top-k must be in (0, 50%], got ${v['top-k']}`);
      const scale = parseNumber('scale', v.scale as string | undefined, { min: 0 });
      if (scale !== undefined && scale <= 0) throw new UsageError('--scale must be positive (ablate zeroes weights)');
      const gsm8k = parseNumber('gsm8k', v.gsm8k as string | undefined, { integer: true, min: 0 });
      const klPrompts = parseNumber('kl-prompts', v['kl-prompts'] as string | undefined, { integer: true, min: 1 });
      const strategy = (v.requant as string | undefined ?? 'auto') as RequantizeStrategy;
      if (!REQUANTIZE_STRATEGIES.includes(strategy)) throw new UsageError(`--requant must be ${REQUANTIZE_STRATEGIES.join(', ')}, got "${v.requant}"`);
      const quiet = !!(v.quiet || v.json);
      const hw = parseHardware(v, io);
      const result = await runPipeline(io, quiet, {
        model: modelSpec, out: v.output as string | undefined, intervention, topK, scale, method,
        samples: parseNumber('samples', v.samples as string | undefined, { integer: true, min: 1 }),
        seed: parseNumber('seed', v.seed as string | undefined, { integer: true, min: 0 }),
        ...calibrationChoices(v as never),
        check: v['no-check'] ? false : { kl: true, klPrompts, gsm8k, gsm8kData: v['gsm8k-data'] as string | undefined },
        modelfile: !!v.modelfile, force: !!v.force, strategy,
        cacheDir: v['cache-dir'] as string | undefined, cache: !v['no-cache'],
        skipUnencodable: !!v['skip-unencodable'], modelChecks: !v['no-model-checks'],
        nCtx: hw.nCtx, nThreads: hw.nThreads, nBatch: hw.nBatch, nGpuLayers: hw.nGpuLayers,
        env: io.env,
      });
      const empty = result.patch.selectedWeights === 0 ? emptySelectionWarning(result.topK, minimumTopK(openModelSync(result.model.path), result.method)) : undefined;
      if (v.json) writeJson(io, { ok: true, ...result, ...(empty ? { warnings: [empty] } : {}) });
      else if (!v.quiet) printSummary(io, result);
      if (empty && !v.json) io.stderr.write(`warning: ${empty}\n`);
      return empty && v.strict ? 1 : 0;
    },
  };
}

async function runPipeline(io: CommandIO, quiet: boolean, options: Parameters<typeof boost>[0]): Promise<BoostResult> {
  const progress = new ProgressLine(io, quiet);
  return runInterruptible(io, progress, 'removing the temporary files', (signal) => boost({ ...options, signal, onProgress: pipelineProgress(progress, stageNames) }));
}


/** Where boost's setting came from; `tune` searches it for the model. */
function settingNote(r: BoostResult): string {
  const defaults = r.topK === (r.intervention === 'scale' ? DEFAULT_BOOST_TOP_K : DEFAULT_ABLATE_TOP_K) && (r.intervention === 'prune' || r.scale === DEFAULT_BOOST_SCALE);
  if (r.intervention === 'prune') return defaults ? ' (the default)' : '';
  return `${defaults ? ' (the defaults, the paper\'s setting)' : ''}; \`mathneuro tune\` searches K and scale for this model`;
}

function printSummary(io: CommandIO, r: BoostResult) {
  const c = colors(io.stdout, io.env);
  const s = r.statistics;
  const stat = (x: BoostResult['statistics']['math']) => `${x.samples} samples, ${x.tokens} tokens${x.cached ? ' (cached)' : ''}${x.unencodable ? `, ${x.unencodable} skipped (characters the vocabulary cannot encode)` : ''}  ${x.dataset}`;
  const realized = r.patch.realized.find((x) => x.type === 'all');
  const lines = [
    `${c.bold(r.intervention === 'scale' ? 'boost' : 'ablate')} ${r.model.spec}`,
    `  setting        ${r.method}, K=${r.topK}${r.intervention === 'scale' ? `, x${r.scale}` : ''}${settingNote(r)}`,
    `  math stats     ${stat(s.math)}`,
    `  general stats  ${stat(s.general)}`,
    `  selected       ${r.patch.selectedWeights} weights = ${(100 * r.patch.selectedWeights / Math.max(1, r.patch.modelParameters)).toFixed(3)}% of ${r.patch.modelParameters} (${r.method}, K=${r.topK}) in ${r.patch.tensorsPatched} tensors`,
    `  patch          ${r.intervention === 'scale' ? `x${r.scale}` : 'zeroed'}; realized mean scale ${realized && Number.isFinite(realized.meanRealizedScale) ? realized.meanRealizedScale.toFixed(4) : '-'}, ${r.patch.blocksTouched} blocks rewritten`,
  ];
  if (r.check?.kl) lines.push(`  check KL       ${r.check.kl.meanKl.toFixed(5)} nats/token over ${r.check.kl.prompts} general prompts; same top token ${(100 * r.check.kl.sameTopToken).toFixed(1)}%`);
  if (r.check?.gsm8k) lines.push(`  check GSM8K    ${(100 * r.check.gsm8k.source).toFixed(1)}% -> ${(100 * r.check.gsm8k.patched).toFixed(1)}% on ${r.check.gsm8k.items} problems (p=${r.check.gsm8k.pValue.toFixed(3)})`);
  lines.push(`${c.green('wrote')} ${r.output}`);
  if (r.modelfile) lines.push(`${c.green('wrote')} ${r.modelfile.path}   (ollama create <name> -f ${path.relative(process.cwd(), r.modelfile.path) || r.modelfile.path})`);
  io.stdout.write(lines.join('\n') + '\n');
}

export const command = makeCommand('boost', 'scale');
export const ablateCommand = makeCommand('ablate', 'prune');
