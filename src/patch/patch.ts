// Patching a GGUF: scale (or zero) the selected weights. Two modes:
// - new file (default): a temporary file beside the output, renamed into place at the end; the
//   header is the source's plus mathneuro.* provenance keys, every unchanged byte copied as is.
// - in place: the model is rewritten range by range, each range's original bytes appended to an
//   undo journal and synced first; `unpatchModel` restores the original bit-exactly.
import { closeSync, existsSync, fsyncSync, openSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import path from 'node:path';
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { MathneuroError } from '../errors.ts';
import { fsyncDirectory, removeStaleTemporaries, temporaryPath, writeFailure } from '../core/atomic-file.ts';
import { readGgufSync, type GgufInfo, type GgufMetadataEntry, type GgufTensorInfo } from '../gguf/reader.ts';
import { modelFiles, openModelSync, splitCountOfName, splitPath, splitPrefix, type GgufModel } from '../gguf/model.ts';
import { GGUF_VALUE } from '../gguf/types.ts';
import { loadNative } from '../native.ts';
import { codecTypeByName, codecTypeInfo, type RequantizeStrategy } from '../core/codec.ts';
import { MASK_DEFLATE, SelectionFile } from '../select/file.ts';
import { planTensors, selectTensors, type ColumnStatistics, type SelectionMethod, type StatisticsSource } from '../select/select.ts';
import { readExactly, readTensorBytes, sha256File, sha256Files } from '../core/tensor-io.ts';
import { realPath, sameFile } from '../paths.ts';
import { JournalWriter, journalPathFor, readJournal, readRecordData, type JournalHeader, type JournalShard } from './journal.ts';
import { RealizedScaleReport, type RealizedScaleRow } from './realized.ts';
import { sha256InBackground } from '../core/background-hash.ts';
import { mergeRanges, patchTensorInPlace, upcastTensor } from './tensor-patch.ts';

export const PATCH_VERSION = 1;
export const DEFAULT_SCALE = 1.1;
const JOURNAL_MERGE_GAP_BYTES = 256;
/** Stands in the new header for the source's sha256 (64 characters) until the hash is known. */
const SHA256_PENDING = 'mathneuro-sha256-pending-0123456789abcdef0123456789abcdef0123456';

export interface PatchSourceInfo { path: string; sha256?: string }

export interface PatchOptions {
  /** the GGUF to patch */
  model: string;
  /** new-file mode: the output path (must differ from model) */
  out?: string;
  /** rewrite `model` itself, with an undo journal beside it (default false) */
  inPlace?: boolean;
  /** a selection file to replay; otherwise the selection is made from the statistics */
  selection?: string;
  /** statistics (needed without a selection file; math also serves as importance matrix) */
  math?: StatisticsSource & { path?: string };
  general?: StatisticsSource & { path?: string };
  /** selection method when replaying from statistics (default 'mathneuro') */
  method?: SelectionMethod;
  /** K: with statistics, required; with a selection file, picks one of its K */
  topK?: number;
  seed?: number;
  includeOutput?: boolean;
  /** factor for the selected weights (default 1.1); ignored with prune */
  scale?: number;
  /** set the selected weights to zero instead */
  prune?: boolean;
  /** requantization of touched blocks (default 'best') */
  strategy?: RequantizeStrategy;
  /** new-file mode: store tensors with selected weights in this type so the change holds */
  upcast?: 'q8_0' | 'f16';
  /** use the math statistics' sums of squares as importance matrix when requantizing (default true when given) */
  useImportance?: boolean;
  /** overwrite an existing output; patch a file that mathneuro already patched (default false) */
  force?: boolean;
  /** threads for selecting and requantizing (default: all cores); the output does not depend on it */
  threads?: number;
  /**
   * new-file mode: stream every byte through buffers instead of copying the file inside the kernel
   * and patching the copy's tensors where they lie (default false; the output is the same)
   */
  streamCopy?: boolean;
  onProgress?: (p: PatchProgress) => void;
  signal?: AbortSignal;
}

export interface PatchProgress { phase: 'hash' | 'select' | 'patch' | 'copy' | 'verify' | 'restore'; done: number; total: number; item?: string }

export interface PatchedTensor {
  name: string;
  type: string;
  selectedWeights: number;
  blocksTouched: number;
  bytesChanged: number;
  /** with upcast: the stored type and sizes */
  upcastTo?: string;
  bytesBefore?: number;
  bytesAfter?: number;
}

export interface PatchResult {
  mode: 'new-file' | 'in-place';
  source: { path: string; name: string; sha256: string; bytes: number };
  /** for a split model: path is the first shard, bytes all shards together, shards every file */
  output: { path: string; bytes: number; shards?: string[] };
  journal?: string;
  method: SelectionMethod;
  topK: number;
  intervention: 'scale' | 'prune';
  scale: number;
  selectedWeights: number;
  modelParameters: number;
  tensorsPatched: number;
  blocksTouched: number;
  bytesChanged: number;
  upcast?: { type: string; tensors: number; bytesBefore: number; bytesAfter: number; extraBytes: number };
  realized: RealizedScaleRow[];
  tensors: PatchedTensor[];
  elapsedMs: number;
}

/** Where a tensor's mask comes from: a selection file, or masks computed up front from statistics. */
interface MaskSource {
  method: SelectionMethod;
  topK: number;
  seed?: number;
  description: GgufMetadataEntry[];
  /** sha256 of the model the selection was made on, when known */
  modelSha256?: string;
  names: Set<string>;
  count(name: string): number;
  mask(name: string): Uint8Array;
}

const str = (key: string, value: string): GgufMetadataEntry => ({ key, type: GGUF_VALUE.STRING, value });
const f64 = (key: string, value: number): GgufMetadataEntry => ({ key, type: GGUF_VALUE.FLOAT64, value });
const u32 = (key: string, value: number): GgufMetadataEntry => ({ key, type: GGUF_VALUE.UINT32, value });

function modelName(info: GgufInfo): string {
  const v = info.metadata.get('general.name');
  return typeof v === 'string' && v ? v : path.basename(info.path);
}

function sourceLabel(file: string, sha256: string) { return `${path.basename(file)} sha256:${sha256}`; }

function checkAbort(signal?: AbortSignal) {
  if (signal?.aborted) throw new MathneuroError('EABORT', 'patching cancelled');
}

async function maskSource(info: GgufInfo, options: PatchOptions): Promise<MaskSource> {
  if (options.selection) {
    const file = SelectionFile.open(options.selection);
    const q = file.kIndex(options.topK);
    const idx = file.index;
    if (idx.model.tensorCount !== info.tensors.length) throw new MathneuroError('ESELECTION', `${options.selection} was made for a model with ${idx.model.tensorCount} tensors, ${info.path} has ${info.tensors.length}`);
    for (const t of idx.tensors) {
      const m = info.tensorByName.get(t.name);
      if (!m || m.numel !== t.numel || m.shape.join('x') !== t.shape.join('x')) throw new MathneuroError('ESELECTION', `${options.selection} does not match ${info.path}: tensor ${t.name} ${m ? `is ${m.shape.join('x')}, the selection has ${t.shape.join('x')}` : 'is missing'}`);
    }
    const sha = sha256File(options.selection);
    return {
      method: idx.method, topK: idx.topK[q], seed: idx.seed, modelSha256: idx.model.sha256,
      description: [str('mathneuro.selection', sourceLabel(options.selection, sha)),
        str('mathneuro.statistics.math', idx.statistics.math.sha256 ? sourceLabel(idx.statistics.math.path, idx.statistics.math.sha256) : path.basename(idx.statistics.math.path)),
        ...(idx.statistics.general ? [str('mathneuro.statistics.general', idx.statistics.general.sha256 ? sourceLabel(idx.statistics.general.path, idx.statistics.general.sha256) : path.basename(idx.statistics.general.path))] : [])],
      names: new Set(idx.tensors.filter((t) => t.counts[q] > 0).map((t) => t.name)),
      count: (name) => file.tensor(name)?.counts[q] ?? 0,
      mask: (name) => file.mask(name, q),
    };
  }
  if (!options.math) throw new MathneuroError('EUSAGE', 'patching needs a selection file or the statistics (math, and general for mathneuro)');
  if (options.topK === undefined) throw new MathneuroError('EUSAGE', 'patching from statistics needs K (--top-k)');
  const method = options.method ?? 'mathneuro';
  const plan = planTensors(info, options.math, { includeOutput: options.includeOutput });
  const masks = new Map<string, { deflated: Buffer; count: number }>();
  for await (const selection of selectTensors(info, plan, {
    method, topK: [options.topK], math: options.math, general: options.general, seed: options.seed, includeOutput: options.includeOutput,
    threads: options.threads, signal: options.signal,
    onProgress: (p) => options.onProgress?.({ phase: 'select', done: p.done, total: p.total, item: p.tensor }),
  })) {
    if (selection.counts[0] > 0) masks.set(selection.tensor.name, { deflated: deflateRawSync(selection.masks[0], MASK_DEFLATE), count: selection.counts[0] });
  }
  const statsLabel = (s: { path?: string }, fallback: string) => (s.path ? sourceLabel(s.path, sha256File(s.path)) : fallback);
  return {
    method, topK: options.topK, seed: options.seed,
    description: [str('mathneuro.statistics.math', statsLabel(options.math, 'in-memory')),
      ...(options.general ? [str('mathneuro.statistics.general', statsLabel(options.general, 'in-memory'))] : [])],
    names: new Set(masks.keys()),
    count: (name) => masks.get(name)?.count ?? 0,
    mask: (name) => new Uint8Array(inflateRawSync(masks.get(name)!.deflated)),
  };
}

function provenance(info: GgufInfo, sha256: string, source: MaskSource, options: PatchOptions, scale: number, strategy: RequantizeStrategy): GgufMetadataEntry[] {
  const pkgVersion = '0.1.0';
  return [
    u32('mathneuro.patch.version', PATCH_VERSION),
    str('mathneuro.tool', `mathneuro ${pkgVersion}`),
    str('mathneuro.method', source.method),
    f64('mathneuro.top_k', source.topK),
    str('mathneuro.intervention', options.prune ? 'prune' : 'scale'),
    f64('mathneuro.scale', scale),
    str('mathneuro.requantization', strategy),
    ...(options.upcast ? [str('mathneuro.upcast', options.upcast)] : []),
    ...(source.seed !== undefined && source.method === 'random' ? [u32('mathneuro.seed', source.seed)] : []),
    ...source.description,
    str('mathneuro.source.name', modelName(info)),
    str('mathneuro.source.file', path.basename(info.path)),
    str('mathneuro.source.sha256', sha256),
    // a split model: the source's sha256 is that of its shards' bytes one after the other
    ...(modelFiles(info).length > 1 ? [u32('mathneuro.source.shards', modelFiles(info).length)] : []),
    str('mathneuro.patched_at', new Date().toISOString()),
  ];
}

function writeAll(fd: number, bytes: Uint8Array, position: number): number {
  let done = 0;
  while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done, position + done);
  return position + bytes.length;
}

