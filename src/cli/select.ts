import path from 'node:path';
import { modelFiles, openModelSync } from '../gguf/model.ts';
import { SelectionFileWriter } from '../select/file.ts';
import type { GgufInfo } from '../gguf/reader.ts';
import { EXCLUDED_BLOCK_WEIGHTS, SELECTION_METHODS, SelectionSummaryBuilder, planTensors, selectTensors, validateTopK, type SelectionMethod, type SelectionSummary } from '../select/select.ts';
import { loadStatisticsFor } from '../select/statistics.ts';
import { sha256InBackground } from '../core/background-hash.ts';
import { hashMemoPath, recallSha256, rememberSha256, type HashedFile } from '../core/file-identity.ts';
import { sha256File } from '../core/tensor-io.ts';
import { checkOutput } from '../preflight.ts';
import { ProgressLine, globalHelp, hashMemoHelp, interruptible, modelArgument, modelOption, parse, parseNumber, UsageError, writeJson, type Command, type CommandIO } from './common.ts';

/** The warning for an empty selection, with the smallest K that selects anything. */
export function emptySelectionWarning(topK: number | string, minimum: number | undefined): string {
  return `the selection is empty: K=${topK} selects no weight in any matrix, so the patch changes nothing` +
    (minimum !== undefined ? ` (the smallest K that selects a weight in some matrix is ${+minimum.toPrecision(3)} = ${+(100 * minimum).toPrecision(3)}%: 1 / the weights of the largest matrix)` : '');
}

/** "0.01,0.05" or "1%,5%" -> [0.01, 0.05] */
export function parseTopK(value: string | undefined): number[] | undefined {
  if (value === undefined) return undefined;
  const ks = value.split(',').map((part) => {
    const s = part.trim();
    const n = s.endsWith('%') ? Number(s.slice(0, -1)) / 100 : Number(s);
    if (s === '' || !Number.isFinite(n)) throw new UsageError(`--top-k takes fractions or percentages separated by commas, got "${part}"`);
    return n;
  });
  try { validateTopK(ks); } catch (e) { throw new UsageError((e as Error).message); }
  return ks;
}

export function parseMethod(value: string | undefined): SelectionMethod {
  const method = (value ?? 'mathneuro') as SelectionMethod;
  if (!SELECTION_METHODS.includes(method)) throw new UsageError(`--method must be one of ${SELECTION_METHODS.join(', ')}, got "${value}"`);
  return method;
}

/**
 * The smallest per-matrix K that selects a weight anywhere: 1 / the weights of the largest scored
 * matrix (per output row for wanda-row). Below it every matrix's top-K count rounds to 0.
 */
export function minimumTopK(model: GgufInfo, method: SelectionMethod = 'mathneuro', includeOutput = false): number | undefined {
  let largest = 0;
  for (const t of model.tensors) {
    const scored = (t.name.startsWith('blk.') && t.name.endsWith('.weight') || includeOutput && t.name === 'output.weight') && t.shape.length >= 2 && t.shape.length <= 3 && !EXCLUDED_BLOCK_WEIGHTS.test(t.name);
    if (scored) largest = Math.max(largest, method === 'wanda-row' ? t.shape[0] : t.shape[0] * t.shape[1]);
  }
  return largest ? 1 / largest : undefined;
}

const pct = (x: number) => `${(x * 100).toFixed(x < 0.001 ? 4 : 3)}%`;

