import { existsSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { collectStats, drawSamples, readSamples, saveStats, MMLU_MATH_SUBJECTS } from '../stats/index.ts';
import { MathneuroError } from '../errors.ts';
import { sameFile } from '../paths.ts';
import { ProgressLine, bar, formatDuration, globalHelp, modelCheckHelp, modelCheckOptions, parse, parseNumber, UsageError, writeJson, type Command } from './common.ts';

export { sameFile } from '../paths.ts';

export const command: Command = {
  name: 'stats',
  summary: 'collect MathNeuro statistics (per-column input norms) of a model over a data file',
  help: `usage: mathneuro stats <model.gguf> --data <file|folder> -o <stats.gguf> [options]

Runs forward passes over the samples inside llama.cpp and records, for the input of every weight
matrix, the sum over samples of each column's L2 norm (MathNeuro) and the sum of squares
(llama.cpp's importance matrix). The output is an imatrix GGUF that llama-quantize --imatrix reads.

  --data F         .jsonl (GSM8K question+answer, MATH problem+solution, or "text"), .txt (blocks
                   separated by blank lines), .csv (MMLU rows), or a folder of them
  -o, --output F   statistics file to write
  --samples N      use N samples drawn at random (default: all)
  --seed S         seed of the draw (default 0)
  --exclude-math-subjects   with MMLU folders: leave out the 5 math subjects (for general statistics)
  --ctx N          context size; longer samples are truncated and reported (default min(train ctx, 4096))
  --threads N      CPU threads (default: all)
  --gpu-layers N   layers to offload when the build has a GPU backend (default 0)
  --checkpoint-every N   save progress every N samples to <output>.partial; --resume continues from it
  --resume         continue an interrupted run (same data, samples and seed)
  --force          overwrite the output
${modelCheckHelp}
${globalHelp}

examples:
  mathneuro stats model.gguf --data ../shared/data/gsm8k_train.jsonl --samples 500 -o math.stats.gguf
  mathneuro stats model.gguf --data ../shared/data/mmlu/test --exclude-math-subjects --samples 500 -o general.stats.gguf`,
  async run(argv, io) {
    const { values, positionals } = parse(argv, {
      data: { type: 'string' }, output: { type: 'string', short: 'o' }, samples: { type: 'string' }, seed: { type: 'string' },
      'exclude-math-subjects': { type: 'boolean' }, ctx: { type: 'string' }, threads: { type: 'string' }, 'gpu-layers': { type: 'string' },
      'checkpoint-every': { type: 'string' }, resume: { type: 'boolean' }, force: { type: 'boolean', short: 'f' },
      ...modelCheckOptions,
    });
    if (positionals.length !== 1) throw new UsageError('expected one model path');
    if (!values.data) throw new UsageError('--data is required');
    if (!values.output) throw new UsageError('-o/--output is required');
    const model = positionals[0];
    const output = path.resolve(values.output);
    if (sameFile(model, output) || sameFile(model, `${output}.partial`)) throw new UsageError('the output would overwrite the model (symbolic links resolved)');
    if (existsSync(output) && !values.force) throw new MathneuroError('EEXIST', `${output} exists (use --force to overwrite)`);
    const samplesWanted = parseNumber('samples', values.samples, { integer: true, min: 1 });
    const seed = parseNumber('seed', values.seed, { integer: true, min: 0 }) ?? 0;
    const every = parseNumber('checkpoint-every', values['checkpoint-every'], { integer: true, min: 1 });
    const all = readSamples(values.data, { excludeSubjects: values['exclude-math-subjects'] ? MMLU_MATH_SUBJECTS : [] });
    const chosen = drawSamples(all, samplesWanted, seed);
    const progress = new ProgressLine(io, values.quiet || values.json);
    const controller = new AbortController();
    const onSigint = () => controller.abort();
    process.once('SIGINT', onSigint);
    try {
      const r = await collectStats(model, chosen.map((s) => s.text), {
        dataset: path.basename(values.data), signal: controller.signal,
        nCtx: parseNumber('ctx', values.ctx, { integer: true, min: 8 }),
        nThreads: parseNumber('threads', values.threads, { integer: true, min: 1 }),
        nGpuLayers: parseNumber('gpu-layers', values['gpu-layers'], { integer: true, min: -1 }),
        modelChecks: !values['no-model-checks'], skipUnencodable: values['skip-unencodable'], sources: chosen.map((x) => x.source),
        checkpoint: every || values.resume ? { path: `${output}.partial`, every: every ?? 50, resume: values.resume } : undefined,
        onProgress: (p) => progress.update(`stats ${bar(p.samplesDone / p.samplesTotal)} ${p.samplesDone}/${p.samplesTotal} samples  ${p.tokensPerSecond.toFixed(0)} tok/s  ETA ${formatDuration(p.etaMs)}`),
      });
      progress.done();
      await saveStats(r.stats, output);
      const summary = {
        ok: true, output, model: r.stats.model, samples: r.stats.samples, tokens: r.stats.tokens, weights: r.stats.weights.size,
        truncatedSamples: r.truncated.length, emptySamples: r.empty.length, unencodableSamples: r.unencodable.length, elapsedMs: r.elapsedMs,
        tokensPerSecond: r.stats.tokens / Math.max(0.001, r.elapsedMs / 1000),
      };
      if (values.json) writeJson(io, summary);
      else if (!values.quiet) {
        io.stdout.write(`wrote ${output}: ${summary.samples} samples, ${summary.tokens} tokens, ${summary.weights} weights, ${summary.tokensPerSecond.toFixed(0)} tok/s\n`);
        if (r.truncated.length) io.stderr.write(`note: ${r.truncated.length} samples were longer than the context and were truncated (--ctx)\n`);
        if (r.empty.length) io.stderr.write(`note: ${r.empty.length} samples produced no tokens and were skipped\n`);
        if (r.unencodable.length) io.stderr.write(`note: ${r.unencodable.length} samples with characters the vocabulary cannot encode were skipped (--skip-unencodable), e.g. ${r.unencodable[0].source}\n`);
      }
      return 0;
    } finally {
      process.removeListener('SIGINT', onSigint);
    }
  },
};