let kernelCopy: boolean | undefined;

/** Copies a range inside the kernel; false (nothing copied) where the platform or file systems cannot. */
function kernelCopyRange(src: number, dst: number, from: number, to: number, length: number): boolean {
  const native = loadNative();
  kernelCopy ??= typeof native.copyFileRange === 'function';
  if (!kernelCopy || length <= 0) return false;
  const n = native.copyFileRange!(src, dst, from, to, length);
  if (n < 0) { kernelCopy = false; return false; }
  if (n !== length) throw new MathneuroError('EIO', `source model: unexpected end of file at byte ${from + n}`);
  return true;
}

/**
 * Copies [from, from + length) of src to dst at `to`: inside the kernel (copy_file_range, as cp
 * does) where the platform and file systems allow, else through an 8 MiB buffer.
 */
function copyRange(src: number, dst: number, from: number, to: number, length: number, chunk: Buffer) {
  if (kernelCopyRange(src, dst, from, to, length)) return;
  let done = 0;
  while (done < length) {
    const n = Math.min(chunk.length, length - done);
    const view = chunk.subarray(0, n);
    readExactly(src, view, from + done, 'source model');
    writeAll(dst, view, to + done);
    done += n;
  }
}

function importanceOf(options: PatchOptions, name: string): ColumnStatistics | undefined {
  if (options.useImportance === false || !options.math) return undefined;
  return options.math.weights.get(name);
}

