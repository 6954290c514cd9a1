// The GGUF validator and header reader: the one place every file passes before anything reaches
// ggml. It reads only the header (never the tensor data) and checks every count, length and range
// against the bytes that remain, with exact integer arithmetic (BigInt) for sizes.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { MathneuroError } from '../errors.ts';
import { readFully } from '../core/tensor-io.ts';
import { GGUF_VALUE, ggmlType } from './types.ts';

export type GgufScalar = number | bigint | boolean | string;
export type GgufValue = GgufScalar | GgufScalar[];

export interface GgufMetadataEntry { key: string; type: number; arrayType?: number; value: GgufValue }

export interface GgufTensorInfo {
  name: string;
  /** ggml type id (see types.ts) */
  type: number;
  typeName: string;
  /** ne[0] first: ne[0] is the row length (input width of a matmul weight) */
  shape: number[];
  numel: number;
  /** offset relative to the data section */
  offset: number;
  absoluteOffset: number;
  byteSize: number;
  blockSize: number;
  typeSize: number;
  /** set by the model view (model.ts) for a split model: the shard (0-based) and the file that hold the bytes */
  shard?: number;
  file?: string;
}

export interface GgufInfo {
  path: string;
  fileSize: number;
  version: number;
  alignment: number;
  headerBytes: number;
  dataOffset: number;
  /**
   * Arrays of 1024 values or more (a vocabulary's tokens, merges, scores) are validated with the
   * header but made into JS values when first read (get, iteration, an entry's value). Infos from
   * readGguf, readGgufSync and openModelSync hold them decoded; one reached another way (a runtime's
   * `gguf`) can be passed through withMetadataDecoded before structuredClone or postMessage.
   */
  metadata: Map<string, GgufValue>;
  metadataEntries: GgufMetadataEntry[];
  tensors: GgufTensorInfo[];
  tensorByName: Map<string, GgufTensorInfo>;
}

const MAX_STRING_BYTES = 64 * 1024 * 1024;   // a single metadata string (vocabularies are arrays of small strings)
// The header is read into JS values: bound it so a crafted file cannot exhaust memory (which aborts
// node) with billions of tiny array elements. The largest real vocabularies hold ~1M entries in all.
const MAX_METADATA_VALUES = 1 << 25;
const MAX_METADATA_STRING_BYTES = 256 * 1024 * 1024;
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });
const MAX_TENSOR_NAME = 63;                  // GGML_MAX_NAME - 1
const MAX_DIMS = 4;

/** An error label given as a string, or as a function when building one per value would cost. */
type Label = string | (() => string);
const nameOf = (what: Label): string => (typeof what === 'function' ? what() : what);

/** Reads forward through a file in chunks; every read is bounds-checked against the file size. */
class Cursor {
  pos = 0;
  private buf = Buffer.alloc(0);
  /** every buffer read, by its file offset: together they hold every byte consumed (see headPieces) */
  private reads: { start: number; buf: Buffer }[] = [];
  private bufStart = 0;
  constructor(private readonly fd: number, readonly size: number, private readonly path: string) {}

  fail(message: string): never {
    throw new MathneuroError('EBADGGUF', `${this.path}: ${message} (at byte ${this.pos})`);
  }

  remaining(): number { return this.size - this.pos; }

  /**
   * The file's first n bytes as this cursor read them (n <= pos: all of them were consumed): views
   * of the buffers read, in order, not copied (a copy of a Qwen2 header was 5.9 MB of fresh memory,
   * ~24 ms here).
   */
  headPieces(n: number): Buffer[] {
    const out: Buffer[] = [];
    let done = 0;
    for (const r of this.reads) {
      // reads follow each other; a refill may start before the previous buffer's end
      const from = Math.max(done, r.start), to = Math.min(n, r.start + r.buf.length);
      if (from > done) throw new Error('GGUF cursor: a gap in the bytes read');   // cannot happen: every consumed byte was read
      if (to > from) { out.push(r.buf.subarray(from - r.start, to - r.start)); done = to; }
      if (done === n) break;
    }
    if (done !== n) throw new Error('GGUF cursor: fewer bytes read than consumed');
    return out;
  }
  /** metadata values and string bytes read so far (see MAX_METADATA_VALUES) */
  values = 0;
  stringBytes = 0;