export function printSummary(io: CommandIO, s: SelectionSummary, perTensor: boolean) {
  const lines: string[] = [];
  lines.push(`${s.method}: ${s.tensors.length} weight tensors scored (${s.scoredParameters.toLocaleString('en-US')} of ${s.modelParameters.toLocaleString('en-US')} parameters)`);
  lines.push('', `${'K'.padStart(8)}  ${'selected'.padStart(12)}  ${'of model'.padStart(10)}  ${'of scored'.padStart(10)}`);
  for (const t of s.totals) lines.push(`${pct(t.topK).padStart(8)}  ${t.selected.toLocaleString('en-US').padStart(12)}  ${pct(t.fractionOfModel).padStart(10)}  ${pct(t.fractionOfScored).padStart(10)}`);
  lines.push('', `per layer (selected / parameters):`, `${'layer'.padEnd(10)} ${s.topK.map((k) => `K=${pct(k)}`.padStart(18)).join(' ')}`);
  for (const l of s.perLayer) lines.push(`${l.layer.padEnd(10)} ${l.counts.map((c) => `${c} (${pct(c / l.parameters)})`.padStart(18)).join(' ')}`);
  if (perTensor) {
    lines.push('', 'per tensor:');
    for (const t of s.tensors) lines.push(`${t.name.padEnd(34)} ${t.type.padEnd(6)} ${t.shape.join('x').padEnd(14)} ${t.counts.map((c) => `${c} (${pct(c / t.numel)})`.padStart(18)).join(' ')}`);
  }
  if (s.skipped.length) lines.push('', `not scored (no statistics): ${s.skipped.map((x) => x.name).join(', ')}`);
  io.stdout.write(lines.join('\n') + '\n');
}