/** Patches a model into a new file, or in place with an undo journal. */
export async function patchModel(options: PatchOptions): Promise<PatchResult> {
  const started = Date.now();
  // the model's real file: a symbolic link is followed, so the journal lives beside the real file
  // and an output that is the model through a link is recognised
  if (existsSync(options.model)) options = { ...options, model: realPath(options.model) };
  const scale = options.prune ? 0 : options.scale ?? DEFAULT_SCALE;
  if (!Number.isFinite(scale)) throw new MathneuroError('EUSAGE', `the scale must be a finite number, got ${scale}`);
  if (options.prune && options.scale !== undefined) throw new MathneuroError('EUSAGE', 'give either a scale or prune, not both');
  const strategy = options.strategy ?? 'best';
  if (options.inPlace && options.out && !sameFile(options.model, options.out)) throw new MathneuroError('EUSAGE', 'in-place patching writes the model itself: give no output path');
  if (options.inPlace && options.upcast) throw new MathneuroError('EUSAGE', '--upcast changes the tensor layout and needs a new file (not --in-place)');
  if (!options.inPlace) {
    if (!options.out) throw new MathneuroError('EUSAGE', 'an output path is needed (or --in-place)');
    if (sameFile(options.model, options.out)) throw new MathneuroError('EUSAGE', 'the output is the source model (links resolved): use --in-place to patch it in place');
    if (existsSync(options.out) && !options.force) throw new MathneuroError('EEXIST', `${options.out} exists (--force overwrites it)`);
  }
  const upcastType = options.upcast ? codecTypeByName(options.upcast) : undefined;
  if (options.upcast && !upcastType) throw new MathneuroError('EUSAGE', `unknown upcast type ${options.upcast}`);

  const info = openModelSync(options.model);
  const outs = options.inPlace ? [] : outputShards(info, options.out!);
  for (const out of outs.slice(1)) {
    if (info.shards.some((shard) => sameFile(shard.path, out))) throw new MathneuroError('EUSAGE', `the output shard ${out} is a shard of the source model: use --in-place to patch it in place`);
    if (existsSync(out) && !options.force) throw new MathneuroError('EEXIST', `${out} exists (--force overwrites it)`);
  }
  const journalPath = journalPathFor(options.model);
  if (existsSync(journalPath)) throw new MathneuroError('EEXIST', `${options.model} is patched in place (undo journal ${journalPath}); run mathneuro unpatch ${options.model} first`);
  if (info.metadata.has('mathneuro.method') && !options.force) {
    throw new MathneuroError('EEXIST', `${options.model} was already patched by mathneuro (${String(info.metadata.get('mathneuro.method'))}, K=${String(info.metadata.get('mathneuro.top_k'))}); patch its source instead, or --force to patch it again`);
  }

  // A new file gets the source's sha256 in its header: it is computed on a worker thread while the
  // copy is written (a placeholder of the same length is replaced before the file is committed).
  // In place, the undo journal needs it before the first byte changes.
  const hashing = options.inPlace ? undefined : sha256InBackground(modelFiles(info));
  try {
    const source = await maskSource(info, options);
    checkAbort(options.signal);
    let sha256 = SHA256_PENDING;
    const checkSha = (sha: string) => {
      if (source.modelSha256 && source.modelSha256 !== sha && !options.force) {
        throw new MathneuroError('ESELECTION', `${options.selection} was made on another file (sha256 ${source.modelSha256.slice(0, 12)}...) than ${options.model} (${sha.slice(0, 12)}...); --force applies it anyway`);
      }
    };
    let shardSha256: string[] = [];
    if (!hashing) {
      ({ sha256, files: shardSha256 } = sha256Files(modelFiles(info), (p) => options.onProgress?.({ phase: 'hash', done: p.bytesDone, total: p.bytesTotal })));
      checkSha(sha256);
    }
    const entries = provenance(info, sha256, source, options, scale, strategy);
    const realized = new RealizedScaleReport(scale);
    const tensors: PatchedTensor[] = [];
    const patchable = info.tensors.filter((t) => source.names.has(t.name));
    for (const t of patchable) {
      const type = codecTypeInfo(t.type);
      if (!upcastType && (!type?.canQuantize || !type.canDequantize)) throw new MathneuroError('EQUANT', `${t.name}: ggml cannot requantize ${t.typeName}; use --upcast f16 or q8_0 (new file)`);
      if (!upcastType && type?.requiresImatrix && !importanceOf(options, t.name)) throw new MathneuroError('EQUANT', `${t.name} is ${t.typeName}, which ggml only quantizes with an importance matrix: pass the math statistics (--math); their sums of squares serve as one`);
    }
    const finish = (r: Omit<PatchResult, 'source' | 'method' | 'topK' | 'intervention' | 'scale' | 'modelParameters' | 'realized' | 'tensors' | 'elapsedMs' | 'selectedWeights' | 'tensorsPatched' | 'blocksTouched' | 'bytesChanged'>): PatchResult => ({
      source: { path: options.model, name: modelName(info), sha256, bytes: info.totalBytes },
      method: source.method, topK: source.topK, intervention: options.prune ? 'prune' : 'scale', scale,
      modelParameters: info.tensors.reduce((a, t) => a + t.numel, 0),
      ...r,
      selectedWeights: tensors.reduce((a, t) => a + t.selectedWeights, 0),
      tensorsPatched: tensors.length,
      blocksTouched: tensors.reduce((a, t) => a + t.blocksTouched, 0),
      bytesChanged: tensors.reduce((a, t) => a + t.bytesChanged, 0),
      realized: realized.rows(), tensors, elapsedMs: Date.now() - started,
    });

    if (options.inPlace) {
      await patchInPlace(info, source, entries, sha256, shardSha256, journalPath, options, scale, strategy, realized, tensors);
      return finish({ mode: 'in-place', output: { path: options.model, bytes: info.totalBytes, ...(info.shards.length > 1 ? { shards: modelFiles(info) } : {}) }, journal: journalPath });
    }
    const written = await patchNewFile(info, outs, source, entries, options, scale, strategy, realized, tensors, upcastType?.id, async (fd, header) => {
      // before the copy is committed: the real sha256 replaces the placeholder in its header
      options.onProgress?.({ phase: 'hash', done: 0, total: info.totalBytes });
      sha256 = await hashing!.result;
      checkSha(sha256);
      const at = Buffer.from(header).indexOf(SHA256_PENDING);
      if (at < 0) throw new MathneuroError('EPATCH', 'the sha256 placeholder is missing from the new header');
      writeAll(fd, Buffer.from(sha256, 'latin1'), at);
      options.onProgress?.({ phase: 'hash', done: info.totalBytes, total: info.totalBytes });
    });
    const upcastTensors = tensors.filter((t) => t.upcastTo);
    return finish({
      mode: 'new-file', output: { path: options.out!, bytes: written, ...(outs.length > 1 ? { shards: outs } : {}) },
      upcast: upcastType ? {
        type: upcastType.name, tensors: upcastTensors.length,
        bytesBefore: upcastTensors.reduce((a, t) => a + (t.bytesBefore ?? 0), 0),
        bytesAfter: upcastTensors.reduce((a, t) => a + (t.bytesAfter ?? 0), 0),
        extraBytes: written - info.totalBytes,
      } : undefined,
    });
  } finally {
    hashing?.cancel();
  }
}