  private ensure(n: number) {
    if (n > this.remaining()) this.fail(`unexpected end of file (needs ${n} more bytes, ${this.remaining()} left)`);
    const end = this.pos + n;
    if (this.pos >= this.bufStart && end <= this.bufStart + this.buf.length) return;
    const want = Math.min(Math.max(n, 1 << 20), this.remaining());
    const b = Buffer.allocUnsafe(want);
    let got = 0;
    while (got < want) {
      const r = readSync(this.fd, b, got, want - got, this.pos + got);
      if (r === 0) this.fail('file shrank while reading');
      got += r;
    }
    this.buf = b;
    this.reads.push({ start: this.pos, buf: b });
    this.bufStart = this.pos;
  }

  /** the offset in `buf` of the next n bytes, which are then consumed */
  private at(n: number): number {
    this.ensure(n);
    const at = this.pos - this.bufStart;
    this.pos += n;
    return at;
  }

  bytes(n: number): Buffer {
    const at = this.at(n);
    return this.buf.subarray(at, at + n);
  }
  // scalars straight from the buffer: a subarray per value cost more than the value (a 150k-token
  // vocabulary is ~450k values). at() first: it may replace the buffer
  u8() { const at = this.at(1); return this.buf.readUInt8(at); }
  i8() { const at = this.at(1); return this.buf.readInt8(at); }
  u16() { const at = this.at(2); return this.buf.readUInt16LE(at); }
  i16() { const at = this.at(2); return this.buf.readInt16LE(at); }
  u32() { const at = this.at(4); return this.buf.readUInt32LE(at); }
  i32() { const at = this.at(4); return this.buf.readInt32LE(at); }
  f32() { const at = this.at(4); return this.buf.readFloatLE(at); }
  f64() { const at = this.at(8); return this.buf.readDoubleLE(at); }
  u64(): bigint { const at = this.at(8); return this.buf.readBigUInt64LE(at); }
  i64(): bigint { const at = this.at(8); return this.buf.readBigInt64LE(at); }

  /** consumes n bytes (checked against the file's size) without looking at them */
  skip(n: number) { this.at(n); }

  /** a string checked as string() checks it, its bytes consumed but not decoded */
  skipString(what: Label) { this.at(this.stringLength(what)); }

  /**
   * n strings, each checked and consumed as skipString does (what(j) names string j when it
   * fails), in a loop over the buffer's bytes without a call per string: a vocabulary's ~300k
   * tokens and merges took ~45 ms through skipString on a process's first parse.
   */
  skipStrings(n: number, what: (j: number) => string) {
    let j = 0;
    while (j < n) {
      // the strings that lie whole in the buffer as it is, then one through skipString (which
      // refills it)
      const buf = this.buf, base = this.bufStart, end = buf.length;
      let p = this.pos - base, bytes = this.stringBytes;
      const room = Math.min(end, this.size - base);   // (the buffer never holds bytes past the file's end)
      while (j < n && p + 8 <= room) {
        const lo = buf.readUInt32LE(p), hi = buf.readUInt32LE(p + 4);
        if (hi > 0 || lo > MAX_STRING_BYTES || p + 8 + lo > room) break;
        if (bytes + lo > MAX_METADATA_STRING_BYTES) break;
        bytes += lo;
        p += 8 + lo;
        j++;
      }
      this.pos = base + p;
      this.stringBytes = bytes;
      if (j < n) { const at = j; this.skipString(() => what(at)); j++; }
    }
  }

  /** a count that must fit in what is left, given a minimum size per element */
  count(what: string, minBytesEach: number): number {
    const n = this.u64();
    if (n > BigInt(Math.floor(this.remaining() / Math.max(1, minBytesEach)))) {
      this.fail(`${what} ${n} cannot fit in the ${this.remaining()} bytes left`);
    }
    return Number(n);
  }

