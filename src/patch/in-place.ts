// In-place mode: the model is rewritten range by range, each range's original bytes appended to an
// undo journal and synced first; unpatchModel restores the original bit-exactly.
import { closeSync, existsSync, fsyncSync, openSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { readTensorBytes, sha256File, sha256Files } from '../core/tensor-io.ts';
import { MathneuroError } from '../errors.ts';
import { readGgufSync } from '../gguf/reader.ts';
import { splitCountOfName, splitPath, splitPrefix } from '../gguf/model.ts';
import { realPath } from '../paths.ts';
import { checkAbort, patchedTensor, tensorPatchOptions, writeAll, type PatchJob } from './job.ts';
import { JournalWriter, journalPathFor, readJournal, readRecordData, type JournalHeader, type JournalShard } from './journal.ts';
import { mergeRanges, patchTensorInPlace } from './tensor-patch.ts';
import type { PatchProgress, UnpatchResult } from './types.ts';

const JOURNAL_MERGE_GAP_BYTES = 256;

export interface InPlaceJob extends PatchJob {
  /** the model's sha256 (of all shards one after the other) and each shard's, for the journal */
  sha256: string;
  shardSha256: string[];
  journalPath: string;
}

export async function patchInPlace(job: InPlaceJob): Promise<void> {
  const { info, source, entries, sha256, shardSha256, journalPath, options, tensors } = job;
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
      const r = await patchTensorInPlace(t, bytes, source.mask(t.name), { ...tensorPatchOptions(job, t.name), mergeGap: JOURNAL_MERGE_GAP_BYTES });
      // Nearby ranges (single F16 weights) are journaled and written as one: the bytes between
      // them are unchanged, so writing them again changes nothing and saves records.
      const ranges = mergeRanges(r.changed);   // already merged natively across the gap
      // journal first (synced), then the model
      journal.append(ranges.map((c) => ({ offset: t.absoluteOffset + c.offset, original: original.subarray(c.offset, c.offset + c.length), shard: split ? shard : undefined })));
      for (const c of ranges) writeAll(fd, r.bytes.subarray(c.offset, c.offset + c.length), t.absoluteOffset + c.offset);
      tensors.push(patchedTensor(t, r));
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
