import path from 'node:path';
import { MathneuroError } from '../errors.ts';
import { openModelSync } from '../gguf/model.ts';
import { patchModel, DEFAULT_SCALE, type PatchProgress, type PatchResult } from '../patch/patch.ts';
import { realizedScaleMarkdown } from '../patch/realized.ts';
import { REQUANTIZE_STRATEGIES, type RequantizeStrategy } from '../core/codec.ts';
import { loadStatisticsFor } from '../select/statistics.ts';
import { ProgressLine, bar, formatDuration, globalHelp, hashMemoHelp, interruptible, modelArgument, modelOption, parse, parseNumber, UsageError, writeJson, type Command, type CommandIO } from './common.ts';
import { emptySelectionWarning, minimumTopK, parseMethod, parseTopK } from './select.ts';
import { checkOutput, checkPatchInput, checkReadable } from '../preflight.ts';
import { hashMemoPath } from '../core/file-identity.ts';

const mib = (bytes: number) => `${(bytes / 1048576).toFixed(1)} MiB`;

// A new file is written tensor by tensor, copies of the unchanged bytes and patched tensors taking
// turns: both are one stage on the terminal (one "done" line, the tensor at hand beside the bar).
export const phaseLabel = { hash: 'hashing', select: 'selecting', patch: 'patching', copy: 'patching', verify: 'verifying', restore: 'restoring' } as const;

export function progressText(p: PatchProgress): string {
  const label = phaseLabel[p.phase];
  return `${label.padEnd(9)} ${bar(p.total ? p.done / p.total : 0)} ${p.item ?? ''}`;
}

function printResult(io: CommandIO, r: PatchResult) {
  const lines = [
    `${r.mode === 'in-place' ? 'patched in place' : 'wrote'} ${r.output.path} (${mib(r.output.bytes)}) in ${formatDuration(r.elapsedMs)}`,
    `${r.method}, K=${r.topK}, ${r.intervention === 'prune' ? 'pruned (set to 0)' : `scaled by ${r.scale}`}: ${r.selectedWeights.toLocaleString('en-US')} weights (${(100 * r.selectedWeights / r.modelParameters).toFixed(3)}% of the model) in ${r.tensorsPatched} tensors, ${r.blocksTouched.toLocaleString('en-US')} blocks touched, ${r.bytesChanged.toLocaleString('en-US')} bytes changed`,
  ];
  if (r.upcast) lines.push(`upcast: ${r.upcast.tensors} tensors stored as ${r.upcast.type}: ${mib(r.upcast.bytesBefore)} -> ${mib(r.upcast.bytesAfter)}, file ${r.upcast.extraBytes >= 0 ? '+' : ''}${mib(r.upcast.extraBytes)}`);
  if (r.journal) lines.push(`undo journal: ${r.journal} (mathneuro unpatch ${r.output.path} restores the original)`);
  lines.push('', 'realized scale (after / before) per type:', realizedScaleMarkdown(r.realized));
  io.stdout.write(lines.join('\n') + '\n');
}

