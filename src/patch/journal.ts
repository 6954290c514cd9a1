// The undo journal of an in-place patch. Before a range of the model is overwritten, its original
// bytes are appended here with checksums and synced; so after a crash at any moment, replaying the
// journal backwards restores the original file. Layout (little-endian):
//   header:  "MNUNDO\0\1" | u32 n | JSON (n bytes) | u32 crc32(JSON)
//   record:  "MNJR" | u64 offset | u32 length | u32 crc32(data) | u32 crc32(previous 20 bytes) | data
//   record of a split model: "MNJS" | u64 offset | u32 length | u32 crc32(data) | u32 shard | u32 crc32(previous 24 bytes) | data
//            (the shard's index into the header's shards; "MNJR" records are shard 0)
//   commit:  "MNJC" | u32 n | JSON | u32 crc32(JSON)
// A record cut short by a crash was never followed by its write to the model, so it is ignored.
import { closeSync, existsSync, fstatSync, fsyncSync, openSync, writeSync } from 'node:fs';
import path from 'node:path';
import { MathneuroError } from '../errors.ts';
import { crc32 } from '../core/crc32.ts';
import { fsyncDirectory } from '../core/atomic-file.ts';
import { readFully } from '../core/tensor-io.ts';

const HEADER_MAGIC = Buffer.from('MNUNDO\0\x01', 'latin1');
const RECORD_MAGIC = Buffer.from('MNJR', 'latin1');
const SHARD_RECORD_MAGIC = Buffer.from('MNJS', 'latin1');
const SHARD_RECORD_HEAD = 28;
const COMMIT_MAGIC = Buffer.from('MNJC', 'latin1');
const RECORD_HEAD = 24;

export interface JournalHeader {
  format: 'mathneuro-undo';
  version: 1;
  /** the model file this journal undoes (absolute when written) */
  model: string;
  sourceSha256: string;
  fileSize: number;
  createdAt: string;
  provenance: Record<string, unknown>;
  /**
   * a split model: every shard (file name, sha256, size) in order; `model` is the first shard,
   * sourceSha256 the sha256 of all shards' bytes one after the other, fileSize the first shard's
   */
  shards?: JournalShard[];
}

export interface JournalShard { file: string; sha256: string; fileSize: number }

/** Original bytes of a range; `shard` (a split model's) is written as a shard record. */
export interface JournalRecord { offset: number; original: Uint8Array; shard?: number }

/** A record found in a journal: where its original bytes go (shard 0 for a single file), and where they are in the journal. */
export interface JournalEntry { offset: number; length: number; dataAt: number; shard: number }

export interface JournalContents {
  header?: JournalHeader;
  records: JournalEntry[];
  commit?: Record<string, unknown>;
  /** bytes at the end that are not a whole valid record (a crash while appending) */
  tornBytes: number;
}

export function journalPathFor(model: string): string { return `${model}.mathneuro-undo`; }

function syncDir(file: string) {
  fsyncDirectory(path.dirname(path.resolve(file)));
}

function writeAll(fd: number, bytes: Uint8Array, position: number): number {
  let done = 0;
  while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done, position + done);
  return position + bytes.length;
}

function framedJson(magic: Buffer, value: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(value), 'utf8');
  const out = Buffer.alloc(magic.length + 4 + json.length + 4);
  magic.copy(out, 0);
  out.writeUInt32LE(json.length, magic.length);
  json.copy(out, magic.length + 4);
  out.writeUInt32LE(crc32(json), magic.length + 4 + json.length);
  return out;
}

export class JournalWriter {
  private position: number;
  private constructor(readonly path: string, private readonly fd: number, position: number) { this.position = position; }

