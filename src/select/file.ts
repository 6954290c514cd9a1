// The selection file: a compact, versioned record of which weights a selection chose, so that
// patching can replay it without the statistics. Layout (little-endian):
//   "MNSEL\0\0\0" | blobs (one bit mask per tensor and K) | index (UTF-8 JSON) |
//   footer: u64 index offset, u64 index length, u32 crc32(index), "MNSELEND"
// The index is written last so that tensors stream to disk as they are selected. Each blob's
// index entry holds its offset, length, the crc32 of the mask itself and, from version 2, its
// codec: "rice" (the Golomb-Rice code of src/core/mask-codec.ts) or "raw" (the mask's bytes, where
// they are smaller). Version 1 files (still read) hold raw-deflated masks and no codec.
import { closeSync, fsyncSync, openSync, readSync, renameSync, rmSync, statSync, writeSync } from 'node:fs';
import { inflateRawSync } from 'node:zlib';
import { MathneuroError } from '../errors.ts';
import { packMask, unpackMask, type MaskCodec } from '../core/mask-codec.ts';
import { maskBytes } from './bits.ts';
import { crc32 } from '../core/crc32.ts';
import { readExactly } from '../core/tensor-io.ts';
import { removeStaleTemporaries, temporaryPath } from '../core/atomic-file.ts';
import type { HashedFile } from '../core/file-identity.ts';
import type { SelectionMethod, SelectionSummary, TensorSelection } from './select.ts';

export const SELECTION_FORMAT = 'mathneuro-selection';
/** The version written; SELECTION_VERSIONS_READ are those read. */
export const SELECTION_VERSION = 2;
export const SELECTION_VERSIONS_READ: readonly number[] = [1, 2];
const MAGIC = Buffer.from('MNSEL\0\0\0', 'latin1');
const END_MAGIC = Buffer.from('MNSELEND', 'latin1');
const FOOTER_BYTES = 8 + 8 + 4 + 8;

/** One stored mask: where it lies, the crc32 of the mask (not of the stored bytes), and how it is stored (absent in version 1: deflate). */
export interface SelectionBlob { offset: number; length: number; crc32: number; codec?: MaskCodec }
const CODECS: readonly string[] = ['rice', 'raw'] satisfies MaskCodec[];

export interface SelectionFileTensor {
  name: string;
  type: string;
  shape: number[];
  numel: number;
  /** selected weights, one per K */
  counts: number[];
  /** the stored mask of each K */
  blobs: SelectionBlob[];
}

export interface SelectionSource { path: string; sha256?: string; name?: string }

export interface SelectionFileIndex {
  format: typeof SELECTION_FORMAT;
  version: number;
  createdAt: string;
  method: SelectionMethod;
  topK: number[];
  seed?: number;
  includeOutput: boolean;
  /**
   * `files`: each model file's identity and sha256 when it was hashed, where they can vouch for the
   * hash (core/file-identity.ts): a patch then takes `sha256` from here while they still match
   */
  model: SelectionSource & { fileSize: number; tensorCount: number; files?: HashedFile[] };
  statistics: { math: SelectionSource; general?: SelectionSource };
  summary: Omit<SelectionSummary, 'tensors'>;
  tensors: SelectionFileTensor[];
}

/** Streams tensor selections into a temporary file beside `target`, renamed into place by finish(). */
export class SelectionFileWriter {
  private readonly fd: number;
  private readonly tempPath: string;
  private position = 0;
  private readonly tensors: SelectionFileTensor[] = [];
  private closed = false;

  constructor(readonly target: string) {
    removeStaleTemporaries(target);
    this.tempPath = temporaryPath(target);
    this.fd = openSync(this.tempPath, 'w');
    this.write(MAGIC);
  }

  private write(bytes: Uint8Array) {
    if (this.closed) return;   // aborted: the rest is dropped
    let done = 0;
    while (done < bytes.length) done += writeSync(this.fd, bytes, done, bytes.length - done, this.position + done);
    this.position += bytes.length;
  }

  private chain: Promise<void> = Promise.resolve();
  private pending = 0;
  private readonly drained: (() => void)[] = [];