/**
 * The output files of a new-file patch: `out` for a single file; for a model in N shards, N shards
 * named as llama.cpp names them (`out` must be `<name>-00001-of-0000N.gguf`).
 */
function outputShards(info: GgufModel, out: string): string[] {
  const n = info.shards.length;
  if (n === 1) return [out];
  const prefix = splitPrefix(out, 0, n);
  if (prefix === undefined) throw new MathneuroError('EUSAGE', `${info.path} is a model in ${n} shards and is written as ${n} shards again: name the output <name>${splitPath('', 0, n)} (llama.cpp finds the other shards by that name)`);
  return info.shards.map((_, i) => splitPath(prefix, i, n));
}

/**
 * New-file mode: every shard of the source is written to a temporary file beside its output (shard 0,
 * whose header waits for the source's sha256, last), and only when all are written and synced are
 * they renamed into place. On any failure no temporary and no output shard is left.
 */
async function patchNewFile(info: GgufModel, outs: string[], source: MaskSource, entries: GgufMetadataEntry[], options: PatchOptions, scale: number, strategy: RequantizeStrategy, realized: RealizedScaleReport, tensors: PatchedTensor[], upcastType: number | undefined, beforeCommit: (fd: number, header: Uint8Array) => Promise<void>): Promise<number> {
  const order = info.shards.map((_, i) => i);
  order.push(order.shift()!);
  const temps: string[] = [];
  const renamed: string[] = [];
  let written = 0;
  try {
    for (const i of order) {
      const r = await writePatchedShard(info.shards[i], outs[i], source, i === 0 ? entries : [], options, scale, strategy, realized, tensors, upcastType, i === 0 ? beforeCommit : undefined);
      temps[i] = r.temp;
      written += r.end;
    }
    checkAbort(options.signal);
    for (const out of outs) if (existsSync(out) && !options.force) throw new MathneuroError('EEXIST', `${out} appeared while patching; not overwriting it`);
    // the first shard (the one llama.cpp opens) last: a set cut short here is never loadable
    for (const i of order) { renameSync(temps[i], outs[i]); renamed.push(outs[i]); }
    for (const dir of new Set(outs.map((o) => path.dirname(path.resolve(o))))) fsyncDirectory(dir);
    return written;
  } catch (e) {
    for (const temp of temps) if (temp) rmSync(temp, { force: true });
    for (const out of renamed) rmSync(out, { force: true });
    throw writeFailure(e, outs[0], outs.length > 1 ? `none of the ${outs.length} shards was left` : 'no partial file was left');
  }
}