export const command: Command = {
  name: 'patch',
  summary: 'scale (x1.1) or zero the selected weights in a GGUF: new file or in place with undo',
  help: `usage: mathneuro patch <model.gguf> (-o out.gguf | --in-place) (--selection F | --math F --general F --top-k K) [options]

Multiplies the selected weights by C (default ${DEFAULT_SCALE}) or sets them to zero. Only the
quantization blocks that hold selected weights are rewritten (dequantized, changed, requantized
to the same type by ggml); every other byte stays as it was. Prints the scale each weight really
got, per tensor type: at 4 bits much of a x1.1 change rounds away (see --upcast).

  -o, --output F     write a new file (via a temporary file renamed at the end); adds mathneuro.*
                     provenance keys (method, K, scale, statistics, source name and sha256)
  --in-place         rewrite the model itself; an undo journal <model>.mathneuro-undo keeps the
                     original bytes (mathneuro unpatch restores them bit-exactly)
  --selection F      replay a selection file (mathneuro select -o); --top-k picks one of its K.
  --rehash           hash the model even where its sha256 is known: the source's sha256 (checked
                     against the selection's, written in the header) is otherwise taken from the
                     selection file, or from the hash memo (see below), while the model's device,
                     inode, size and times are those recorded with it
  --math F, --general F   or select now from statistics (also: --method, --seed, --include-output)
  --top-k K          fraction (0.01) or percentage (1%)
  --method M         mathneuro (default) | wanda | random | wanda-row
  --scale C          multiply the selected weights by C (default ${DEFAULT_SCALE})
  --prune            set them to zero instead
  --upcast T         q8_0 | f16: store tensors that hold selected weights in T so the change holds (new file only)
  --requant S        auto (default: keep-scale re-rounding, and where a selected weight sits at
                     its block's largest code the (sub-)block scale raised; ggml only where neither
                     can) | best (per block the closest of plain requantization, keep-scale
                     re-rounding and importance-weighted requantization) | plain | keep-scale
  --no-imatrix       do not use the math statistics' sums of squares as importance matrix
  -t, --threads N    CPU threads (default: all; the output does not depend on it)
  --force            overwrite the output; patch a file mathneuro already patched
  --strict           exit 1 when the selection is empty and the patch changes nothing
  -m, --model F      the model (the positional argument works too)

A split model (<name>-00001-of-0000N.gguf) is given by its first shard and written as shards again:
-o must be named <out>-00001-of-0000N.gguf; in place, one journal beside the first shard covers all.

${hashMemoHelp}
${globalHelp}

examples:
  mathneuro patch model.gguf -o model.math.gguf --selection model.mnsel --top-k 1%
  mathneuro patch model.gguf -o model.math.gguf --math math.stats.gguf --general general.stats.gguf --top-k 0.01 --scale 1.1
  mathneuro patch model.gguf --in-place --selection model.mnsel --prune   # undo: mathneuro unpatch model.gguf
  mathneuro patch model-Q4_K_M.gguf -o boosted.gguf --selection model.mnsel --upcast q8_0`,
  async run(argv, io) {
    const { values, positionals } = parse(argv, {
      output: { type: 'string', short: 'o' }, 'in-place': { type: 'boolean' }, selection: { type: 'string' },
      math: { type: 'string' }, general: { type: 'string' }, 'top-k': { type: 'string' }, method: { type: 'string' },
      seed: { type: 'string' }, 'include-output': { type: 'boolean' }, scale: { type: 'string' }, prune: { type: 'boolean' },
      upcast: { type: 'string' }, requant: { type: 'string' }, 'no-imatrix': { type: 'boolean' }, rehash: { type: 'boolean' }, force: { type: 'boolean' }, threads: { type: 'string', short: 't' }, strict: { type: 'boolean' },
      ...modelOption,
    });
    const model = modelArgument(values, positionals);
    if (!values.output && !values['in-place']) throw new UsageError('give -o <out.gguf> or --in-place');
    if (values.output && values['in-place']) throw new UsageError('-o and --in-place exclude each other');
    if (values.prune && values.scale !== undefined) throw new UsageError('--scale and --prune exclude each other');
    if (!values.selection && !values.math) throw new UsageError('give --selection <file> or --math/--general statistics');
    if (values.selection && values.general) throw new UsageError('--selection replays a finished selection; --general is not used with it');
    const topKs = parseTopK(values['top-k']);
    if (topKs && topKs.length > 1) throw new UsageError('patch takes one K');
    const topK = topKs?.[0];
    if (!values.selection && topK === undefined) throw new UsageError('--top-k is required when selecting from statistics');
    const method = parseMethod(values.method);
    if (!values.selection && (method === 'mathneuro' || method === 'random') && !values.general) throw new UsageError(`--general is required by --method ${method}`);
    const scale = parseNumber('scale', values.scale);
    if (scale !== undefined && (scale <= 0 || scale > 100)) throw new UsageError('--scale must be in (0, 100] (use --prune for zero)');
    const upcast = values.upcast?.toLowerCase();
    if (upcast !== undefined && upcast !== 'q8_0' && upcast !== 'f16') throw new UsageError(`--upcast must be q8_0 or f16, got "${values.upcast}"`);
    const strategy = (values.requant ?? 'auto') as RequantizeStrategy;
    if (!REQUANTIZE_STRATEGIES.includes(strategy)) throw new UsageError(`--requant must be ${REQUANTIZE_STRATEGIES.join(', ')}, got "${values.requant}"`);
    const seed = parseNumber('seed', values.seed, { integer: true, min: 0, max: 0xffffffff });

    const info = openModelSync(model);
    // before the statistics are read and anything is written: the input, the output, the disk
    checkPatchInput(model, { force: values.force });
    checkReadable([values.selection, values.math, values.general], 'statistics or selection file');
    if (values.output) checkOutput(values.output, { inputs: info.shards.map((s) => s.path), force: values.force, bytes: upcast ? undefined : info.totalBytes, env: io.env });
    const warnings: string[] = [];
    const loaded = async (file: string | undefined, role: 'math' | 'general') => {
      if (!file) return undefined;
      const l = await loadStatisticsFor(file, role, info, values.selection ? 'wanda-row' : method);
      warnings.push(...l.warnings);
      return l.stats;
    };
    const math = await loaded(values.math, 'math');
    const general = await loaded(values.general, 'general');
    if (!values.json && !values.quiet) for (const w of warnings) io.stderr.write(`warning: ${w}\n`);
    const progress = new ProgressLine(io, values.quiet || values.json);
    const interrupt = interruptible(io, values['in-place'] ? 'finishing the undo: restoring the model from its journal' : 'removing the partial output');
    try {
      const result = await patchModel({
        model, out: values.output ? path.resolve(values.output) : undefined, inPlace: values['in-place'],
        selection: values.selection, math, general, method, topK, seed, includeOutput: values['include-output'],
        scale, prune: values.prune, upcast: upcast as 'q8_0' | 'f16' | undefined, strategy,
        useImportance: !values['no-imatrix'], force: values.force, rehash: values.rehash, hashMemo: hashMemoPath(io.env), signal: interrupt.signal,
        threads: parseNumber('threads', values.threads, { integer: true, min: 1, max: 1024 }),
        onProgress: (p) => progress.step(phaseLabel[p.phase], p.done, p.total, p.item ?? ''),
      });
      progress.done();
      const empty = result.selectedWeights === 0 ? emptySelectionWarning(result.topK, minimumTopK(info, result.method, values['include-output'])) : undefined;
      if (empty) warnings.push(empty);
      if (values.json) writeJson(io, { ok: true, warnings, ...result });
      else if (!values.quiet) printResult(io, result);
      if (empty && !values.json) io.stderr.write(`warning: ${empty}${result.mode !== 'in-place' ? ` (${result.output.path} is an unchanged copy)` : ''}\n`);
      return empty && values.strict ? 1 : 0;
    } catch (e) {
      progress.abandon();
      if ((e as MathneuroError).code === 'EABORT' && values['in-place']) io.stderr.write('interrupted: the model was restored from its undo journal\n');
      throw e;
    } finally {
      interrupt.dispose();
    }
  },
};