export const command: Command = {
  name: 'select',
  summary: 'select the math-specific weights (or a baseline\'s) for one or more K',
  help: `usage: mathneuro select <model.gguf> --math <stats> [--general <stats>] --top-k K[,K...] [-o selection.mnsel] [options]

Scores every linear weight of the blocks, S = |W| * (sum over samples of the input column's L2
norm), per weight matrix, and keeps the exact top K of the math scores that are not in the top K
of the general scores (MathNeuro). Several K reuse the same scores. Prints counts per K, per layer
(and per tensor with --per-tensor); -o writes a selection file that mathneuro patch replays.

  --math F          statistics of the math data (mathneuro stats)
  --general F       statistics of the general data (mathneuro and random need them)
  --top-k K[,K...]  fractions 0.0001..0.5 or percentages (1%), comma-separated
  --method M        mathneuro (default) | wanda (math top-K, no filter) | random (MathNeuro's count
                    per matrix at random positions) | wanda-row (sqrt(sum2/tokens), top-K per output row)
  --seed N          seed of the random baseline (default 0)
  --include-output  also score output.weight when it is its own tensor (never tied embeddings)
  -o, --output F    selection file to write (replayed by mathneuro patch --selection)
  --per-tensor      print every tensor's counts
  -t, --threads N   CPU threads (default: all; the selection does not depend on it)
  --force           overwrite the output
  --rehash          hash the model for the selection file even where the hash memo knows its sha256
  --strict          exit 1 when a K selects nothing (the smallest K that selects anything is in the warning)
${globalHelp}

Ties are broken in favour of the lower flat index; weights with a zero score are never selected.
${hashMemoHelp}
The selection file records them too, so mathneuro patch --selection does not hash it again either.

examples:
  mathneuro select model.gguf --math math.stats.gguf --general general.stats.gguf --top-k 0.1%,1%,5% -o model.mnsel
  mathneuro select model.gguf --math math.stats.gguf --general general.stats.gguf --top-k 0.05 --method random --seed 3 --json`,
  async run(argv, io) {
    const { values, positionals } = parse(argv, {
      math: { type: 'string' }, general: { type: 'string' }, 'top-k': { type: 'string' }, method: { type: 'string' },
      seed: { type: 'string' }, 'include-output': { type: 'boolean' }, output: { type: 'string', short: 'o' },
      'per-tensor': { type: 'boolean' }, force: { type: 'boolean' }, rehash: { type: 'boolean' }, threads: { type: 'string', short: 't' }, strict: { type: 'boolean' },
      ...modelOption,
    });
    const threads = parseNumber('threads', values.threads, { integer: true, min: 1, max: 1024 });
    const modelPath = modelArgument(values, positionals);
    if (!values.math) throw new UsageError('--math is required');
    const topK = parseTopK(values['top-k']);
    if (!topK) throw new UsageError('--top-k is required');
    const method = parseMethod(values.method);
    if ((method === 'mathneuro' || method === 'random') && !values.general) throw new UsageError(`--general is required by --method ${method}`);
    const seed = parseNumber('seed', values.seed, { integer: true, min: 0, max: 0xffffffff }) ?? 0;
    const output = values.output ? path.resolve(values.output) : undefined;
    if (output) checkOutput(output, { inputs: [modelPath, values.math, ...(values.general ? [values.general] : [])], force: values.force, what: 'selection file', env: io.env });
    const model = openModelSync(modelPath);
    // the model's sha256 (recorded in the selection file) is computed on a worker thread meanwhile,
    // from here on (loading the statistics overlaps it too)
    // (or known from the hash memo: the model unchanged since it was hashed)
    const memo = hashMemoPath(io.env);
    const known = output && !values.rehash ? recallSha256(memo, modelFiles(model)) : undefined;
    const hashing = output && !known ? sha256InBackground(modelFiles(model)) : undefined;
    const modelHash = async (): Promise<{ sha256: string; files?: HashedFile[] }> => {
      if (known) return known;
      const sha256 = await hashing!.result, files = await hashing!.files;
      rememberSha256(memo, modelFiles(model), sha256, files);
      return { sha256, files };
    };
    let writer: SelectionFileWriter | undefined;
    let progress: ProgressLine | undefined;
    let interrupt: ReturnType<typeof interruptible> | undefined;
    try {
      const math = await loadStatisticsFor(values.math, 'math', model, method);
      const general = values.general ? await loadStatisticsFor(values.general, 'general', model, method) : undefined;
      const warnings = [...math.warnings, ...(general?.warnings ?? [])];
      if (!values.json && !values.quiet) for (const w of warnings) io.stderr.write(`warning: ${w}\n`);
      const plan = planTensors(model, math.stats, { includeOutput: values['include-output'] });
      const summary = new SelectionSummaryBuilder(model, method, topK, plan.skipped);
      progress = new ProgressLine(io, values.quiet || values.json);
      writer = output ? new SelectionFileWriter(output) : undefined;
      interrupt = interruptible(io, 'removing the partial selection file');
      for await (const selection of selectTensors(model, plan, {
        method, topK, math: math.stats, general: general?.stats, seed, includeOutput: values['include-output'], signal: interrupt.signal, threads,
        onProgress: (p) => progress!.step('select', p.done, p.total, p.tensor),
      })) {
        summary.add(selection);
        await writer?.add(selection);
      }
      progress.done();
      const result = summary.build();
      if (writer) {
        const { tensors: _omit, ...rest } = result;
        await writer.finish({
          method, topK, seed: method === 'random' ? seed : undefined, includeOutput: !!values['include-output'],
          model: { path: path.basename(model.path), name: String(model.metadata.get('general.name') ?? ''), ...(await modelHash()), fileSize: model.totalBytes, tensorCount: model.tensors.length },
          statistics: {
            math: { path: path.basename(values.math), sha256: sha256File(values.math) },
            general: values.general ? { path: path.basename(values.general), sha256: sha256File(values.general) } : undefined,
          },
          summary: rest,
        });
      }
      const emptyKs = result.totals.filter((t) => t.selected === 0).map((t) => t.topK);
      const empty = emptyKs.length ? emptySelectionWarning(emptyKs.join(','), minimumTopK(model, method, values['include-output'])).replace('so the patch changes nothing', 'so a patch with it would change nothing') : undefined;
      if (empty) warnings.push(empty);
      if (values.json) writeJson(io, { ok: true, output, warnings, ...result });
      else if (!values.quiet) {
        printSummary(io, result, !!values['per-tensor']);
        if (output) io.stdout.write(`\nwrote ${output}\n`);
      }
      if (empty && !values.json) io.stderr.write(`warning: ${empty}\n`);
      return empty && values.strict ? 1 : 0;
    } catch (e) {
      progress?.abandon();
      writer?.abort();
      throw e;
    } finally {
      hashing?.cancel();
      interrupt?.dispose();
    }
  },
};