/** Writes one patched file (a shard, or the whole model) to a temporary file: its path and size. */
async function writePatchedShard(info: GgufInfo, out: string, source: MaskSource, entries: GgufMetadataEntry[], options: PatchOptions, scale: number, strategy: RequantizeStrategy, realized: RealizedScaleReport, tensors: PatchedTensor[], upcastType: number | undefined, beforeCommit?: (fd: number, header: Uint8Array) => Promise<void>): Promise<{ temp: string; end: number }> {
  const native = loadNative();
  removeStaleTemporaries(out);
  // With upcast, the tensors that hold selected weights change type; the others keep theirs.
  const typeOf = (t: GgufTensorInfo) => (upcastType !== undefined && source.names.has(t.name) ? upcastType : t.type);
  let header: { header: Uint8Array; tensors: { name: string; offset: number; byteSize: number }[]; alignment: number };
  if (upcastType === undefined) {
    header = native.ggufRewriteHeader(info.path, entries, []);
  } else {
    if (info.alignment !== 32) throw new MathneuroError('EPATCH', `--upcast supports the default GGUF alignment (32), ${info.path} uses ${info.alignment}`);
    const keep = info.metadataEntries.filter((e) => !entries.some((n) => n.key === e.key));
    header = native.ggufBuildHeader({ metadata: [...keep, ...entries], tensors: info.tensors.map((t) => ({ name: t.name, type: typeOf(t), shape: t.shape })) });
  }
  const layout = new Map(header.tensors.map((t) => [t.name, t]));
  for (const t of info.tensors) {
    const l = layout.get(t.name);
    if (!l) throw new MathneuroError('EPATCH', `the new header lost tensor ${t.name}`);
    if (upcastType === undefined && (l.offset !== t.offset || l.byteSize !== t.byteSize)) throw new MathneuroError('EPATCH', `the rewritten header moves tensor ${t.name} (${t.offset} -> ${l.offset}); the source layout is not canonical`);
  }
  const dataOffset = header.header.length;
  const temp = temporaryPath(out);
  const src = openSync(info.path, 'r');
  let dst: number | undefined;
  try {
    dst = openSync(temp, 'w+');
    writeAll(dst, header.header, 0);
    const chunk = Buffer.allocUnsafe(8 << 20);
    const ordered = [...info.tensors].sort((a, b) => a.offset - b.offset);
    const totalBytes = info.fileSize - info.dataOffset;
    let end = dataOffset;
    // Fast path (Linux): the whole data section is copied inside the kernel, as cp does, and each
    // patched tensor is then mapped from the copy and patched where it lies, so only the blocks
    // that change are written. Elsewhere, or when the kernel cannot, the loop below streams it.
    let copied = false;
    if (upcastType === undefined && !options.streamCopy && typeof native.mapFileRange === 'function' && kernelCopyRange(src, dst, info.dataOffset, dataOffset, totalBytes)) {
      copied = true;
      end = dataOffset + totalBytes;
      for (const t of ordered) {
        if (!source.names.has(t.name)) continue;
        checkAbort(options.signal);
        options.onProgress?.({ phase: 'patch', done: t.offset, total: totalBytes, item: t.name });
        const mask = source.mask(t.name);
        const at = dataOffset + t.offset;
        const patchOptions = { scale, strategy, importance: importanceOf(options, t.name), realized, ranges: false, threads: options.threads };
        const mapped = native.mapFileRange(dst, at, t.byteSize);
        let r: Awaited<ReturnType<typeof patchTensorInPlace>>;
        if (mapped) {
          try { r = await patchTensorInPlace(t, new Uint8Array(mapped), mask, patchOptions); } finally { native.unmapFileRange!(mapped); }
        } else {
          r = await patchTensorInPlace(t, readTensorBytes(src, t), mask, patchOptions);
          writeAll(dst, r.bytes, at);
        }
        tensors.push({ name: t.name, type: t.typeName, selectedWeights: r.selectedWeights, blocksTouched: r.blocksTouched, bytesChanged: r.bytesChanged });
      }
    }
    let pending: { bytes: Uint8Array; at: number } | undefined;
    // two buffers of the largest patched tensor, used in turn (one is being written while the
    // other is patched), so the kernel does not map and zero fresh memory for every tensor
    const largest = ordered.reduce((m, t) => (source.names.has(t.name) ? Math.max(m, t.byteSize) : m), 0);
    const buffers = !copied && upcastType === undefined && largest > 0 ? [new Uint8Array(largest), new Uint8Array(largest)] : [];
    let turn = 0;
    const flush = () => { if (pending) { writeAll(dst!, pending.bytes, pending.at); pending = undefined; } };
    let sourceCursor = info.dataOffset;   // next source byte not yet accounted for
    for (const t of copied ? [] : ordered) {
      checkAbort(options.signal);
      const target = layout.get(t.name)!;
      const at = dataOffset + target.offset;
      if (upcastType === undefined) {
        // the bytes between tensors (padding) are copied as they are
        copyRange(src, dst, sourceCursor, dataOffset + (sourceCursor - info.dataOffset), t.absoluteOffset - sourceCursor, chunk);
      } else if (at > end) {
        writeAll(dst, new Uint8Array(at - end), end);
      }
      if (source.names.has(t.name)) {
        options.onProgress?.({ phase: 'patch', done: t.offset, total: totalBytes, item: t.name });
        let bytes: Uint8Array;
        if (buffers.length) {
          bytes = buffers[turn].subarray(0, t.byteSize);
          turn ^= 1;
          readExactly(src, bytes, t.absoluteOffset, `tensor ${t.name}`);
        } else bytes = readTensorBytes(src, t);
        const mask = source.mask(t.name);
        if (upcastType !== undefined) {
          flush();
          const up = upcastTensor(t, bytes, mask, upcastType, { scale, realized });
          writeAll(dst, up.bytes, at);
          tensors.push({ name: t.name, type: t.typeName, selectedWeights: up.selectedWeights, blocksTouched: 0, bytesChanged: up.bytes.length, upcastTo: codecTypeInfo(upcastType)!.name, bytesBefore: t.byteSize, bytesAfter: up.bytes.length });
          end = at + up.bytes.length;
        } else {
          // the previous tensor is written while the native threads patch this one
          const job = patchTensorInPlace(t, bytes, mask, { scale, strategy, importance: importanceOf(options, t.name), realized, ranges: false, threads: options.threads });
          flush();
          const r = await job;
          pending = { bytes: r.bytes, at };
          tensors.push({ name: t.name, type: t.typeName, selectedWeights: r.selectedWeights, blocksTouched: r.blocksTouched, bytesChanged: r.bytesChanged });
          end = at + t.byteSize;
        }
      } else {
        options.onProgress?.({ phase: 'copy', done: t.offset, total: totalBytes, item: t.name });
        copyRange(src, dst, t.absoluteOffset, at, t.byteSize, chunk);
        end = at + t.byteSize;
      }
      sourceCursor = t.absoluteOffset + t.byteSize;
    }
    flush();
    if (copied) { /* the data section is complete */ } else if (upcastType === undefined) {
      copyRange(src, dst, sourceCursor, dataOffset + (sourceCursor - info.dataOffset), info.fileSize - sourceCursor, chunk);
      end = dataOffset + (info.fileSize - info.dataOffset);
    } else if (end % 32 !== 0) {
      const padded = Math.ceil(end / 32) * 32;
      writeAll(dst, new Uint8Array(padded - end), end);
      end = padded;
    }
    await beforeCommit?.(dst, header.header);
    fsyncSync(dst);
    closeSync(dst);
    dst = undefined;
    return { temp, end };
  } catch (e) {
    if (dst !== undefined) { try { closeSync(dst); } catch { /* closing after an error */ } }
    rmSync(temp, { force: true });
    throw e;
  } finally {
    closeSync(src);
  }
}

