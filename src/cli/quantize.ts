import { loadStats } from '../stats/index.ts';
import { requantizeModel, REQUANTIZE_TYPES } from '../quantize.ts';
import { ProgressLine, bar, globalHelp, parse, UsageError, writeJson, type Command } from './common.ts';

const mib = (bytes: number) => `${(bytes / 1048576).toFixed(1)} MiB`;

export const command: Command = {
  name: 'quantize',
  summary: 'requantize a GGUF\'s weight matrices to one ggml type (Q8_0, Q4_K, ...), optionally with statistics as imatrix',
  help: `usage: mathneuro quantize <in.gguf> <out.gguf> --type T [--imatrix stats.gguf] [--force]

Writes a copy whose weight matrices (attention, MLP, experts, output.weight) are quantized by ggml
to T, like llama-quantize --pure: one type for every matrix. Norms, biases, the MoE router and
token_embd.weight keep their stored type. A row length that is not a multiple of T's block falls
back as llama-quantize does (Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K/Q3_K -> Q4_0), then F16.
A quantized source is dequantized first (quality is that of the source, not of an F16 original).

  --type T       ${REQUANTIZE_TYPES.join(' | ')}
  --imatrix F    statistics file (mathneuro stats, or a llama.cpp imatrix GGUF): its sums of
                 squares per input column weight the rounding, as llama-quantize --imatrix does
  --force        overwrite <out.gguf>
${globalHelp}

examples:
  mathneuro quantize model-f32.gguf model-q8_0.gguf --type q8_0
  mathneuro quantize model-f16.gguf model-q4_k.gguf --type q4_k --imatrix general.stats.gguf --json`,
  async run(argv, io) {
    const { values, positionals } = parse(argv, { type: { type: 'string', short: 't' }, imatrix: { type: 'string' }, force: { type: 'boolean' } });
    if (positionals.length !== 2) throw new UsageError('expected <in.gguf> <out.gguf>');
    if (!values.type) throw new UsageError('--type is required');
    const type = values.type.toLowerCase();
    if (!(REQUANTIZE_TYPES as readonly string[]).includes(type)) throw new UsageError(`--type must be one of ${REQUANTIZE_TYPES.join(', ')}`);
    const imatrix = values.imatrix ? await loadStats(values.imatrix) : undefined;
    const progress = new ProgressLine(io, values.quiet || values.json);
    const r = await requantizeModel({
      source: positionals[0], out: positionals[1], type, imatrix, force: values.force,
      onProgress: (p) => progress.update(`quantize ${bar(p.tensorsDone / p.tensorCount)} ${p.name}`),
    });
    progress.done();
    if (values.json) writeJson(io, { ok: true, ...r });
    else if (!values.quiet) {
      const fallbacks = r.tensors.filter((x) => x.fallback);
      io.stdout.write(`wrote ${r.path}: ${mib(r.sourceBytes)} -> ${mib(r.bytes)}; tensors ${Object.entries(r.typeCounts).map(([k, n]) => `${n} ${k}`).join(', ')}`
        + `${fallbacks.length ? `; ${fallbacks.length} fell back (rows not a multiple of the ${r.type} block)` : ''}${imatrix ? `; ${r.tensors.filter((x) => x.imatrix).length} with the importance matrix` : ''}\n`);
    }
    return 0;
  },
};
