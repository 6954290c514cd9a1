import { closeSync, openSync, readSync } from 'node:fs';
import { MathneuroError } from '../errors.ts';
import { readGgufSync } from '../gguf/reader.ts';
import { openModelSync } from '../gguf/model.ts';
import { readJournal } from '../patch/journal.ts';
import { patchState } from '../patch/patch.ts';
import { SelectionFile } from '../select/file.ts';
import { loadStats } from '../stats/index.ts';
import { tensorRoleSummary } from '../gguf/tensor-roles.ts';
import { hyperparameterLines, hyperparameters } from './hparams.ts';
import { globalHelp, parse, UsageError, writeJson, type Command, type CommandIO } from './common.ts';

const mib = (bytes: number) => `${(bytes / 1048576).toFixed(1)} MiB`;

function magicOf(file: string): string {
  let fd: number;
  try { fd = openSync(file, 'r'); } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new MathneuroError('ENOENT', `no such file: ${file}`);
    throw new MathneuroError('EIO', `cannot open ${file}: ${(e as Error).message}`);
  }
  try { const b = Buffer.alloc(8); const n = readSync(fd, b, 0, 8, 0); return b.subarray(0, n).toString('latin1'); } finally { closeSync(fd); }
}

function table(rows: (string | number)[][], header: string[]): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, c) => Math.max(...cells.map((r) => r[c]?.length ?? 0)));
  return cells.map((r) => r.map((x, c) => (c === 0 ? x.padEnd(widths[c]) : x.padStart(widths[c]))).join('  ')).join('\n');
}

async function inspectModel(file: string, tensors: boolean) {
  const info = openModelSync(file);   // every shard of a split model
  const byType = new Map<string, { tensors: number; parameters: number; bytes: number }>();
  for (const t of info.tensors) {
    const e = byType.get(t.typeName) ?? { tensors: 0, parameters: 0, bytes: 0 };
    e.tensors++; e.parameters += t.numel; e.bytes += t.byteSize;
    byType.set(t.typeName, e);
  }
  const state = patchState(file);
  return {
    kind: 'model' as const, path: file, bytes: info.totalBytes, ggufVersion: info.version,
    shards: info.shards.length > 1 ? info.shards.map((s) => ({ path: s.path, bytes: s.fileSize, tensors: s.tensors.length })) : undefined,
    architecture: info.metadata.get('general.architecture'), name: info.metadata.get('general.name'),
    tensorCount: info.tensors.length, parameters: info.tensors.reduce((a, t) => a + t.numel, 0),
    hyperparameters: hyperparameters(info),
    outputHead: info.tensorByName.has('output.weight') ? 'own tensor (output.weight)' : 'tied to token_embd.weight',
    types: Object.fromEntries(byType),
    // what MathNeuro does with each kind of tensor of this architecture (src/gguf/tensor-roles.ts)
    roles: tensorRoleSummary(info),
    patched: state,
    tensors: tensors ? info.tensors.map((t) => ({ name: t.name, type: t.typeName, shape: t.shape, bytes: t.byteSize, ...(info.shards.length > 1 ? { shard: (t.shard ?? 0) + 1 } : {}) })) : undefined,
  };
}

async function inspectStats(file: string, tensors: boolean) {
  const s = await loadStats(file);
  return {
    kind: 'statistics' as const, path: file, samples: s.samples, tokens: s.tokens, datasets: s.datasets, model: s.model,
    hasNormSum: s.hasNormSum, weights: s.weights.size,
    tensors: tensors ? [...s.weights.values()].map((w) => ({
      name: w.name, nIn: w.nIn, nMat: w.nMat, tokens: Array.from(w.counts).reduce((a, b) => a + b, 0),
      meanNormSum: w.normSum.reduce((a, b) => a + b, 0) / w.normSum.length, meanSum2: w.sum2.reduce((a, b) => a + b, 0) / w.sum2.length,
    })) : undefined,
  };
}

function inspectSelection(file: string, tensors: boolean) {
  const f = SelectionFile.open(file);
  const { tensors: list, summary, ...rest } = f.index;
  return {
    kind: 'selection' as const, path: file, ...rest, totals: summary.totals, perLayer: summary.perLayer, skipped: summary.skipped,
    tensorCount: list.length,
    tensors: tensors ? list.map((t) => ({ name: t.name, type: t.type, shape: t.shape, counts: t.counts })) : undefined,
  };
}

function inspectJournal(file: string) {
  const c = readJournal(file);
  return {
    kind: 'undo-journal' as const, path: file, model: c.header?.model, sourceSha256: c.header?.sourceSha256, createdAt: c.header?.createdAt,
    complete: !!c.commit, records: c.records.length, bytes: c.records.reduce((a, r) => a + r.length, 0), tornBytes: c.tornBytes,
    shards: c.header?.shards,   // a split model: every shard's name, sha256 and size
    provenance: c.header?.provenance,
  };
}

