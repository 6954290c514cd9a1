import { archTables, synthModel, type SynthTypeName } from '../synth.ts';
import { ProgressLine, bar, globalHelp, parse, parseNumber, UsageError, writeJson, type Command } from './common.ts';

const types: SynthTypeName[] = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_k', 'q5_k', 'q6_k', 'mixed', 'cycle'];

export const command: Command = {
  name: 'synth',
  summary: 'write a random-weight GGUF of any supported architecture and a realistic shape (for trying the tool, tests, benchmarks)',
  help: `usage: mathneuro synth <out.gguf> [--arch A] [--shape S] [--type T] [--seed N] [--tied|--untied] [--force]

Writes a model with random weights and a real tokenizer (copied from the vocabulary GGUFs in
llama.cpp's models/), with the tensor names, shapes and metadata the bundled llama.cpp loads for
the architecture. It has no skills; it is for trying the pipeline.

  --arch A     ${Object.keys(archTables).join(' | ')} (default llama)
${Object.values(archTables).map((a) => `                 ${a.arch}: ${a.family}`).join('\n')}
  --shape S    a preset of the architecture (default tiny: 2 layers, a few MB); per architecture:
${Object.values(archTables).map((a) => `                 ${a.arch}: ${Object.keys(a.shapes).join(', ')}`).join('\n')}
  --type T     ${types.join(' | ')} (default mixed: Q4_K with Q6_K attn_v/ffn_down/output, like Q4_K_M;
               cycle: every weight a different type, for tests)
  --seed N     random seed (default 0)
  --untied     a separate output head; --tied: output tied to token_embd (default: the shape's)
  --force      overwrite <out.gguf>
${globalHelp}

examples:
  mathneuro synth tiny.gguf
  mathneuro synth llama1b-q4k.gguf --shape llama-1b --type mixed --seed 1
  mathneuro synth moe.gguf --shape moe-tiny --type q8_0 --json
  mathneuro synth qwen3.gguf --arch qwen3 --shape qwen3-0.6b --type q8_0
  mathneuro synth ds.gguf --arch deepseek2 --type f32`,
  async run(argv, io) {
    const { values, positionals } = parse(argv, {
      arch: { type: 'string' }, shape: { type: 'string' }, type: { type: 'string' }, seed: { type: 'string' },
      tied: { type: 'boolean' }, untied: { type: 'boolean' }, force: { type: 'boolean', short: 'f' },
    });
    if (positionals.length !== 1) throw new UsageError('expected one output path');
    const arch = values.arch ?? 'llama';
    if (!(arch in archTables)) throw new UsageError(`--arch must be one of ${Object.keys(archTables).join(', ')}`);
    const shape = values.shape ?? 'tiny';
    if (!(shape in archTables[arch].shapes)) throw new UsageError(`--shape for ${arch} must be one of ${Object.keys(archTables[arch].shapes).join(', ')}`);
    const type = (values.type ?? 'mixed').toLowerCase() as SynthTypeName;
    if (!types.includes(type)) throw new UsageError(`--type must be one of ${types.join(', ')}`);
    if (values.tied && values.untied) throw new UsageError('--tied and --untied exclude each other');
    const seed = parseNumber('seed', values.seed, { integer: true, min: 0, max: 2 ** 32 - 1 }) ?? 0;
    const progress = new ProgressLine(io, values.quiet || values.json);
    const r = await synthModel({
      out: positionals[0], arch, shape, type, seed, overwrite: values.force,
      untiedOutput: values.untied ? true : values.tied ? false : undefined,
      onProgress: (p) => progress.update(`synth ${bar(p.bytesWritten / p.totalBytes)} ${(p.bytesWritten / 2 ** 20).toFixed(0)}/${(p.totalBytes / 2 ** 20).toFixed(0)} MiB`),
    });
    progress.done();
    if (values.json) writeJson(io, { ok: true, ...r, shape: { name: shape, ...r.shape } });
    else if (!values.quiet) io.stdout.write(`wrote ${r.path}: ${arch} ${shape} ${type}, ${r.tensorCount} tensors, ${(r.parameterCount / 1e6).toFixed(1)}M parameters, ${(r.bytes / 2 ** 20).toFixed(1)} MiB\n`);
    return 0;
  },
};