  /**
   * Adds one tensor's masks. They are encoded on the thread pool while the next tensor is
   * selected and written in order; the promise resolves once fewer than 4 tensors wait (await it to
   * bound memory). Errors surface in finish(). The masks must not change until then.
   */
  add(selection: TensorSelection): Promise<void> {
    const t = selection.tensor;
    const entry: SelectionFileTensor = { name: t.name, type: t.typeName, shape: t.shape, numel: t.numel, counts: selection.counts, blobs: [] };
    this.tensors.push(entry);
    const encoding = selection.masks.map((mask) => ({ crc: crc32(mask), packed: packMask(mask, t.numel) }));
    for (const e of encoding) e.packed.catch(() => {});   // (awaited in order below; not unhandled meanwhile)
    this.pending++;
    this.chain = this.chain.then(async () => {
      try {
        for (const e of encoding) {
          const packed = await e.packed;
          entry.blobs.push({ offset: this.position, length: packed.bytes.length, crc32: e.crc, codec: packed.codec });
          this.write(packed.bytes);
        }
      } finally {
        this.pending--;
        while (this.pending < 4 && this.drained.length) this.drained.shift()!();
      }
    });
    if (this.pending < 4) return Promise.resolve();
    return new Promise((resolve) => this.drained.push(resolve));
  }

  async finish(index: Omit<SelectionFileIndex, 'format' | 'version' | 'tensors' | 'createdAt'>): Promise<SelectionFileIndex> {
    await this.chain;
    const full: SelectionFileIndex = { format: SELECTION_FORMAT, version: SELECTION_VERSION, createdAt: new Date().toISOString(), ...index, tensors: this.tensors };
    const json = Buffer.from(JSON.stringify(full), 'utf8');
    const footer = Buffer.alloc(FOOTER_BYTES);
    footer.writeBigUInt64LE(BigInt(this.position), 0);
    footer.writeBigUInt64LE(BigInt(json.length), 8);
    footer.writeUInt32LE(crc32(json), 16);
    END_MAGIC.copy(footer, 20);
    this.write(json);
    this.write(footer);
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.closed = true;
    renameSync(this.tempPath, this.target);
    return full;
  }

  abort(): void {
    if (!this.closed) { try { closeSync(this.fd); } catch { /* already closed */ } this.closed = true; }
    rmSync(this.tempPath, { force: true });
  }
}

export function isSelectionFile(file: string): boolean {
  try {
    const fd = openSync(file, 'r');
    try { const b = Buffer.alloc(8); return readSync(fd, b, 0, 8, 0) === 8 && b.equals(MAGIC); } finally { closeSync(fd); }
  } catch { return false; }
}

/** An open selection file: its index, and the masks read on demand. */
export class SelectionFile {
  private constructor(readonly path: string, readonly index: SelectionFileIndex, private readonly byName: Map<string, SelectionFileTensor>) {}

