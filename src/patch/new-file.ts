// New-file mode: every shard of the source is written to a temporary file beside its output and
// renamed into place at the end. One function per way of writing a shard: the source's layout
// (unchanged bytes copied inside the kernel, patched tensors read, patched and written), and the
// upcast (a new layout).
import { closeSync, existsSync, fsyncSync, openSync, renameSync, rmSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { fsyncDirectory, removeStaleTemporaries, temporaryPath, writeFailure } from '../core/atomic-file.ts';
import { codecTypeInfo } from '../core/codec.ts';
import { readExactly, readTensorBytes } from '../core/tensor-io.ts';
import { asMathneuroError, MathneuroError } from '../errors.ts';
import { parsedHeaderBytes, type GgufInfo, type GgufMetadataEntry, type GgufTensorInfo } from '../gguf/reader.ts';
import { splitPath, splitPrefix, type GgufModel } from '../gguf/model.ts';
import { loadNative } from '../native.ts';
import { maskBytes } from '../select/bits.ts';
import { checkAbort, patchedTensor, tensorPatchOptions, writeAll, type PatchJob } from './job.ts';
import { startTensorPatch, upcastTensor, type TensorPatchResult } from './tensor-patch.ts';

export interface NewFileJob extends PatchJob {
  /** the output files, one per source shard */
  outs: string[];
  /** with --upcast: the ggml type id the tensors with selected weights are stored in */
  upcastType?: number;
  /** runs on the first shard's temporary (its descriptor and header) before anything is renamed */
  beforeCommit: (fd: number, header: Uint8Array) => Promise<void>;
}

/**
 * The output files of a new-file patch: `out` for a single file; for a model in N shards, N shards
 * named as llama.cpp names them (`out` must be `<name>-00001-of-0000N.gguf`).
 */
export function outputShards(info: GgufModel, out: string): string[] {
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
export async function patchNewFile(job: NewFileJob): Promise<number> {
  const { info, outs, options } = job;
  const order = info.shards.map((_, i) => i);
  order.push(order.shift()!);
  const temps: string[] = [];
  const renamed: string[] = [];
  let written = 0;
  try {
    for (const i of order) {
      const r = await writePatchedShard(job, info.shards[i], outs[i], i === 0 ? job.entries : [], i === 0 ? job.beforeCommit : undefined);
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

/** A shard being written: its source, its temporary, and where the new header puts each tensor. */
interface ShardWrite {
  job: NewFileJob;
  shard: GgufInfo;
  src: number;
  dst: number;
  /** where the new data section starts (the new header's size) */
  dataOffset: number;
  layout: Map<string, { offset: number; byteSize: number }>;
  /** the shard's tensors in file order */
  ordered: GgufTensorInfo[];
  chunk: Buffer;
}

/**
 * The new header of one shard: the source's rewritten with `entries` (ggml reads the source's on
 * the thread pool: this thread meanwhile keeps a streaming selection going), or (upcast) built anew.
 */
async function shardHeader(job: NewFileJob, info: GgufInfo, entries: GgufMetadataEntry[]): Promise<{ header: Uint8Array; tensors: { name: string; offset: number; byteSize: number }[]; alignment: number }> {
  const native = loadNative();
  const { upcastType, source } = job;
  // With upcast, the tensors that hold selected weights change type; the others keep theirs.
  const typeOf = (t: GgufTensorInfo) => (upcastType !== undefined && source.names.has(t.name) ? upcastType : t.type);
  let header: { header: Uint8Array; tensors: { name: string; offset: number; byteSize: number }[]; alignment: number };
  if (upcastType === undefined) {
    // ggml parses the header bytes the reader validated, where the parse still holds them (else the file)
    try { header = await native.ggufRewriteHeader(info.path, entries, [], parsedHeaderBytes(info), info.dataOffset); } catch (e) { throw asMathneuroError(e, 'EIO'); }
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
  return header;
}

/** Writes one patched file (a shard, or the whole model) to a temporary file: its path and size. */
async function writePatchedShard(job: NewFileJob, info: GgufInfo, out: string, entries: GgufMetadataEntry[], beforeCommit?: (fd: number, header: Uint8Array) => Promise<void>): Promise<{ temp: string; end: number }> {
  removeStaleTemporaries(out);
  const header = await shardHeader(job, info, entries);
  const temp = temporaryPath(out);
  const src = openSync(info.path, 'r');
  let dst: number | undefined;
  try {
    dst = openSync(temp, 'w+');
    writeAll(dst, header.header, 0);
    const w: ShardWrite = {
      job, shard: info, src, dst, dataOffset: header.header.length, layout: new Map(header.tensors.map((t) => [t.name, t])),
      ordered: [...info.tensors].sort((a, b) => a.offset - b.offset), chunk: Buffer.allocUnsafe(8 << 20),
    };
    const end = job.upcastType !== undefined ? await writeUpcast(w) : await writePatched(w);
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

/**
 * The data section in the source's layout: the bytes between patched tensors (unchanged tensors,
 * padding) are copied inside the kernel as cp does, on the thread pool (streamCopy, or where the
 * kernel cannot: through a buffer, on this thread); each patched tensor is read into one of two
 * buffers, patched and written (POSIX: all three on a worker thread, so the copies, the next mask's
 * decoding on this thread, and the next tensor, overlap with it). Two tensors are in flight at most
 * (one with --threads 1, and each copy awaited); their results are recorded in file order.
 */
async function writePatched(w: ShardWrite): Promise<number> {
  const { job, shard, src, dst, dataOffset, chunk } = w;
  const totalBytes = shard.fileSize - shard.dataOffset;
  const kernel = !job.options.streamCopy;
  const nativeIo = process.platform !== 'win32';
  // two buffers of the largest patched tensor, used in turn, so the kernel does not map and zero
  // fresh memory for every tensor
  const largest = w.ordered.reduce((m, t) => (job.source.names.has(t.name) ? Math.max(m, t.byteSize) : m), 0);
  const buffers = largest > 0 ? [new Uint8Array(largest), new Uint8Array(largest)] : [];
  // and two masks, used in the same turn, that coded masks are decoded into (fresh ones cost page
  // faults and clearing: qwen-0.5b F16 from a selection file took 34k page faults instead of 38k)
  const largestMask = w.ordered.reduce((m, t) => (job.source.names.has(t.name) ? Math.max(m, maskBytes(t.numel)) : m), 0);
  const maskBuffers = largestMask > 0 ? [new Uint8Array(largestMask), new Uint8Array(largestMask)] : [];
  let turn = 0;
  // two tensors in flight (the next one patched while the previous one's last parts, its write and
  // the copy between them finish), each on every thread given; with one thread, one at a time, so
  // that --threads 1 patches on one thread as it selects on one
  const ahead = (job.options.threads ?? availableParallelism()) >= 2;
  // The copies of the unchanged bytes run one after the other on the thread pool (in the kernel),
  // beside the patches; this thread meanwhile keeps a streaming selection going (a copy of qwen's
  // 272 MB embedding held it ~0.18 s). With one thread, each is awaited in its turn. A failed copy
  // surfaces at the next tensor or at the end.
  let copies: Promise<void> = Promise.resolve();
  let copyFailed: { error: unknown } | undefined;
  const copy = async (from: number, length: number) => {
    const run = copies.then(() => copyRange(src, dst, from, dataOffset + (from - shard.dataOffset), length, chunk, kernel));
    copies = run.catch((e) => { copyFailed ??= { error: e }; });
    if (!ahead) await run;
  };
  let pending: { t: GgufTensorInfo; run: Promise<{ result: TensorPatchResult; record: () => void }>; bytes: Uint8Array; at: number } | undefined;
  const settle = async () => {
    if (!pending) return;
    const p = pending;
    pending = undefined;
    const { result, record } = await p.run;
    if (!nativeIo) writeAll(dst, p.bytes, p.at);
    record();
    job.tensors.push(patchedTensor(p.t, result));
  };
  try {
    let cursor = shard.dataOffset;   // next source byte not yet written
    for (const t of w.ordered) {
      if (!job.source.names.has(t.name)) continue;
      checkAbort(job.options.signal);
      if (copyFailed) throw copyFailed.error;
      // masks still being selected: this tensor's, awaited (while the previous tensor is patched); a
      // tensor with nothing selected is copied with the bytes that follow it
      if (job.source.selecting) {
        await job.source.selecting.ready(t.name);
        if (job.source.count(t.name) === 0) continue;
      }
      // everything since the last patched tensor (unchanged tensors, padding) in one copy
      job.options.onProgress?.({ phase: 'copy', done: cursor - shard.dataOffset, total: totalBytes, item: t.name });
      await copy(cursor, t.absoluteOffset - cursor);
      job.options.onProgress?.({ phase: 'patch', done: t.offset, total: totalBytes, item: t.name });
      const at = dataOffset + w.layout.get(t.name)!.offset;
      const mask = job.source.mask(t.name, maskBuffers[turn].subarray(0, maskBytes(t.numel)));
      const bytes = buffers[turn].subarray(0, t.byteSize);
      turn ^= 1;
      if (!nativeIo) readExactly(src, bytes, t.absoluteOffset, `tensor ${t.name}`);
      const run = startTensorPatch(t, bytes, mask, {
        ...tensorPatchOptions(job, t.name), ranges: false,
        ...(nativeIo ? { read: { fd: src, offset: t.absoluteOffset }, write: { fd: dst, offset: at } } : {}),
      });
      run.catch(() => { /* awaited by settle, or on the way out */ });
      // the previous tensor (its buffer is this one's successor's) is finished while this one runs
      const current = { t, run, bytes, at };
      try { await settle(); } catch (e) { pending = current; throw e; }
      pending = current;
      if (!ahead) await settle();
      cursor = t.absoluteOffset + t.byteSize;
    }
    await settle();
    await copy(cursor, shard.fileSize - cursor);
    await copies;
    if (copyFailed) throw copyFailed.error;
  } catch (e) {
    // a tensor or a copy still in flight reads and writes these descriptors: let them end before
    // they are closed
    if (pending) await pending.run.catch(() => undefined);
    await copies;
    throw ioError(e);
  }
  return dataOffset + totalBytes;
}

/** A write error of a native call (disk full, file too large): its own Error, for writeFailure's message. */
function ioError(e: unknown): unknown {
  if (e instanceof MathneuroError && ['ENOSPC', 'EFBIG', 'EDQUOT'].includes(e.code) && e.cause) return e.cause;
  return e;
}

/** Upcast: the tensors with selected weights are stored in another type, so every tensor goes where the new header puts it. */
async function writeUpcast(w: ShardWrite): Promise<number> {
  const { job, shard, src, dst, dataOffset, chunk } = w;
  const upcastType = job.upcastType!;
  const totalBytes = shard.fileSize - shard.dataOffset;
  let end = dataOffset;
  for (const t of w.ordered) {
    checkAbort(job.options.signal);
    const at = dataOffset + w.layout.get(t.name)!.offset;
    if (at > end) writeAll(dst, new Uint8Array(at - end), end);
    if (job.source.names.has(t.name)) {
      job.options.onProgress?.({ phase: 'patch', done: t.offset, total: totalBytes, item: t.name });
      const bytes = readTensorBytes(src, t);
      const mask = job.source.mask(t.name);
      const up = upcastTensor(t, bytes, mask, upcastType, { scale: job.scale, realized: job.realized });
      writeAll(dst, up.bytes, at);
      job.tensors.push({ name: t.name, type: t.typeName, selectedWeights: up.selectedWeights, blocksTouched: 0, bytesChanged: up.bytes.length, upcastTo: codecTypeInfo(upcastType)!.name, bytesBefore: t.byteSize, bytesAfter: up.bytes.length });
      end = at + up.bytes.length;
    } else {
      job.options.onProgress?.({ phase: 'copy', done: t.offset, total: totalBytes, item: t.name });
      await copyRange(src, dst, t.absoluteOffset, at, t.byteSize, chunk, !job.options.streamCopy);
      end = at + t.byteSize;
    }
  }
  if (end % 32 !== 0) {
    const padded = Math.ceil(end / 32) * 32;
    writeAll(dst, new Uint8Array(padded - end), end);
    end = padded;
  }
  return end;
}

let kernelCopy: boolean | undefined;

/** Copies a range inside the kernel (on the thread pool); false (nothing copied) where the platform or file systems cannot. */
async function kernelCopyRange(src: number, dst: number, from: number, to: number, length: number): Promise<boolean> {
  const native = loadNative();
  kernelCopy ??= typeof native.copyFileRange === 'function';
  if (!kernelCopy || length <= 0) return false;
  const n = await native.copyFileRange!(src, dst, from, to, length);
  if (n < 0) { kernelCopy = false; return false; }
  if (n !== length) throw new MathneuroError('EIO', `source model: unexpected end of file at byte ${from + n}`);
  return true;
}

/**
 * Copies [from, from + length) of src to dst at `to`: inside the kernel (copy_file_range, as cp
 * does) where the platform and file systems allow, else through an 8 MiB buffer.
 */
async function copyRange(src: number, dst: number, from: number, to: number, length: number, chunk: Buffer, kernel = true): Promise<void> {
  if (length <= 0) return;
  if (kernel && await kernelCopyRange(src, dst, from, to, length)) return;
  let done = 0;
  while (done < length) {
    const n = Math.min(chunk.length, length - done);
    const view = chunk.subarray(0, n);
    readExactly(src, view, from + done, 'source model');
    writeAll(dst, view, to + done);
    done += n;
  }
}