  /** Creates the journal (it must not exist) and syncs its header before anything else happens. */
  static create(journalPath: string, header: JournalHeader): JournalWriter {
    let fd: number;
    try { fd = openSync(journalPath, 'wx'); } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') throw new MathneuroError('EEXIST', `an undo journal already exists: ${journalPath} (the model is patched in place; run mathneuro unpatch first)`);
      throw new MathneuroError('EIO', `cannot create the undo journal ${journalPath}: ${(e as Error).message}`);
    }
    const position = writeAll(fd, framedJson(HEADER_MAGIC, header), 0);
    fsyncSync(fd);
    syncDir(journalPath);
    return new JournalWriter(journalPath, fd, position);
  }

  /** Appends the original bytes of ranges about to be overwritten, and syncs. */
  append(records: JournalRecord[]): void {
    if (records.length === 0) return;
    const head = (r: JournalRecord) => (r.shard === undefined ? RECORD_HEAD : SHARD_RECORD_HEAD);
    const total = records.reduce((a, r) => a + head(r) + r.original.length, 0);
    const buf = Buffer.alloc(total);
    let o = 0;
    for (const r of records) {
      (r.shard === undefined ? RECORD_MAGIC : SHARD_RECORD_MAGIC).copy(buf, o);
      buf.writeBigUInt64LE(BigInt(r.offset), o + 4);
      buf.writeUInt32LE(r.original.length, o + 12);
      buf.writeUInt32LE(crc32(r.original), o + 16);
      if (r.shard !== undefined) buf.writeUInt32LE(r.shard, o + 20);
      const h = head(r);
      buf.writeUInt32LE(crc32(buf.subarray(o, o + h - 4)), o + h - 4);
      buf.set(r.original, o + h);
      o += h + r.original.length;
    }
    this.position = writeAll(this.fd, buf, this.position);
    fsyncSync(this.fd);
  }

  commit(info: Record<string, unknown>): void {
    this.position = writeAll(this.fd, framedJson(COMMIT_MAGIC, info), this.position);
    fsyncSync(this.fd);
  }

  close(): void { closeSync(this.fd); }
}

/** Reads a journal's structure, checking every checksum; record data stays on disk. A torn tail is reported, never an error. */
export function readJournal(journalPath: string): JournalContents {
  if (!existsSync(journalPath)) throw new MathneuroError('EJOURNAL', `no undo journal at ${journalPath}`);
  const fd = openSync(journalPath, 'r');
  try {
    const size = fstatSync(fd).size;
    const read = (at: number, n: number): Buffer | undefined => {
      if (at + n > size) return undefined;
      const b = Buffer.alloc(n);
      return readFully(fd, b, at) === n ? b : undefined;
    };
    const contents: JournalContents = { records: [], tornBytes: 0 };
    const readFramed = (at: number, magic: Buffer): { value: unknown; end: number } | undefined => {
      const head = read(at, magic.length + 4);
      if (!head || !head.subarray(0, magic.length).equals(magic)) return undefined;
      const n = head.readUInt32LE(magic.length);
      const body = read(at + magic.length + 4, n + 4);
      if (!body) return undefined;
      const json = body.subarray(0, n);
      if (crc32(json) !== body.readUInt32LE(n)) return undefined;
      try { return { value: JSON.parse(json.toString('utf8')), end: at + magic.length + 4 + n + 4 }; } catch { return undefined; }
    };
    const header = readFramed(0, HEADER_MAGIC);
    if (!header) {
      // Killed before the header was synced: nothing was written to the model yet.
      contents.tornBytes = size;
      return contents;
    }
    contents.header = header.value as JournalHeader;
    if (contents.header.format !== 'mathneuro-undo') throw new MathneuroError('EJOURNAL', `${journalPath} is not a mathneuro undo journal`);
    let at = header.end;
    while (at < size) {
      const magic = read(at, 4);
      if (!magic) break;
      if (magic.equals(COMMIT_MAGIC)) {
        const c = readFramed(at, COMMIT_MAGIC);
        if (!c) break;
        contents.commit = c.value as Record<string, unknown>;
        at = c.end;
        continue;
      }
      const sharded = magic.equals(SHARD_RECORD_MAGIC);
      const h = sharded ? SHARD_RECORD_HEAD : RECORD_HEAD;
      const head = read(at, h);
      if (!head || !(sharded || head.subarray(0, 4).equals(RECORD_MAGIC)) || crc32(head.subarray(0, h - 4)) !== head.readUInt32LE(h - 4)) break;
      const offset = Number(head.readBigUInt64LE(4));
      const length = head.readUInt32LE(12);
      const original = read(at + h, length);
      if (!original || crc32(original) !== head.readUInt32LE(16)) break;
      contents.records.push({ offset, length, dataAt: at + h, shard: sharded ? head.readUInt32LE(20) : 0 });
      at += h + length;
    }
    contents.tornBytes = size - at;
    return contents;
  } finally {
    closeSync(fd);
  }
}

/** The original bytes of a record, read back from the journal. */
export function readRecordData(journalPath: string, record: JournalEntry): Uint8Array {
  const fd = openSync(journalPath, 'r');
  try {
    const b = new Uint8Array(record.length);
    if (readFully(fd, b, record.dataAt) < record.length) throw new MathneuroError('EJOURNAL', `${journalPath} shrank while reading`);
    return b;
  } finally {
    closeSync(fd);
  }
}