  static open(file: string): SelectionFile {
    let size: number;
    try { size = statSync(file).size; } catch { throw new MathneuroError('ENOENT', `no such file: ${file}`); }
    const bad = (why: string): never => { throw new MathneuroError('ESELECTION', `${file}: not a valid selection file (${why})`); };
    if (size < MAGIC.length + FOOTER_BYTES) bad('too small');
    const fd = openSync(file, 'r');
    try {
      const head = Buffer.alloc(8);
      readExactly(fd, head, 0, file);
      if (!head.equals(MAGIC)) bad('wrong magic');
      const footer = Buffer.alloc(FOOTER_BYTES);
      readExactly(fd, footer, size - FOOTER_BYTES, file);
      if (!footer.subarray(20).equals(END_MAGIC)) bad('truncated: no end marker');
      const offset = Number(footer.readBigUInt64LE(0)), length = Number(footer.readBigUInt64LE(8));
      if (offset + length + FOOTER_BYTES !== size || offset < MAGIC.length) bad('index out of range');
      const json = Buffer.alloc(length);
      readExactly(fd, json, offset, file);
      if (crc32(json) !== footer.readUInt32LE(16)) bad('index checksum mismatch');
      let index: SelectionFileIndex;
      try { index = JSON.parse(json.toString('utf8')); } catch { return bad('index is not JSON'); }
      if (index.format !== SELECTION_FORMAT) bad(`format "${String(index.format)}"`);
      if (!SELECTION_VERSIONS_READ.includes(index.version)) throw new MathneuroError('ESELECTION', `${file}: selection file version ${String(index.version)}; this mathneuro reads versions ${SELECTION_VERSIONS_READ.join(' and ')}`);
      const byName = new Map<string, SelectionFileTensor>();
      for (const t of index.tensors) {
        if (t.blobs.length !== index.topK.length) bad(`tensor ${t.name} has ${t.blobs.length} masks for ${index.topK.length} K`);
        if (!Number.isSafeInteger(t.numel) || t.numel < 0) bad(`tensor ${t.name} has ${String(t.numel)} weights`);
        if (!Array.isArray(t.counts) || t.counts.length !== index.topK.length || !t.counts.every((c) => Number.isSafeInteger(c) && c >= 0 && c <= t.numel)) bad(`tensor ${t.name} has counts out of range`);
        for (const b of t.blobs) {
          if (b.offset < MAGIC.length || b.offset + b.length > offset) bad(`mask of ${t.name} out of range`);
          if (index.version === 1 ? b.codec !== undefined : !CODECS.includes(b.codec as string)) {
            throw new MathneuroError('ESELECTION', `${file}: the mask of ${t.name} is stored as "${String(b.codec)}"; this mathneuro reads ${index.version === 1 ? 'version 1 masks deflated, with no codec named' : `version ${index.version} masks stored as ${CODECS.join(' or ')}`}`);
          }
          if (b.codec === 'raw' && b.length !== maskBytes(t.numel)) bad(`raw mask of ${t.name} is ${b.length} bytes, not ${maskBytes(t.numel)}`);
        }
        byName.set(t.name, t);
      }
      return new SelectionFile(file, index, byName);
    } finally {
      closeSync(fd);
    }
  }

  /** Index of K in the file: the only one, or the one equal to `topK`. */
  kIndex(topK?: number): number {
    const ks = this.index.topK;
    if (topK === undefined) {
      if (ks.length === 1) return 0;
      throw new MathneuroError('EUSAGE', `${this.path} holds several K (${ks.join(', ')}): pick one with --top-k`);
    }
    const q = ks.findIndex((k) => Math.abs(k - topK) <= 1e-12 * Math.max(1, k));
    if (q < 0) throw new MathneuroError('ESELECTION', `${this.path} has no selection for K=${topK} (it holds ${ks.join(', ')})`);
    return q;
  }

  tensor(name: string): SelectionFileTensor | undefined { return this.byName.get(name); }

  /**
   * The mask of one tensor for K index q, checked against its checksum: a new one, or `into`
   * (maskBytes(numel) bytes, overwritten; a caller that reuses its masks spares the fresh memory's
   * page faults and clearing).
   */
  mask(name: string, q: number, into?: Uint8Array): Uint8Array {
    const t = this.byName.get(name);
    if (!t) throw new MathneuroError('ESELECTION', `${this.path} has no tensor ${name}`);
    const blob = t.blobs[q];
    if (into && into.length !== maskBytes(t.numel)) throw new MathneuroError('EUSAGE', `a mask of ${name} has ${maskBytes(t.numel)} bytes, not ${into.length}`);
    const fd = openSync(this.path, 'r');
    try {
      // (a raw mask is its stored bytes: read into `into` itself)
      const stored = into && blob.codec === 'raw' ? into : Buffer.allocUnsafe(blob.length);
      readExactly(fd, stored, blob.offset, this.path);
      let mask: Uint8Array;
      try {
        mask = blob.codec === undefined ? inflateRawSync(stored) : unpackMask({ codec: blob.codec, bytes: stored }, t.numel, t.counts[q], into);
      } catch (e) {
        if (e instanceof MathneuroError && e.code !== 'EDATA') throw e;   // (out of memory is no corruption)
        throw new MathneuroError('ESELECTION', `${this.path}: mask of ${name} is corrupt`, { cause: e });
      }
      if (mask.length !== maskBytes(t.numel) || crc32(mask) !== blob.crc32) throw new MathneuroError('ESELECTION', `${this.path}: mask of ${name} fails its checksum`);
      return mask;
    } finally {
      closeSync(fd);
    }
  }
}