  /** a string's length, checked against what is left and the caps, and counted; its bytes come next */
  private stringLength(what: Label): number {
    const at = this.at(8);
    const lo = this.buf.readUInt32LE(at), hi = this.buf.readUInt32LE(at + 4);
    // a length of 4 GiB or more (hi > 0) fails both checks below
    if (hi > 0 || lo > this.remaining() || lo > MAX_STRING_BYTES) {
      const n = this.buf.readBigUInt64LE(at);
      const name = nameOf(what);
      if (n > BigInt(this.remaining())) this.fail(`${name} length ${n} runs past the end of the file`);
      this.fail(`${name} length ${n} is larger than ${MAX_STRING_BYTES}`);
    }
    this.stringBytes += lo;
    if (this.stringBytes > MAX_METADATA_STRING_BYTES) this.fail(`more than ${MAX_METADATA_STRING_BYTES} bytes of metadata strings`);
    return lo;
  }

  string(what: Label, strict = false): string {
    const lo = this.stringLength(what);
    const start = this.at(lo);
    if (!strict) return this.buf.toString('utf8', start, start + lo);
    const b = this.buf.subarray(start, start + lo);
    const name = nameOf(what);
    // keys and tensor names must round-trip exactly: ggml compares them as C strings
    if (b.includes(0)) this.fail(`${name} contains a NUL byte`);
    try { return strictUtf8.decode(b); } catch { return this.fail(`${name} is not valid UTF-8`); }
  }
}