function print(io: CommandIO, r: Record<string, any>) {
  const out: string[] = [];
  if (r.kind === 'model') {
    out.push(`${r.path}: GGUF v${r.ggufVersion} model, ${r.architecture ?? '?'} "${r.name ?? ''}", ${mib(r.bytes)}, ${r.tensorCount} tensors, ${r.parameters.toLocaleString('en-US')} parameters`);
    if (r.shards) out.push(`split model: ${r.shards.length} shards`, ...r.shards.map((s: any, i: number) => `  ${i + 1}: ${s.path} (${mib(s.bytes)}, ${s.tensors} tensors)`));
    out.push(...hyperparameterLines(r.hyperparameters));
    out.push(`output head: ${r.outputHead}`, '');
    out.push(table(Object.entries(r.types as Record<string, any>).map(([k, v]) => [k, v.tensors, v.parameters.toLocaleString('en-US'), mib(v.bytes)]), ['type', 'tensors', 'parameters', 'size']));
    const roles = r.roles as { pattern: string; scored: boolean; matmul: boolean; reason: string; count: number }[];
    const scored = roles.filter((x) => x.scored);
    out.push('', `scored by the selection (${scored.reduce((a, x) => a + x.count, 0)} tensors): ${scored.map((x) => `${x.pattern} (${x.count})`).join(', ') || 'none'}`);
    out.push('excluded (never changed):');
    for (const x of roles.filter((y) => !y.scored)) out.push(`  ${x.pattern}${x.count > 1 ? ` (${x.count})` : ''}${x.matmul ? ' [statistics collected]' : ''}: ${x.reason}`);
    if (r.patched.newFile) out.push('', 'patched by mathneuro (new file):', ...Object.entries(r.patched.newFile).map(([k, v]) => `  ${k} = ${String(v)}`));
    if (r.patched.inPlace) out.push('', `patched in place${r.patched.inPlace.complete ? '' : ' (interrupted)'}: undo journal ${r.patched.inPlace.journal} (mathneuro unpatch restores the original)`);
    if (r.tensors) out.push('', table(r.tensors.map((t: any) => [t.name, t.type, t.shape.join('x'), t.bytes, ...(r.shards ? [t.shard] : [])]), ['tensor', 'type', 'shape', 'bytes', ...(r.shards ? ['shard'] : [])]));
  } else if (r.kind === 'statistics') {
    out.push(`${r.path}: statistics of ${r.model.fileName || '?'}: ${r.samples} samples, ${r.tokens} tokens, ${r.weights} weights; datasets ${r.datasets.join(', ') || '?'}`);
    if (!r.hasNormSum) out.push('plain importance matrix: no per-sample norms (MathNeuro scores need them; wanda-row works)');
    if (r.tensors) out.push('', table(r.tensors.map((t: any) => [t.name, t.nIn, t.nMat, t.tokens, t.meanNormSum.toPrecision(4), t.meanSum2.toPrecision(4)]), ['weight', 'n_in', 'matrices', 'tokens', 'mean norm_sum', 'mean sum2']));
  } else if (r.kind === 'selection') {
    out.push(`${r.path}: selection v${r.version}, ${r.method}, K = ${r.topK.join(', ')}, ${r.tensorCount} tensors, made ${r.createdAt}`);
    out.push(`model ${r.model.path} (${r.model.name || 'unnamed'}, sha256 ${r.model.sha256?.slice(0, 16) ?? '?'}...); statistics ${r.statistics.math.path}${r.statistics.general ? ` / ${r.statistics.general.path}` : ''}`, '');
    out.push(table(r.totals.map((t: any) => [t.topK, t.selected.toLocaleString('en-US'), `${(100 * t.fractionOfModel).toFixed(3)}%`, `${(100 * t.fractionOfScored).toFixed(3)}%`]), ['K', 'selected', 'of model', 'of scored']));
    if (r.tensors) out.push('', table(r.tensors.map((t: any) => [t.name, t.type, t.shape.join('x'), ...t.counts]), ['tensor', 'type', 'shape', ...r.topK.map((k: number) => `K=${k}`)]));
  } else {
    out.push(`${r.path}: undo journal of ${r.model ?? '? (header incomplete: nothing was changed)'}`);
    out.push(`${r.records} ranges, ${r.bytes.toLocaleString('en-US')} original bytes, ${r.complete ? 'patch complete' : 'patch interrupted'}${r.tornBytes ? `, ${r.tornBytes} bytes of an unfinished record (ignored)` : ''}`);
    if (r.shards) out.push(`split model: ${r.shards.length} shards`, ...r.shards.map((s: any, i: number) => `  ${i + 1}: ${s.file} (sha256 ${s.sha256.slice(0, 16)}...)`));
    if (r.provenance) out.push(...Object.entries(r.provenance).map(([k, v]) => `  ${k} = ${String(v)}`));
  }
  io.stdout.write(out.join('\n') + '\n');
}

export const command: Command = {
  name: 'inspect',
  summary: 'show what a model, statistics file, selection file or undo journal holds',
  help: `usage: mathneuro inspect <file> [--tensors] [--json]

Recognises the file by its content: a GGUF model (the hyperparameters llama.cpp reads: context,
layers, embedding, heads and KV heads, experts, vocabulary and tokenizer, rope, chat template;
types, sizes, whether mathneuro patched it), a
statistics file (samples, tokens, weights), a selection file (method, K, counts) or an undo journal.

  --tensors   list every tensor / weight
${globalHelp}

examples:
  mathneuro inspect model.gguf
  mathneuro inspect model.mnsel --tensors
  mathneuro inspect math.stats.gguf --json`,
  async run(argv, io) {
    const { values, positionals } = parse(argv, { tensors: { type: 'boolean' } });
    if (positionals.length !== 1) throw new UsageError('expected one file');
    const file = positionals[0];
    const magic = magicOf(file);
    let result: Record<string, unknown>;
    if (magic.startsWith('MNSEL')) result = inspectSelection(file, !!values.tensors);
    else if (magic.startsWith('MNUNDO')) result = inspectJournal(file);
    else if (magic.startsWith('GGUF')) {
      const info = readGgufSync(file);
      result = info.metadata.get('general.type') === 'imatrix' ? await inspectStats(file, !!values.tensors) : await inspectModel(file, !!values.tensors);
    } else throw new MathneuroError('EDATA', `${file} is not a GGUF, selection file or undo journal`);
    if (values.json) writeJson(io, { ok: true, ...result });
    else print(io, result);
    return 0;
  },
};
