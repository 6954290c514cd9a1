// `mathneuro eval`: score a GGUF on gsm8k, math500, mmlu, ppl or kl, optionally against a
// reference model on the same items (paired difference, McNemar), with a result cache.
import { MathneuroError } from '../errors.ts';
import { evaluate, evalTasks, type EvalProgress, type EvalTask, type EvaluateOptions } from '../eval/evaluate.ts';
import { formatMarkdown } from '../report/eval-markdown.ts';
import { checkReadable } from '../preflight.ts';
import { bar, checkDataFileFlag, formatDuration, hardwareHelp, hardwareOptions, modelArgument, modelHelp, modelOption, parse, parseHardware, parseNumber, ProgressLine, UsageError, globalHelp, runInterruptible, modelCheckHelp, modelCheckOptions, writeJson, type Command, type CommandIO } from './common.ts';

const help = `usage: mathneuro eval <model.gguf> --task <task> [--vs <reference.gguf>] [options]

Score a model; with --vs, also score the reference on the same items and report the
paired difference (model - reference) with McNemar's exact test for accuracies.

tasks:
  gsm8k     8-shot chain of thought ("Q: ... A: ... The answer is N."), greedy, stop at "Q:";
            strict and flexible exact match. Exemplars come from --train, never from the test file.
  math500   MATH-500, 4-shot with \\boxed{} answers, LaTeX-normalised match; per subject and level
  mmlu      0-shot multiple choice by log-likelihood of the answer letter; math subjects apart
  ppl       perplexity of --data (a text file), chunked like llama-perplexity
  kl        mean KL(reference || model) of next-token distributions over general prompts (needs --vs)

options:
  --task T          one of ${evalTasks.join(', ')} (required)
  --vs FILE         reference model evaluated on the same items (kl: the unpatched source)
  -f, --file F      test data (also --data) (default: the data/ folder the package ships, or $MATHNEURO_DATA_DIR:
                    gsm8k_test.jsonl, math500_test.jsonl, mmlu/; kl: non-math MMLU questions,
                    or a .txt (paragraphs) / .jsonl ("text" field))
  --train F         gsm8k: file the few-shot exemplars are drawn from (default gsm8k_train.jsonl)
  --limit N         first N items (mmlu: per subject; ppl: chunks, also --chunks; kl: prompts, default 32).
                    The paper uses the first 200 GSM8K test questions.
  --seed S          exemplar draw (gsm8k) and prompt sample (kl) (default 1234)
  --shots N         few-shot exemplars (gsm8k 8, math500 4)
  --chat            instruct models: use the model's chat template (gsm8k, math500)
  --max-tokens N    new tokens per answer (gsm8k 256, math500 512)
  --mode M          mmlu: letter (default) or choice (log-likelihood of the choice text per token)
  --subjects LIST   mmlu: comma-separated subjects
  --chunk N         ppl: tokens per chunk (default 512)
  --kl-tokens N     kl: tokens per prompt (default 128)
  --parallel N      sequences decoded together (default 8; kl: always 1); 1 = one at a time
  --cache-dir DIR   result cache (default $MATHNEURO_CACHE_DIR or ~/.cache/mathneuro/eval)
  --no-cache        evaluate everything again and write nothing
  --breakdown       also list every subject / level (default on for math500)
  --items           with --json, include every item's output and score
${modelHelp}
${modelCheckHelp.replace('skip samples', 'kl, ppl: skip prompts (ppl: lines)')}
${hardwareHelp}
                           (-c: tokens per sequence; default what the longest prompt needs)

${globalHelp}

Results are cached per (model sha256, task, settings, item): a rerun, or a bigger --limit,
only evaluates new items. Intervals are 95% (Wilson for accuracies).

examples:
  mathneuro eval model.gguf --task gsm8k --limit 200
  mathneuro eval boosted.gguf --vs model.gguf --task gsm8k --limit 200
  mathneuro eval pruned.gguf --vs model.gguf --task kl
  mathneuro eval model.gguf --task mmlu --limit 20 --json
  mathneuro eval model.gguf --task ppl -f wiki.test.raw --chunk 512 --chunks 40 -t 8 -ngl 99`;

const options = {
  task: { type: 'string' }, vs: { type: 'string' }, data: { type: 'string' }, file: { type: 'string', short: 'f' }, train: { type: 'string' }, chunks: { type: 'string' },
  limit: { type: 'string' }, seed: { type: 'string' }, shots: { type: 'string' }, chat: { type: 'boolean', default: false },
  'max-tokens': { type: 'string' }, mode: { type: 'string' }, subjects: { type: 'string' }, chunk: { type: 'string' },
  'kl-tokens': { type: 'string' }, parallel: { type: 'string' }, ...hardwareOptions, ...modelOption,
  'cache-dir': { type: 'string' }, 'no-cache': { type: 'boolean', default: false },
  breakdown: { type: 'boolean', default: false }, items: { type: 'boolean', default: false },
  ...modelCheckOptions,
} as const;