/** Bytes [start, end) of the header's pieces: a view where they lie in one piece, else copied. */
function headSlice(pieces: readonly Buffer[], start: number, end: number): Buffer {
  const parts: Buffer[] = [];
  let at = 0;
  for (const b of pieces) {
    const from = Math.max(start, at), to = Math.min(end, at + b.length);
    if (to > from) parts.push(b.subarray(from - at, to - at));
    at += b.length;
    if (at >= end) break;
  }
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

function bigToNumber(v: bigint): number | bigint {
  return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

const scalarMinBytes: Record<number, number> = {
  [GGUF_VALUE.UINT8]: 1, [GGUF_VALUE.INT8]: 1, [GGUF_VALUE.UINT16]: 2, [GGUF_VALUE.INT16]: 2,
  [GGUF_VALUE.UINT32]: 4, [GGUF_VALUE.INT32]: 4, [GGUF_VALUE.FLOAT32]: 4, [GGUF_VALUE.BOOL]: 1,
  [GGUF_VALUE.STRING]: 8, [GGUF_VALUE.UINT64]: 8, [GGUF_VALUE.INT64]: 8, [GGUF_VALUE.FLOAT64]: 8,
};

function readScalar(c: Cursor, type: number, what: Label): GgufScalar {
  switch (type) {
    case GGUF_VALUE.UINT8: return c.u8();
    case GGUF_VALUE.INT8: return c.i8();
    case GGUF_VALUE.UINT16: return c.u16();
    case GGUF_VALUE.INT16: return c.i16();
    case GGUF_VALUE.UINT32: return c.u32();
    case GGUF_VALUE.INT32: return c.i32();
    case GGUF_VALUE.FLOAT32: return c.f32();
    case GGUF_VALUE.BOOL: {
      const b = c.u8();
      if (b > 1) c.fail(`${nameOf(what)}: bool value ${b} is not 0 or 1`);
      return b === 1;
    }
    case GGUF_VALUE.STRING: return c.string(what);
    case GGUF_VALUE.UINT64: return bigToNumber(c.u64());
    case GGUF_VALUE.INT64: return bigToNumber(c.i64());
    case GGUF_VALUE.FLOAT64: return c.f64();
    default: return c.fail(`${nameOf(what)}: unknown value type ${type}`);
  }
}

/**
 * Large arrays (a vocabulary's tokens, merges, scores and types: ~450k values for Qwen2) are
 * validated while the header is read but made into JS values only when first asked for: selecting
 * and patching never look at them, and building 450k strings cost ~0.1 s of every command. Their
 * bytes are the header's, which the parse keeps (see holdParse). Bool arrays are read at once (a
 * value other than 0 or 1 fails the parse); the other types cannot fail to decode.
 */
const LAZY_ARRAY_MIN = 1024;

function decodeArray(b: Buffer, type: number, n: number): GgufScalar[] {
  const out: GgufScalar[] = new Array(n);
  let p = 0;
  switch (type) {
    case GGUF_VALUE.STRING:
      for (let j = 0; j < n; j++) { const len = b.readUInt32LE(p); out[j] = b.toString('utf8', p + 8, p + 8 + len); p += 8 + len; }
      return out;
    case GGUF_VALUE.UINT8: for (let j = 0; j < n; j++) out[j] = b[j]; return out;
    case GGUF_VALUE.INT8: for (let j = 0; j < n; j++) out[j] = b.readInt8(j); return out;
    case GGUF_VALUE.UINT16: for (let j = 0; j < n; j++) out[j] = b.readUInt16LE(2 * j); return out;
    case GGUF_VALUE.INT16: for (let j = 0; j < n; j++) out[j] = b.readInt16LE(2 * j); return out;
    case GGUF_VALUE.UINT32: for (let j = 0; j < n; j++) out[j] = b.readUInt32LE(4 * j); return out;
    case GGUF_VALUE.INT32: for (let j = 0; j < n; j++) out[j] = b.readInt32LE(4 * j); return out;
    case GGUF_VALUE.FLOAT32: for (let j = 0; j < n; j++) out[j] = b.readFloatLE(4 * j); return out;
    case GGUF_VALUE.FLOAT64: for (let j = 0; j < n; j++) out[j] = b.readDoubleLE(8 * j); return out;
    case GGUF_VALUE.UINT64: for (let j = 0; j < n; j++) out[j] = bigToNumber(b.readBigUInt64LE(8 * j)); return out;
    case GGUF_VALUE.INT64: for (let j = 0; j < n; j++) out[j] = bigToNumber(b.readBigInt64LE(8 * j)); return out;
    default: throw new Error(`GGUF reader: no lazy decoding of value type ${type}`);   // (bools are read at once)
  }
}

/**
 * The metadata by key, as a Map whose large arrays are decoded on first use (get, or any
 * iteration, which decodes them all first). Callers treat it as read-only.
 */
class MetadataMap extends Map<string, GgufValue> {
  #lazy?: Map<string, () => GgufScalar[]>;   // (#private: util.inspect does not list it)
  setLazy(key: string, decode: () => GgufScalar[]) {
    (this.#lazy ??= new Map()).set(key, decode);
    super.set(key, undefined as unknown as GgufValue);   // (has(), size and the keys' order as for any key)
  }
  override get(key: string): GgufValue | undefined {
    const decode = this.#lazy?.get(key);
    if (decode) { this.#lazy!.delete(key); super.set(key, decode()); }
    return super.get(key);
  }
  decodeAll() { if (this.#lazy?.size) for (const key of [...this.#lazy.keys()]) this.get(key); }
  override entries() { this.decodeAll(); return super.entries(); }
  override values() { this.decodeAll(); return super.values(); }
  override forEach(f: (value: GgufValue, key: string, map: Map<string, GgufValue>) => void, thisArg?: unknown) { this.decodeAll(); super.forEach(f, thisArg); }
  override [Symbol.iterator]() { return this.entries(); }
}

/**
 * `info` (and each shard of a split model) with every metadata value decoded, in place: plain data
 * again, so that structuredClone, postMessage to a worker and v8.serialize, which copy a Map's
 * entries without calling its methods, carry the vocabulary too. The public readGguf, readGgufSync
 * and openModelSync return infos in this state; the CLI's paths, which never read the vocabulary,
 * do not pay for it.
 */
export function withMetadataDecoded<T extends GgufInfo>(info: T): T {
  for (const one of [info, ...((info as GgufInfo & { shards?: GgufInfo[] }).shards ?? [])]) {
    if (one.metadata instanceof MetadataMap) one.metadata.decodeAll();
  }
  return info;
}

/**
 * No options remain (unknown tensor types are always refused); the type stays so that callers of
 * the public API that pass `{}` keep compiling.
 */
export interface ReadGgufOptions {}

/**
 * Parsed headers the process still holds, by path: a pipeline reads one model's header many times
 * (boost: resolve, screen, patch, and the check's two runtimes and screens), and parsing a 128k-token
 * vocabulary takes ~0.3 s a time. A parse is a function of the path, the file's size and its header
 * bytes alone, so a held one is returned only when the file (same device and inode) has the same size
 * and its header bytes, read again, equal those parsed (timestamps are too coarse to tell a rewrite).
 * Weak: an info nobody holds any more is collected as before. Callers treat a GgufInfo as read-only.
 */
const parsedByPath = new Map<string, WeakRef<GgufInfo>>();
const headerOf = new WeakMap<GgufInfo, { dev: bigint; ino: bigint; bytes: readonly Buffer[] }>();

/**
 * The header bytes `info` was parsed from (read-only; in pieces, in order, together exactly
 * `info.headerBytes` long: headPieces guarantees it), while the parse is held.
 */
export function parsedHeaderBytes(info: GgufInfo): readonly Buffer[] | undefined {
  return headerOf.get(info)?.bytes;
}

/** The first `length` bytes of the file (fewer when it is shorter). */
function readAt(fd: number, length: number): Buffer {
  const b = Buffer.allocUnsafe(length);
  return b.subarray(0, readFully(fd, b, 0));
}

function heldParse(path: string, fd: number, size: number): GgufInfo | undefined {
  const held = parsedByPath.get(path)?.deref();
  if (!held) { parsedByPath.delete(path); return undefined; }
  const header = headerOf.get(held);
  if (!header || held.fileSize !== size) return undefined;
  const st = fstatSync(fd, { bigint: true });
  if (st.dev !== header.dev || st.ino !== header.ino) return undefined;
  const now = readAt(fd, held.headerBytes);
  if (now.length !== held.headerBytes) return undefined;
  let at = 0;
  for (const b of header.bytes) {
    if (!now.subarray(at, at + b.length).equals(b)) return undefined;
    at += b.length;
  }
  return held;
}

function holdParse(info: GgufInfo, fd: number, header: readonly Buffer[]): GgufInfo {
  const st = fstatSync(fd, { bigint: true });
  headerOf.set(info, { dev: st.dev, ino: st.ino, bytes: header });
  parsedByPath.set(info.path, new WeakRef(info));
  if (parsedByPath.size > 256) for (const [k, ref] of parsedByPath) if (!ref.deref()) parsedByPath.delete(k);
  return info;
}

/** Parse and validate a GGUF header. Throws MathneuroError EBADGGUF (or ENOENT) with a one-line reason. */
export function readGgufSync(path: string, _options: ReadGgufOptions = {}): GgufInfo {
  let fd: number;
  try {
    fd = openSync(path, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new MathneuroError('ENOENT', `no such file: ${path}`);
    if (code === 'EISDIR') throw new MathneuroError('EBADGGUF', `${path} is a directory, not a GGUF file`);
    throw new MathneuroError('EIO', `cannot open ${path}: ${(e as Error).message}`);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new MathneuroError('EBADGGUF', `${path} is not a regular file`);
    const held = heldParse(path, fd, st.size);
    if (held) return held;
    const c: Cursor = new Cursor(fd, st.size, path);
    if (st.size < 24) c.fail(`file is too small to be a GGUF (${st.size} bytes)`);
    const magic = c.bytes(4).toString('latin1');
    if (magic !== 'GGUF') c.fail(`not a GGUF file (magic "${JSON.stringify(magic).slice(1, -1)}")`);
    const version = c.u32();
    if (version !== 2 && version !== 3) c.fail(`unsupported GGUF version ${version} (2 and 3 are supported)`);
    // a tensor info needs >= 8+1+4+8+4+8 bytes, a kv >= 8+1+4+1
    const nTensors = c.count('tensor count', 8);
    const nKv = c.count('metadata count', 8);
    if (nTensors > 0 && BigInt(nTensors) * 33n > BigInt(c.remaining())) c.fail(`tensor count ${nTensors} cannot fit in the file`);
    if (nKv > 0 && BigInt(nKv) * 14n > BigInt(c.remaining())) c.fail(`metadata count ${nKv} cannot fit in the file`);

    const metadata = new MetadataMap();
    const metadataEntries: GgufMetadataEntry[] = [];
    // the header's bytes, once read to its end: the lazy arrays are decoded from them
    let head: Buffer[] | undefined;
    for (let i = 0; i < nKv; i++) {
      const key = c.string(`metadata key #${i}`, true);
      if (key.length === 0) c.fail(`metadata key #${i} is empty`);
      if (metadata.has(key)) c.fail(`duplicate metadata key "${key}"`);
      const type = c.u32();
      if (type === GGUF_VALUE.ARRAY) {
        const arrayType = c.u32();
        if (arrayType === GGUF_VALUE.ARRAY) c.fail(`metadata "${key}": nested arrays are not supported`);
        const min = scalarMinBytes[arrayType];
        if (min === undefined) c.fail(`metadata "${key}": unknown array element type ${arrayType}`);
        const n = c.count(`metadata "${key}" array length`, min);
        c.values += n;
        if (c.values > MAX_METADATA_VALUES) c.fail(`metadata "${key}": more than ${MAX_METADATA_VALUES} metadata values in all`);
        let j = 0;
        const what = () => `metadata "${key}"[${j}]`;   // named only when a value fails
        if (n >= LAZY_ARRAY_MIN && arrayType !== GGUF_VALUE.BOOL) {
          const start = c.pos;
          if (arrayType === GGUF_VALUE.STRING) c.skipStrings(n, (at) => { j = at; return what(); });
          else c.skip(n * min);   // (a fixed-size type's minimum is its size)
          const end = c.pos;
          let values: GgufScalar[] | undefined;
          const decode = () => (values ??= decodeArray(headSlice(head!, start, end), arrayType, n));
          metadata.setLazy(key, decode);
          metadataEntries.push({ key, type, arrayType, get value() { return decode(); } });
          continue;
        }
        const values: GgufScalar[] = new Array(n);
        for (; j < n; j++) values[j] = readScalar(c, arrayType, what);
        metadata.set(key, values);
        metadataEntries.push({ key, type, arrayType, value: values });
      } else {
        if (scalarMinBytes[type] === undefined) c.fail(`metadata "${key}": unknown value type ${type}`);
        const value = readScalar(c, type, `metadata "${key}"`);
        metadata.set(key, value);
        metadataEntries.push({ key, type, value });
      }
    }

    let alignment = 32;
    if (metadata.has('general.alignment')) {
      const a = metadata.get('general.alignment');
      const entry = metadataEntries.find((e) => e.key === 'general.alignment')!;
      if (entry.type !== GGUF_VALUE.UINT32 || typeof a !== 'number' || a === 0 || (a & (a - 1)) !== 0) {
        c.fail(`general.alignment must be a power-of-two u32, got ${String(a)}`);
      }
      alignment = a;
    }

    interface Raw { name: string; shape: bigint[]; type: number; offset: bigint }
    const raws: Raw[] = [];
    const names = new Set<string>();
    for (let i = 0; i < nTensors; i++) {
      const name = c.string(`tensor #${i} name`, true);
      if (name.length === 0) c.fail(`tensor #${i} has an empty name`);
      if (Buffer.byteLength(name) > MAX_TENSOR_NAME) c.fail(`tensor name "${name.slice(0, 40)}..." is longer than ${MAX_TENSOR_NAME} bytes`);
      if (names.has(name)) c.fail(`duplicate tensor name "${name}"`);
      names.add(name);
      const nDims = c.u32();
      if (nDims < 1 || nDims > MAX_DIMS) c.fail(`tensor "${name}": ${nDims} dimensions (1 to ${MAX_DIMS} allowed)`);
      const shape: bigint[] = [];
      for (let d = 0; d < nDims; d++) shape.push(c.u64());
      const type = c.u32();
      const offset = c.u64();
      raws.push({ name, shape, type, offset });
    }
    const headerBytes = c.pos;
    const dataOffset = Math.ceil(headerBytes / alignment) * alignment;
    // a file without tensors (vocab-only) may end right after its header, without padding
    if (dataOffset > st.size && raws.length > 0) c.fail(`data section starts at ${dataOffset}, past the end of the file (${st.size} bytes)`);
    const dataSize = BigInt(Math.max(0, st.size - dataOffset));

    const tensors: GgufTensorInfo[] = [];
    const tensorByName = new Map<string, GgufTensorInfo>();
    for (const r of raws) {
      const t = ggmlType(r.type);
      if (!t) c.fail(`tensor "${r.name}": unknown or removed ggml type ${r.type}`);
      let numel = 1n;
      for (const d of r.shape) {
        if (d <= 0n) c.fail(`tensor "${r.name}": dimension ${d} (dimensions must be > 0)`);
        numel *= d;
        if (numel > dataSize * BigInt(t.blockSize)) c.fail(`tensor "${r.name}": ${r.shape.join('x')} elements cannot fit in the data section`);
      }
      if (r.shape[0] % BigInt(t.blockSize) !== 0n) c.fail(`tensor "${r.name}": row length ${r.shape[0]} is not a multiple of the ${t.name} block size ${t.blockSize}`);
      const byteSize = (numel / BigInt(t.blockSize)) * BigInt(t.typeSize);
      if (r.offset % BigInt(alignment) !== 0n) c.fail(`tensor "${r.name}": offset ${r.offset} is not aligned to ${alignment}`);
      if (r.offset + byteSize > dataSize) c.fail(`tensor "${r.name}": bytes ${r.offset}..${r.offset + byteSize} run past the end of the data section (${dataSize} bytes)`);
      const info: GgufTensorInfo = {
        name: r.name, type: r.type, typeName: t.name, shape: r.shape.map(Number), numel: Number(numel),
        offset: Number(r.offset), absoluteOffset: dataOffset + Number(r.offset), byteSize: Number(byteSize),
        blockSize: t.blockSize, typeSize: t.typeSize,
      };
      tensors.push(info);
      tensorByName.set(info.name, info);
    }
    // ggml requires the tensors stored in header order, each padded to the alignment
    let expected = 0;
    for (const t of tensors) {
      if (t.offset !== expected) {
        const overlaps = t.offset < expected;
        c.fail(`tensor "${t.name}" has offset ${t.offset}, expected ${expected}${overlaps ? ' (it overlaps the previous tensor)' : ''}`);
      }
      expected += Math.ceil(t.byteSize / alignment) * alignment;
    }
    // tensor byte ranges must not overlap
    const sorted = [...tensors].sort((a, b) => a.offset - b.offset);
    for (let i = 1; i < sorted.length; i++) {
      const prev = sorted[i - 1];
      if (prev.offset + prev.byteSize > sorted[i].offset) {
        c.fail(`tensors "${prev.name}" and "${sorted[i].name}" overlap`);
      }
    }
    head = c.headPieces(headerBytes);
    return holdParse({ path, fileSize: st.size, version, alignment, headerBytes, dataOffset, metadata, metadataEntries, tensors, tensorByName }, fd, head);
  } finally {
    closeSync(fd);
  }
}

export async function readGguf(path: string, options: ReadGgufOptions = {}): Promise<GgufInfo> {
  return readGgufSync(path, options);
}

export function metaString(info: GgufInfo, key: string): string | undefined {
  const v = info.metadata.get(key);
  return typeof v === 'string' ? v : undefined;
}

export function metaNumber(info: GgufInfo, key: string): number | undefined {
  const v = info.metadata.get(key);
  return typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : undefined;
}
