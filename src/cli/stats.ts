import { existsSync } from 'node:fs';
import path from 'node:path';
import { collectStats, drawSamples, readSamples, saveStats, MMLU_MATH_SUBJECTS } from '../stats/index.ts';
import { MathneuroError } from '../errors.ts';
import { sameFile } from '../paths.ts';
import { openModelSync } from '../gguf/model.ts';
import { screenTexts } from '../gguf/encodable.ts';
import { checkOutput, checkReadable } from '../preflight.ts';
import { ProgressLine, checkDataFileFlag, globalHelp, hardwareHelp, hardwareOptions, interruptible, modelArgument, modelCheckHelp, modelCheckOptions, modelHelp, modelOption, parse, parseHardware, parseNumber, UsageError, writeJson, type Command } from './common.ts';

/** A generous estimate of a statistics file's size: two f32 vectors per input column of every block matrix. */
function statsBytes(info: { tensors: { name: string; shape: number[] }[] }): number {
  let n = 0;
  for (const t of info.tensors) if (t.shape.length >= 2 && t.name.startsWith('blk.')) n += (t.shape[0] * (t.shape.length > 2 ? t.shape[2] : 1)) * 8 + 1024;
  return n + (1 << 20);
}

export { sameFile } from '../paths.ts';

export const command: Command = {
  name: 'stats',
  summary: 'collect MathNeuro statistics (per-column input norms) of a model over a data file',
  help: `usage: mathneuro stats <model.gguf> -f <file|folder> -o <stats.gguf> [options]
       (llama-imatrix's spelling works too: mathneuro stats -m model.gguf -f math.txt -o math.stats.gguf --chunks 100)

Runs forward passes over the samples inside llama.cpp and records, for the input of every weight
matrix, the sum over samples of each column's L2 norm (MathNeuro) and the sum of squares
(llama.cpp's importance matrix). The output is an imatrix GGUF that llama-quantize --imatrix reads.

${modelHelp}
  -f, --file F     the data (also --data): .jsonl (GSM8K question+answer, MATH problem+solution, or
                   "text"), .txt (blocks separated by blank lines), .csv (MMLU rows), or a folder of them
  -o, --output F   statistics file to write (also --output-file)
  --samples N      use N samples drawn at random (default: all)
  --chunks N       use the first N samples, in file order (llama-imatrix's --chunks; -1 = all)
  --seed S         seed of the draw (default 0)
  --exclude-math-subjects   with MMLU folders: leave out the 5 math subjects (for general statistics)
  --include-output also collect the output head's statistics (llama-imatrix's --process-output), for
                   select/patch --include-output: the head then runs on every token (~20% of a pass
                   on a 1B model); by default each forward pass stops before it
  --checkpoint-every N   save progress every N samples to <output>.partial; --resume continues from it
  --resume         continue an interrupted run (same data, samples and seed)
  --force          overwrite the output
${modelCheckHelp}
${hardwareHelp}
                           (-c: longer samples are truncated and reported; default min(train ctx, 4096))

${globalHelp}

examples:
  mathneuro stats model.gguf -f ../shared/data/gsm8k_train.jsonl --samples 500 -o math.stats.gguf
  mathneuro stats -m model.gguf -f math.txt -o math.stats.gguf -t 8 -c 512 -ngl 99 --chunks 100
  mathneuro stats model.gguf --data ../shared/data/mmlu/test --exclude-math-subjects --samples 500 -o general.stats.gguf`,
  async run(argv, io) {
    const { values, positionals } = parse(argv, {
      data: { type: 'string' }, file: { type: 'string', short: 'f' }, output: { type: 'string', short: 'o' }, 'output-file': { type: 'string' },
      samples: { type: 'string' }, chunks: { type: 'string' }, seed: { type: 'string' },
      'exclude-math-subjects': { type: 'boolean' }, 'include-output': { type: 'boolean' }, 'process-output': { type: 'boolean' }, ...hardwareOptions, ...modelOption,
      'checkpoint-every': { type: 'string' }, resume: { type: 'boolean' }, force: { type: 'boolean' },
      ...modelCheckOptions,
    });
    const model = modelArgument(values, positionals);
    checkDataFileFlag(values.file);
    if (values.file !== undefined && values.data !== undefined && values.file !== values.data) throw new UsageError('-f/--file and --data are the same option: give one');
    const data = values.file ?? values.data;
    if (!data) throw new UsageError('the data file is required: -f/--file F (or --data F)');
    const outputArg = values.output ?? values['output-file'];
    if (!outputArg) throw new UsageError('-o/--output is required');
    const output = path.resolve(outputArg);
    if (sameFile(model, output) || sameFile(model, `${output}.partial`)) throw new UsageError('the output would overwrite the model (symbolic links resolved)');
    if (sameFile(data, output)) throw new UsageError('the output would overwrite the data file (symbolic links resolved)');
    const samplesWanted = parseNumber('samples', values.samples, { integer: true, min: 1 });
    const chunks = parseNumber('chunks', values.chunks, { integer: true, min: -1 });
    if (chunks === 0) throw new UsageError('--chunks must be positive (or -1 for all)');
    if (chunks !== undefined && samplesWanted !== undefined) throw new UsageError('--chunks (the first N) and --samples (N at random) exclude each other');
    const seed = parseNumber('seed', values.seed, { integer: true, min: 0 }) ?? 0;
    const every = parseNumber('checkpoint-every', values['checkpoint-every'], { integer: true, min: 1 });
    const hw = parseHardware(values, io);
    // everything knowable before the first forward pass: the output, the disk, the data
    if (!existsSync(model)) throw new MathneuroError('ENOENT', `no such model: ${model}`);
    checkReadable([data]);
    const info = openModelSync(model);
    checkOutput(output, { inputs: [model, ...info.shards.map((s) => s.path), data], force: values.force, what: 'statistics file', bytes: statsBytes(info), env: io.env });
    const all = readSamples(data, { excludeSubjects: values['exclude-math-subjects'] ? MMLU_MATH_SUBJECTS : [] });
    const chosen = chunks !== undefined && chunks > 0 ? all.slice(0, chunks) : drawSamples(all, samplesWanted, seed);
    screenTexts(info, chosen.map((x) => ({ text: x.text, source: x.source })), { skip: values['skip-unencodable'] });
    const progress = new ProgressLine(io, values.quiet || values.json);
    const interrupt = interruptible(io, 'removing the partial output');
    try {
      const r = await collectStats(model, chosen.map((s) => s.text), {
        dataset: path.basename(data), signal: interrupt.signal, includeOutput: !!(values['include-output'] || values['process-output']),
        nCtx: hw.nCtx, nThreads: hw.nThreads, nBatch: hw.nBatch, nGpuLayers: hw.nGpuLayers,
        modelChecks: !values['no-model-checks'], skipUnencodable: values['skip-unencodable'], sources: chosen.map((x) => x.source),
        checkpoint: every || values.resume ? { path: `${output}.partial`, every: every ?? 50, resume: values.resume } : undefined,
        onProgress: (p) => progress.step('stats', p.samplesDone, p.samplesTotal, `samples  ${p.tokensPerSecond.toFixed(0)} tok/s`),
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
    } catch (e) {
      progress.abandon();
      throw e;
    } finally {
      interrupt.dispose();
    }
  },
};