async function patchInPlace(info: GgufModel, source: MaskSource, entries: GgufMetadataEntry[], sha256: string, shardSha256: string[], journalPath: string, options: PatchOptions, scale: number, strategy: RequantizeStrategy, realized: RealizedScaleReport, tensors: PatchedTensor[]): Promise<void> {
  const provenanceObject = Object.fromEntries(entries.map((e) => [e.key, e.value]));
  const split = info.shards.length > 1;
  const header: JournalHeader = {
    format: 'mathneuro-undo', version: 1, model: path.resolve(info.path), sourceSha256: sha256, fileSize: info.fileSize,
    createdAt: new Date().toISOString(), provenance: provenanceObject,
    // a split model: every shard's name, sha256 and size; records carry their shard
    ...(split ? { shards: info.shards.map((s, i): JournalShard => ({ file: path.basename(s.path), sha256: shardSha256[i], fileSize: s.fileSize })) } : {}),
  };
  const fds: number[] = [];
  const closeAll = () => { for (const fd of fds.splice(0)) closeSync(fd); };
  let journal: JournalWriter | undefined;
  try {
    for (const s of info.shards) fds.push(openSync(s.path, 'r+'));
    journal = JournalWriter.create(journalPath, header);
    const patchable = info.tensors.filter((t) => source.names.has(t.name));
    let done = 0;
    for (const t of patchable) {
      checkAbort(options.signal);
      options.onProgress?.({ phase: 'patch', done: done++, total: patchable.length, item: t.name });
      const shard = t.shard ?? 0;
      const fd = fds[shard];
      const bytes = readTensorBytes(fd, t);
      const original = new Uint8Array(bytes);
      const r = await patchTensorInPlace(t, bytes, source.mask(t.name), { scale, strategy, importance: importanceOf(options, t.name), realized, mergeGap: JOURNAL_MERGE_GAP_BYTES, threads: options.threads });
      // Nearby ranges (single F16 weights) are journaled and written as one: the bytes between
      // them are unchanged, so writing them again changes nothing and saves records.
      const ranges = mergeRanges(r.changed);   // already merged natively across the gap
      // journal first (synced), then the model
      journal.append(ranges.map((c) => ({ offset: t.absoluteOffset + c.offset, original: original.subarray(c.offset, c.offset + c.length), shard: split ? shard : undefined })));
      for (const c of ranges) writeAll(fd, r.bytes.subarray(c.offset, c.offset + c.length), t.absoluteOffset + c.offset);
      tensors.push({ name: t.name, type: t.typeName, selectedWeights: r.selectedWeights, blocksTouched: r.blocksTouched, bytesChanged: r.bytesChanged });
    }
    for (const fd of fds) fsyncSync(fd);
    journal.commit({ completedAt: new Date().toISOString(), selectedWeights: tensors.reduce((a, t) => a + t.selectedWeights, 0), tensors: tensors.length });
    journal.close();
    journal = undefined;
  } catch (e) {
    // Leave nothing half-done: put the original bytes back and drop the journal.
    if (journal) {
      try { journal.close(); } catch { /* closing after an error */ }
      closeAll();
      try { await unpatchModel(info.path); } catch (undoError) {
        throw new MathneuroError('EPATCH', `${(e as Error).message}; restoring the original also failed (${(undoError as Error).message}): the undo journal ${journalPath} is kept, run mathneuro unpatch`, { cause: e });
      }
      throw e;
    }
    closeAll();
    throw e;
  }
  closeAll();
}

