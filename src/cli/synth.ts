import { synthModel, synthShapes, type SynthShapeName, type SynthTypeName } from '../synth.ts';
import { ProgressLine, bar, globalHelp, parse, parseNumber, UsageError, writeJson, type Command } from './common.ts';

const types: SynthTypeName[] = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_k', 'q5_k', 'q6_k', 'mixed', 'cycle'];

export const command: Command = {
  name: 'synth',
  summary: 'write a random-weight llama GGUF of a realistic shape (for trying the tool, tests, benchmarks)',
  help: `usage: mathneuro synth <out.gguf> [--shape S] [--type T] [--seed N] [--tied|--untied] [--force]

Writes a llama-architecture model with random weights and a real tokenizer (copied from the
vocabulary GGUFs in llama.cpp's models/). It has no skills; it is for trying the pipeline.

  --shape S    ${Object.keys(synthShapes).join(' | ')} (default tiny: 2 layers, n_embd 256, 32k vocab)
  --type T     ${types.join(' | ')} (default mixed: Q4_K with Q6_K attn_v/ffn_down/output, like Q4_K_M;
               cycle: every weight a different type, for tests)
  --seed N     random seed (default 0)
  --untied     a separate output head; --tied: output tied to token_embd (default: the shape's)
  --force      overwrite <out.gguf>
${globalHelp}

examples:
  mathneuro synth tiny.gguf
  mathneuro synth llama1b-q4k.gguf --shape llama-1b --type mixed --seed 1
  mathneuro synth moe.gguf --shape moe-tiny --type q8_0 --json`,
  async run(argv, io) {
    const { values, positionals } = parse(argv, {
      shape: { type: 'string' }, type: { type: 'string' }, seed: { type: 'string' },
      tied: { type: 'boolean' }, untied: { type: 'boolean' }, force: { type: 'boolean', short: 'f' },
    });
    if (positionals.length !== 1) throw new UsageError('expected one output path');
    const shape = (values.shape ?? 'tiny') as SynthShapeName;
    if (!(shape in synthShapes)) throw new UsageError(`--shape must be one of ${Object.keys(synthShapes).join(', ')}`);
    const type = (values.type ?? 'mixed').toLowerCase() as SynthTypeName;
    if (!types.includes(type)) throw new UsageError(`--type must be one of ${types.join(', ')}`);
    if (values.tied && values.untied) throw new UsageError('--tied and --untied exclude each other');
    const seed = parseNumber('seed', values.seed, { integer: true, min: 0, max: 2 ** 32 - 1 }) ?? 0;
    const progress = new ProgressLine(io, values.quiet || values.json);
    const r = await synthModel({
      out: positionals[0], shape, type, seed, overwrite: values.force,
      untiedOutput: values.untied ? true : values.tied ? false : undefined,
      onProgress: (p) => progress.update(`synth ${bar(p.bytesWritten / p.totalBytes)} ${(p.bytesWritten / 2 ** 20).toFixed(0)}/${(p.totalBytes / 2 ** 20).toFixed(0)} MiB`),
    });
    progress.done();
    if (values.json) writeJson(io, { ok: true, ...r, shape: { name: shape, ...r.shape } });
    else if (!values.quiet) io.stdout.write(`wrote ${r.path}: ${shape} ${type}, ${r.tensorCount} tensors, ${(r.parameterCount / 1e6).toFixed(1)}M parameters, ${(r.bytes / 2 ** 20).toFixed(1)} MiB\n`);
    return 0;
  },
};