function progressText(p: EvalProgress, task: string): string {
  const who = p.side === 'model' ? 'model' : 'reference';
  if (p.phase === 'hash') return `${task} ${who}: hashing model file...`;
  if (p.phase === 'load') return `${task} ${who}: loading model (${p.cached}/${p.total} cached)...`;
  const eta = Number.isFinite(p.etaMs) ? ` ETA ${formatDuration(p.etaMs)}` : '';
  const speed = p.tokensPerSecond > 0 ? ` ${p.tokensPerSecond.toFixed(1)} tok/s` : '';
  return `${task} ${who} ${bar(p.total ? p.done / p.total : 1)} ${p.done}/${p.total}${p.cached ? ` (${p.cached} cached)` : ''}${speed} ${formatDuration(p.elapsedMs)}${eta}`;
}

async function run(argv: string[], io: CommandIO): Promise<number> {
  const { values, positionals } = parse(argv, options);
  const model = modelArgument(values, positionals, 'one model (<model.gguf>)');
  checkDataFileFlag(values.file);
  if (values.file !== undefined && values.data !== undefined && values.file !== values.data) throw new UsageError('-f/--file and --data are the same option: give one');
  const data = values.file ?? values.data;
  if (values.chunks !== undefined && values.limit !== undefined) throw new UsageError('--chunks and --limit are the same option: give one');
  if (values.chunks !== undefined && values.task !== 'ppl') throw new UsageError('--chunks is for --task ppl (llama-perplexity\'s --chunks); other tasks take --limit');
  const limit = values.chunks === '-1' ? undefined : values.chunks ?? values.limit;
  const task = values.task as EvalTask | undefined;
  if (!task) throw new UsageError('missing --task (one of ' + evalTasks.join(', ') + ')');
  if (!evalTasks.includes(task)) throw new UsageError(`unknown task "${task}" (one of ${evalTasks.join(', ')})`);
  if (values.mode !== undefined && values.mode !== 'letter' && values.mode !== 'choice') throw new UsageError('--mode must be "letter" or "choice"');
  if (task === 'kl' && !values.vs) throw new UsageError('kl needs --vs <source.gguf>');
  if (task === 'ppl' && !data) throw new UsageError('ppl needs -f/--data <text file>');
  const hw = parseHardware(values, io, 64);
  const progress = new ProgressLine(io, values.quiet || values.json);
  const evalOptions: EvaluateOptions = {
    model, vs: values.vs, task, data, train: values.train,
    limit: parseNumber(values.chunks !== undefined ? 'chunks' : 'limit', limit, { min: 1, integer: true }),
    seed: parseNumber('seed', values.seed, { integer: true }),
    shots: parseNumber('shots', values.shots, { min: 0, max: 64, integer: true }),
    chat: values.chat, maxTokens: parseNumber('max-tokens', values['max-tokens'], { min: 1, integer: true }),
    mmluMode: values.mode as 'letter' | 'choice' | undefined,
    subjects: values.subjects?.split(',').map((s) => s.trim()).filter(Boolean),
    chunkSize: parseNumber('chunk', values.chunk, { min: 8, integer: true }),
    klTokens: parseNumber('kl-tokens', values['kl-tokens'], { min: 2, integer: true }),
    parallel: parseNumber('parallel', values.parallel, { min: 1, max: 256, integer: true }),
    contextSize: hw.nCtx, threads: hw.nThreads, batchSize: hw.nBatch, gpuLayers: hw.nGpuLayers,
    gpu: hw.nGpuLayers !== 0 ? 'auto' : false,
    cacheDir: values['cache-dir'], cache: !values['no-cache'],
    skipUnencodable: !!values['skip-unencodable'], modelChecks: !values['no-model-checks'],
    onProgress: (p) => {
      const who = p.side === 'model' ? 'model' : 'reference';
      if (p.phase === 'run' || p.phase === 'done') progress.step(`${task} ${who}`, p.done, p.total, `${p.cached ? `(${p.cached} cached)` : ''}${p.tokensPerSecond > 0 ? ` ${p.tokensPerSecond.toFixed(1)} tok/s` : ''}`.trim());
      else progress.update(progressText(p, task), `${task} ${who}`);
    },
  };
  // before any model is loaded: the files are there and readable
  checkReadable([model, values.vs], 'model');
  checkReadable([data, values.train]);
  const result = await runInterruptible(io, progress, 'stopping the evaluation; finished items stay cached', (signal) => evaluate({ ...evalOptions, signal }));
  if (values.json) {
    const { itemResults, referenceItemResults, ...rest } = result;
    writeJson(io, { ok: true, ...rest, ...(values.items ? { itemResults, referenceItemResults } : {}) });
  } else {
    io.stdout.write(formatMarkdown(result, { breakdown: values.breakdown || task === 'math500' }));
    const skipped = (result.settings as { skippedUnencodable?: number }).skippedUnencodable;
    if (skipped) io.stderr.write(`note: ${skipped} ${task === 'ppl' ? 'lines' : 'prompts'} with characters the vocabulary cannot encode were skipped (--skip-unencodable)\n`);
  }
  return 0;
}

export const command: Command = { name: 'eval', summary: 'score a model on gsm8k, math500, mmlu, perplexity or KL vs its source (paired, cached)', help, run };
export { MathneuroError };