export interface UnpatchResult {
  model: string;
  journal: string;
  restoredRanges: number;
  restoredBytes: number;
  sha256: string;
  /** the patch had completed (false: it was interrupted and its partial writes were undone) */
  wasComplete: boolean;
  provenance?: Record<string, unknown>;
  /** a split model: every shard restored, with its sha256 (each checked against the journal's) */
  shards?: { path: string; sha256: string }[];
}

/** Restores a model patched in place from its undo journal, verifies the original sha256, removes the journal. */
export async function unpatchModel(model: string, options: { onProgress?: (p: PatchProgress) => void; keepJournal?: boolean } = {}): Promise<UnpatchResult> {
  if (existsSync(model)) model = realPath(model);
  const journalPath = journalPathFor(model);
  if (!existsSync(journalPath)) {
    if (!existsSync(model)) throw new MathneuroError('ENOENT', `no such file: ${model}`);
    let hint = '';
    const named = splitCountOfName(model);
    if (named && named.index > 0 && existsSync(journalPathFor(splitPath(named.prefix, 0, named.count)))) {
      throw new MathneuroError('EJOURNAL', `${model} is shard ${named.index + 1} of a split model patched in place: run mathneuro unpatch ${splitPath(named.prefix, 0, named.count)} (its journal covers every shard)`);
    }
    try {
      const info = readGgufSync(model);
      if (info.metadata.has('mathneuro.method')) hint = ` (it was written as a new file by mathneuro patch from ${String(info.metadata.get('mathneuro.source.file'))}, which is the original)`;
    } catch { /* not a GGUF: the message below says enough */ }
    throw new MathneuroError('EJOURNAL', `${model} has no undo journal (${path.basename(journalPath)}): it was not patched in place${hint}`);
  }
  const contents = readJournal(journalPath);
  if (!contents.header) {
    // killed before the journal header was synced: the model was never written
    rmSync(journalPath, { force: true });
    return { model, journal: journalPath, restoredRanges: 0, restoredBytes: 0, sha256: sha256File(model), wasComplete: false };
  }
  const header = contents.header;
  // a split model: the shards are found beside the first by llama.cpp's naming (as the journal names them otherwise)
  const shards = header.shards ?? [{ file: path.basename(model), sha256: header.sourceSha256, fileSize: header.fileSize }];
  const prefix = header.shards ? splitPrefix(model, 0, shards.length) : undefined;
  const files = header.shards ? shards.map((s, i) => (prefix !== undefined ? splitPath(prefix, i, shards.length) : path.join(path.dirname(model), s.file))) : [model];
  const sizes = files.map((file, i) => {
    if (!existsSync(file)) throw new MathneuroError('ENOENT', `${file} (shard ${i + 1} of ${files.length} of ${model}) is missing; the journal is kept`);
    const size = statSync(file).size;
    if (size !== shards[i].fileSize) throw new MathneuroError('EJOURNAL', `${file} is ${size} bytes, the journal was written for ${shards[i].fileSize}: is it the same file?`);
    return size;
  });
  for (const [i, r] of contents.records.entries()) {
    if (r.shard >= files.length) throw new MathneuroError('EJOURNAL', `journal record ${i} is for shard ${r.shard + 1}, the model has ${files.length}`);
    if (r.offset + r.length > sizes[r.shard]) throw new MathneuroError('EJOURNAL', `journal record ${i} points past the end of ${files[r.shard]}`);
  }
  const fds: number[] = [];
  let restoredBytes = 0;
  try {
    for (const file of files) fds.push(openSync(file, 'r+'));
    for (let i = contents.records.length - 1; i >= 0; i--) {
      const r = contents.records[i];
      options.onProgress?.({ phase: 'restore', done: contents.records.length - 1 - i, total: contents.records.length });
      writeAll(fds[r.shard], readRecordData(journalPath, r), r.offset);
      restoredBytes += r.length;
    }
    for (const fd of fds) fsyncSync(fd);
  } finally {
    for (const fd of fds) closeSync(fd);
  }
  const hashed = sha256Files(files, (p) => options.onProgress?.({ phase: 'verify', done: p.bytesDone, total: p.bytesTotal }));
  const wrong = hashed.files.findIndex((sha, i) => sha !== shards[i].sha256);
  if (wrong >= 0 || hashed.sha256 !== header.sourceSha256) {
    const i = Math.max(0, wrong);
    const sha = wrong >= 0 ? hashed.files[i] : hashed.sha256, expected = wrong >= 0 ? shards[i].sha256 : header.sourceSha256;
    throw new MathneuroError('EJOURNAL', `${files[i]} does not match its original after restoring (sha256 ${sha.slice(0, 12)}..., expected ${expected.slice(0, 12)}...): it was changed by something else since it was patched; the journal is kept`);
  }
  if (!options.keepJournal) rmSync(journalPath, { force: true });
  return {
    model, journal: journalPath, restoredRanges: contents.records.length, restoredBytes, sha256: hashed.sha256, wasComplete: !!contents.commit, provenance: header.provenance,
    ...(header.shards ? { shards: files.map((file, i) => ({ path: file, sha256: hashed.files[i] })) } : {}),
  };
}

/** What kind of patched file this is, if any. */
export function patchState(model: string): { inPlace?: { journal: string; complete: boolean; provenance?: Record<string, unknown> }; newFile?: Record<string, unknown> } {
  const state: ReturnType<typeof patchState> = {};
  if (existsSync(model)) model = realPath(model);
  const journalPath = journalPathFor(model);
  if (existsSync(journalPath)) {
    const c = readJournal(journalPath);
    state.inPlace = { journal: journalPath, complete: !!c.commit, provenance: c.header?.provenance };
  }
  const info = readGgufSync(model);
  const keys = info.metadataEntries.filter((e) => e.key.startsWith('mathneuro.') && !e.key.startsWith('mathneuro.stats.') && !e.key.startsWith('mathneuro.model.'));
  if (info.metadata.has('mathneuro.method')) state.newFile = Object.fromEntries(keys.map((e) => [e.key, e.value]));
  return state;
}


