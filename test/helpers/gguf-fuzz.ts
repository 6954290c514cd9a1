// GGUF fuzzing: a small valid llama model written here (no native code), a map of its header
// fields, and a seeded mutator that breaks it structurally (bit flips, truncation at field
// boundaries, huge counts and lengths, bad types, offsets past the end, overlapping tensors, zero
// dimensions) or semantically (a valid GGUF whose metadata llama.cpp must still refuse cleanly).
// Used by scripts/fuzz.ts and test/hardening/fuzz.test.ts.
import { GGUF_VALUE, GGML_TYPE, ggmlType } from '../../src/gguf/types.ts';
import type { GgufMetadataEntry, GgufScalar } from '../../src/gguf/reader.ts';
import { seededRandom } from '../../src/core/random.ts';

// ---------------------------------------------------------------- writing GGUF bytes

export interface FuzzTensor { name: string; shape: bigint[]; type: number; data: Buffer }
export interface FuzzModel { version: number; metadata: GgufMetadataEntry[]; tensors: FuzzTensor[]; alignment: number }

/** One field of a GGUF header: where it is, how long, what it means. */
export interface GgufField {
  offset: number;
  size: number;
  kind: 'magic' | 'version' | 'tensor_count' | 'kv_count' | 'key_length' | 'key' | 'value_type' | 'array_type' | 'array_length'
    | 'string_length' | 'value' | 'name_length' | 'name' | 'n_dims' | 'dim' | 'tensor_type' | 'tensor_offset' | 'data';
  /** metadata key or tensor name the field belongs to */
  owner?: string;
}

class Writer {
  chunks: Buffer[] = [];
  size = 0;
  fields: GgufField[] = [];
  private push(b: Buffer, kind: GgufField['kind'], owner?: string) {
    this.fields.push({ offset: this.size, size: b.length, kind, owner });
    this.chunks.push(b);
    this.size += b.length;
  }
  u32(v: number, kind: GgufField['kind'], owner?: string) { const b = Buffer.alloc(4); b.writeUInt32LE(v >>> 0); this.push(b, kind, owner); }
  u64(v: bigint | number, kind: GgufField['kind'], owner?: string) { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt.asUintN(64, BigInt(v))); this.push(b, kind, owner); }
  raw(b: Buffer, kind: GgufField['kind'], owner?: string) { this.push(b, kind, owner); }
  string(s: string, lengthKind: GgufField['kind'], kind: GgufField['kind'], owner?: string) {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length, lengthKind, owner);
    this.push(b, kind, owner);
  }
  scalar(type: number, value: GgufScalar, owner: string) {
    const b = (n: number) => Buffer.alloc(n);
    // mutations retype values: integers take the integer part of anything numeric
    const v = typeof value === 'bigint' || typeof value === 'string' ? value
      : type === GGUF_VALUE.FLOAT32 || type === GGUF_VALUE.FLOAT64 || type === GGUF_VALUE.BOOL ? value
      : Number.isFinite(Number(value)) ? Math.trunc(Number(value)) : 0;
    let out: Buffer;
    switch (type) {
      case GGUF_VALUE.UINT8: out = b(1); out.writeUInt8(Number(v) & 0xff); break;
      case GGUF_VALUE.INT8: out = b(1); out.writeInt8(((Number(v) + 128) & 0xff) - 128); break;
      case GGUF_VALUE.UINT16: out = b(2); out.writeUInt16LE(Number(v) & 0xffff); break;
      case GGUF_VALUE.INT16: out = b(2); out.writeInt16LE(((Number(v) + 32768) & 0xffff) - 32768); break;
      case GGUF_VALUE.UINT32: out = b(4); out.writeUInt32LE(Number(v) >>> 0); break;
      case GGUF_VALUE.INT32: out = b(4); out.writeInt32LE(Number(v) | 0); break;
      case GGUF_VALUE.FLOAT32: out = b(4); out.writeFloatLE(Number(v)); break;
      case GGUF_VALUE.BOOL: out = b(1); out.writeUInt8(v ? 1 : 0); break;
      case GGUF_VALUE.UINT64: out = b(8); out.writeBigUInt64LE(BigInt.asUintN(64, BigInt(typeof v === 'string' ? 0 : v as number))); break;
      case GGUF_VALUE.INT64: out = b(8); out.writeBigInt64LE(BigInt.asIntN(64, BigInt(typeof v === 'string' ? 0 : v as number))); break;
      case GGUF_VALUE.FLOAT64: out = b(8); out.writeDoubleLE(Number(v)); break;
      case GGUF_VALUE.STRING: this.string(String(v), 'string_length', 'value', owner); return;
      default: throw new RangeError(`cannot encode GGUF value type ${type}`);
    }
    this.push(out, 'value', owner);
  }
  concat(): Buffer { return Buffer.concat(this.chunks, this.size); }
}

const pad = (n: number, a: number) => Math.ceil(n / a) * a;

export function tensorByteSize(t: { shape: bigint[]; type: number }): number {
  const info = ggmlType(t.type);
  if (!info) throw new RangeError(`unknown ggml type ${t.type}`);
  const numel = t.shape.reduce((a, b) => a * b, 1n);
  return Number(numel / BigInt(info.blockSize)) * info.typeSize;
}

/** GGUF bytes of a model, laid out as ggml does (tensors in order, each padded to the alignment), with its field map. */
export function encodeGguf(model: FuzzModel): { bytes: Buffer; fields: GgufField[] } {
  const w = new Writer();
  w.raw(Buffer.from('GGUF', 'latin1'), 'magic');
  w.u32(model.version, 'version');
  w.u64(model.tensors.length, 'tensor_count');
  w.u64(model.metadata.length, 'kv_count');
  for (const e of model.metadata) {
    w.string(e.key, 'key_length', 'key', e.key);
    w.u32(e.type, 'value_type', e.key);
    if (e.type === GGUF_VALUE.ARRAY) {
      const values = e.value as GgufScalar[];
      w.u32(e.arrayType!, 'array_type', e.key);
      w.u64(values.length, 'array_length', e.key);
      for (const v of values) w.scalar(e.arrayType!, v, e.key);
    } else {
      w.scalar(e.type, e.value as GgufScalar, e.key);
    }
  }
  let offset = 0;
  for (const t of model.tensors) {
    w.string(t.name, 'name_length', 'name', t.name);
    w.u32(t.shape.length, 'n_dims', t.name);
    for (const d of t.shape) w.u64(d, 'dim', t.name);
    w.u32(t.type, 'tensor_type', t.name);
    w.u64(offset, 'tensor_offset', t.name);
    offset += pad(t.data.length, model.alignment);
  }
  const header = w.size;
  const dataStart = model.tensors.length ? pad(header, model.alignment) : header;
  const out = Buffer.alloc(dataStart + offset);
  w.concat().copy(out, 0);
  let at = dataStart;
  for (const t of model.tensors) {
    w.fields.push({ offset: at, size: t.data.length, kind: 'data', owner: t.name });
    t.data.copy(out, at);
    at += pad(t.data.length, model.alignment);
  }
  return { bytes: out, fields: w.fields };
}

// ---------------------------------------------------------------- the base model

/** Seeded draws (mulberry32, src/core/random.ts): enough for picking mutations reproducibly. */
export class FuzzRandom {
  private readonly draw: () => number;
  constructor(seed: number) { this.draw = seededRandom((seed >>> 0) ^ 0x6d2b79f5); }
  next(): number { return this.draw(); }
  int(n: number): number { return Math.floor(this.next() * n); }
  pick<T>(a: readonly T[]): T { return a[this.int(a.length)]; }
}

function floatToHalf(f: number): number {
  const b = Buffer.alloc(4); b.writeFloatLE(f); const x = b.readUInt32LE(0);
  const sign = (x >>> 16) & 0x8000;
  let e = ((x >>> 23) & 0xff) - 127 + 15;
  const m = x & 0x7fffff;
  if (e <= 0) return sign;
  if (e >= 31) return sign | 0x7c00;
  return sign | (e << 10) | (m >>> 13);
}

function tensorData(type: number, values: Float32Array): Buffer {
  if (type === GGML_TYPE.F32) return Buffer.from(values.buffer.slice(0));
  if (type === GGML_TYPE.F16) {
    const b = Buffer.alloc(values.length * 2);
    for (let i = 0; i < values.length; i++) b.writeUInt16LE(floatToHalf(values[i]), i * 2);
    return b;
  }
  if (type === GGML_TYPE.Q8_0) {
    const blocks = values.length / 32;
    const b = Buffer.alloc(blocks * 34);
    for (let k = 0; k < blocks; k++) {
      let amax = 0;
      for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(values[k * 32 + j]));
      const d = amax / 127;
      b.writeUInt16LE(floatToHalf(d), k * 34);
      for (let j = 0; j < 32; j++) b.writeInt8(d ? Math.round(values[k * 32 + j] / d) : 0, k * 34 + 2 + j);
    }
    return b;
  }
  throw new RangeError(`fuzz base model: no encoder for type ${type}`);
}

/**
 * A small valid llama model (1 layer, n_embd 32, a 64-token SPM vocabulary with byte fallback for
 * the ASCII range, F32/F16/Q8_0 weights, ~60 KB) that llama.cpp loads and decodes.
 */
export function fuzzBaseModel(seed = 1): FuzzModel {
  const rng = new FuzzRandom(seed);
  const nEmbd = 32, nFf = 64, nHead = 2, nHeadKv = 1, nLayer = 1;
  const tokens = ['<unk>', '<s>', '</s>'];
  const types = [2, 3, 3];
  for (let b = 0; b < 256; b++) { tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`); types.push(6); }
  for (const ch of '\u2581abcdefghijklmnopqrstuvwxyz0123456789+=.') { tokens.push(ch); types.push(1); }
  const nVocab = tokens.length;
  const u32 = (key: string, value: number): GgufMetadataEntry => ({ key, type: GGUF_VALUE.UINT32, value });
  const metadata: GgufMetadataEntry[] = [
    { key: 'general.architecture', type: GGUF_VALUE.STRING, value: 'llama' },
    { key: 'general.name', type: GGUF_VALUE.STRING, value: 'mathneuro-fuzz-base' },
    u32('general.file_type', 0),
    u32('llama.context_length', 128), u32('llama.embedding_length', nEmbd), u32('llama.block_count', nLayer),
    u32('llama.feed_forward_length', nFf), u32('llama.attention.head_count', nHead), u32('llama.attention.head_count_kv', nHeadKv),
    u32('llama.rope.dimension_count', nEmbd / nHead),
    { key: 'llama.rope.freq_base', type: GGUF_VALUE.FLOAT32, value: 10000 },
    { key: 'llama.attention.layer_norm_rms_epsilon', type: GGUF_VALUE.FLOAT32, value: 1e-5 },
    u32('llama.vocab_size', nVocab),
    { key: 'tokenizer.ggml.model', type: GGUF_VALUE.STRING, value: 'llama' },
    { key: 'tokenizer.ggml.tokens', type: GGUF_VALUE.ARRAY, arrayType: GGUF_VALUE.STRING, value: tokens },
    { key: 'tokenizer.ggml.scores', type: GGUF_VALUE.ARRAY, arrayType: GGUF_VALUE.FLOAT32, value: tokens.map(() => 0) },
    { key: 'tokenizer.ggml.token_type', type: GGUF_VALUE.ARRAY, arrayType: GGUF_VALUE.INT32, value: types },
    u32('tokenizer.ggml.unknown_token_id', 0), u32('tokenizer.ggml.bos_token_id', 1), u32('tokenizer.ggml.eos_token_id', 2),
    { key: 'tokenizer.ggml.add_bos_token', type: GGUF_VALUE.BOOL, value: true },
    { key: 'tokenizer.ggml.add_space_prefix', type: GGUF_VALUE.BOOL, value: false },
  ];
  const tensors: FuzzTensor[] = [];
  const add = (name: string, shape: number[], type: number, mean = 0, std = 0.1) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++) v[i] = mean + std * (rng.next() * 2 - 1);
    tensors.push({ name, shape: shape.map(BigInt), type, data: tensorData(type, v) });
  };
  const kv = (nEmbd / nHead) * nHeadKv;
  add('token_embd.weight', [nEmbd, nVocab], GGML_TYPE.Q8_0, 0, 1);
  add('blk.0.attn_norm.weight', [nEmbd], GGML_TYPE.F32, 1, 0.1);
  add('blk.0.attn_q.weight', [nEmbd, nEmbd], GGML_TYPE.Q8_0);
  add('blk.0.attn_k.weight', [nEmbd, kv], GGML_TYPE.F16);
  add('blk.0.attn_v.weight', [nEmbd, kv], GGML_TYPE.F32);
  add('blk.0.attn_output.weight', [nEmbd, nEmbd], GGML_TYPE.Q8_0);
  add('blk.0.ffn_norm.weight', [nEmbd], GGML_TYPE.F32, 1, 0.1);
  add('blk.0.ffn_gate.weight', [nEmbd, nFf], GGML_TYPE.Q8_0);
  add('blk.0.ffn_up.weight', [nEmbd, nFf], GGML_TYPE.F16);
  add('blk.0.ffn_down.weight', [nFf, nEmbd], GGML_TYPE.Q8_0);
  add('output_norm.weight', [nEmbd], GGML_TYPE.F32, 1, 0.1);
  add('output.weight', [nEmbd, nVocab], GGML_TYPE.Q8_0);
  return { version: 3, metadata, tensors, alignment: 32 };
}

/** A validated GGUF file as a FuzzModel (to mutate files this project writes, e.g. statistics). */
export function fuzzModelFromFile(file: string): FuzzModel {
  const info = readGgufSync(file);
  const bytes = readFileSync(file);
  return {
    version: info.version, alignment: info.alignment,
    metadata: info.metadataEntries.map((e) => ({ ...e, value: Array.isArray(e.value) ? [...e.value] : e.value })),
    tensors: info.tensors.map((t) => ({ name: t.name, shape: t.shape.map(BigInt), type: t.type, data: Buffer.from(bytes.subarray(t.absoluteOffset, t.absoluteOffset + t.byteSize)) })),
  };
}

// ---------------------------------------------------------------- mutations

export interface Mutant { bytes: Buffer; kind: string; detail: string }

const HUGE_U64 = [0xffffffffffffffffn, 0x7fffffffffffffffn, 0x8000000000000000n, 0x100000000n, 0xffffffffn, 0x40000000n];
const BAD_GGML_TYPES = [4, 5, 31, 32, 33, 36, 37, 38, 43, 44, 100, 0x7fffffff, 0xffffffff];
const STRUCTURAL = ['bitflip', 'truncate', 'huge-count', 'bad-type', 'offset-past-end', 'overlap', 'zero-dim', 'dims', 'alignment', 'byte-set', 'extend'] as const;
const SEMANTIC = ['drop-key', 'hparam-value', 'key-type', 'vocab-array', 'token-id', 'arch', 'tokenizer-model', 'shape', 'drop-tensor', 'rename-tensor', 'tensor-type'] as const;
export const MUTATION_KINDS = [...STRUCTURAL, ...SEMANTIC];
/** kinds that apply to any GGUF (the others edit a model's tokenizer or architecture keys) */
export const GENERIC_MUTATION_KINDS = MUTATION_KINDS.filter((k) => k !== 'arch' && k !== 'tokenizer-model');

function cloneModel(m: FuzzModel): FuzzModel {
  return {
    version: m.version, alignment: m.alignment,
    metadata: m.metadata.map((e) => ({ ...e, value: Array.isArray(e.value) ? [...e.value] : e.value })),
    tensors: m.tensors.map((t) => ({ ...t, shape: [...t.shape] })),
  };
}

/** Mutants of one valid model. Every mutant is a pure function of (base, seed, index). */
export class GgufMutator {
  readonly bytes: Buffer;
  readonly fields: GgufField[];
  private readonly headerFields: GgufField[];
  constructor(readonly base: FuzzModel) {
    const e = encodeGguf(base);
    this.bytes = e.bytes;
    this.fields = e.fields;
    this.headerFields = e.fields.filter((f) => f.kind !== 'data');
  }

  /** the offsets at which the file can be cut between two fields (every field boundary of the header, and inside the data) */
  boundaries(): number[] {
    const set = new Set<number>([0]);
    for (const f of this.fields) { set.add(f.offset); set.add(f.offset + f.size); }
    return [...set].filter((o) => o < this.bytes.length).sort((a, b) => a - b);
  }

  mutate(seed: number, kind?: string): Mutant {
    const rng = new FuzzRandom(seed);
    const k = kind ?? rng.pick(MUTATION_KINDS);
    const b = Buffer.from(this.bytes);
    const fieldsOf = (...kinds: GgufField['kind'][]) => this.headerFields.filter((f) => kinds.includes(f.kind));
    const setU64 = (f: GgufField, v: bigint) => { if (f.size === 8) b.writeBigUInt64LE(BigInt.asUintN(64, v), f.offset); else b.writeUInt32LE(Number(BigInt.asUintN(32, v)), f.offset); };
    const semantic = (fn: (m: FuzzModel) => string): Mutant => {
      const m = cloneModel(this.base);
      const detail = fn(m);
      return { bytes: encodeGguf(m).bytes, kind: k, detail };
    };
    switch (k) {
      case 'bitflip': {
        const n = 1 + rng.int(8);
        const inHeader = rng.next() < 0.85;
        const end = inHeader ? this.headerFields[this.headerFields.length - 1].offset + this.headerFields[this.headerFields.length - 1].size : b.length;
        const flips: number[] = [];
        for (let i = 0; i < n; i++) { const bit = rng.int(end * 8); b[bit >> 3] ^= 1 << (bit & 7); flips.push(bit); }
        return { bytes: b, kind: k, detail: `bits ${flips.join(',')}` };
      }
      case 'truncate': {
        const at = rng.pick(this.boundaries());
        return { bytes: b.subarray(0, at), kind: k, detail: `at ${at}` };
      }
      case 'huge-count': {
        const f = rng.pick(fieldsOf('tensor_count', 'kv_count', 'key_length', 'string_length', 'array_length', 'name_length'));
        const v = rng.next() < 0.3 ? BigInt(b.length - f.offset + rng.int(64)) : rng.pick(HUGE_U64);
        setU64(f, v);
        return { bytes: b, kind: k, detail: `${f.kind} of ${f.owner ?? '-'} = ${v}` };
      }
      case 'bad-type': {
        const f = rng.pick(fieldsOf('tensor_type', 'value_type', 'array_type'));
        const v = f.kind === 'tensor_type' ? rng.pick(BAD_GGML_TYPES) : rng.pick([13, 14, 100, 0xffffffff, GGUF_VALUE.ARRAY, rng.int(13)]);
        b.writeUInt32LE(v >>> 0, f.offset);
        return { bytes: b, kind: k, detail: `${f.kind} of ${f.owner} = ${v}` };
      }
      case 'offset-past-end': {
        const f = rng.pick(fieldsOf('tensor_offset'));
        const v = rng.pick([BigInt(b.length), BigInt(b.length) * 2n, 0xffffffffffffffe0n, 0x7fffffffffffffe0n, BigInt(b.length - 32)]);
        setU64(f, v);
        return { bytes: b, kind: k, detail: `offset of ${f.owner} = ${v}` };
      }
      case 'overlap': {
        const offs = fieldsOf('tensor_offset');
        const i = 1 + rng.int(offs.length - 1);
        const prev = b.readBigUInt64LE(offs[i - 1].offset);
        const v = rng.next() < 0.5 ? prev : prev + 32n;
        setU64(offs[i], v);
        return { bytes: b, kind: k, detail: `offset of ${offs[i].owner} = ${v} (previous at ${prev})` };
      }
      case 'zero-dim': {
        const f = rng.pick(fieldsOf('dim'));
        const v = rng.pick([0n, 0xffffffffffffffffn, 0x8000000000000000n, 1n, 3n]);
        setU64(f, v);
        return { bytes: b, kind: k, detail: `a dim of ${f.owner} = ${v}` };
      }
      case 'dims': {
        const f = rng.pick(fieldsOf('n_dims'));
        const v = rng.pick([0, 3, 4, 5, 0xffffffff]);
        b.writeUInt32LE(v, f.offset);
        return { bytes: b, kind: k, detail: `n_dims of ${f.owner} = ${v}` };
      }
      case 'alignment': return semantic((m) => {
        const v = rng.pick([0, 1, 3, 8, 64, 48, 0x80000000]);
        const type = rng.next() < 0.8 ? GGUF_VALUE.UINT32 : rng.pick([GGUF_VALUE.UINT64, GGUF_VALUE.INT32, GGUF_VALUE.STRING]);
        m.metadata.unshift({ key: 'general.alignment', type, value: type === GGUF_VALUE.STRING ? String(v) : v });
        // the layout keeps the base alignment: a different value misplaces every tensor
        return `general.alignment = ${v} (type ${type})`;
      });
      case 'byte-set': {
        const f = rng.pick(this.headerFields);
        const at = f.offset + rng.int(f.size);
        const v = rng.pick([0, 0xff, 0x7f, 0x80]);
        b[at] = v;
        return { bytes: b, kind: k, detail: `byte ${at} (${f.kind} of ${f.owner ?? '-'}) = ${v}` };
      }
      case 'extend': {
        const extra = Buffer.alloc(1 + rng.int(4096), rng.int(256));
        return { bytes: Buffer.concat([b, extra]), kind: k, detail: `${extra.length} bytes appended` };
      }
      case 'drop-key': return semantic((m) => {
        const i = rng.int(m.metadata.length);
        const [e] = m.metadata.splice(i, 1);
        return `removed ${e.key}`;
      });
      case 'hparam-value': return semantic((m) => {
        const nums = m.metadata.filter((e) => e.type !== GGUF_VALUE.STRING && e.type !== GGUF_VALUE.ARRAY && e.type !== GGUF_VALUE.BOOL);
        const e = rng.pick(nums);
        const v = rng.pick([0, 1, 2, 3, 7, 31, 33, 64, 1000, 65535, 0x7fffffff, 0xffffffff, -1, NaN, Infinity, 1e-30, 1e30]);
        e.value = e.type === GGUF_VALUE.FLOAT32 ? v : Number.isFinite(v) ? v : 0;
        return `${e.key} = ${e.value}`;
      });
      case 'key-type': return semantic((m) => {
        const e = rng.pick(m.metadata);
        const to = rng.pick([GGUF_VALUE.UINT8, GGUF_VALUE.INT32, GGUF_VALUE.UINT64, GGUF_VALUE.FLOAT32, GGUF_VALUE.BOOL, GGUF_VALUE.STRING, GGUF_VALUE.ARRAY]);
        const old = e.value;
        const scalar = Array.isArray(old) ? old[0] ?? 0 : old;
        if (to === GGUF_VALUE.ARRAY) { e.type = to; e.arrayType = GGUF_VALUE.UINT32; e.value = [1, 2, 3]; }
        else if (to === GGUF_VALUE.STRING) { e.type = to; delete e.arrayType; e.value = String(scalar); }
        else { e.type = to; delete e.arrayType; e.value = typeof scalar === 'number' ? scalar : typeof scalar === 'boolean' ? Number(scalar) : 7; }
        return `${e.key} retyped to ${to}`;
      });
      case 'vocab-array': return semantic((m) => {
        const e = rng.pick(m.metadata.filter((x) => x.type === GGUF_VALUE.ARRAY));
        const arr = e.value as GgufScalar[];
        const op = rng.pick(['shorter', 'longer', 'empty', 'one', 'bad-entries', 'empty-strings', 'duplicates']);
        if (op === 'shorter') arr.length = rng.int(arr.length);
        else if (op === 'longer') for (let i = 0; i < 1 + rng.int(50); i++) arr.push(arr[rng.int(arr.length)]);
        else if (op === 'empty') arr.length = 0;
        else if (op === 'one') arr.length = 1;
        else if (op === 'bad-entries') for (let i = 0; i < 1 + rng.int(20); i++) {
          const j = rng.int(arr.length);
          arr[j] = e.arrayType === GGUF_VALUE.STRING ? rng.pick(['', '\u0000', '<0xZZ>', '<0x100>', '\u2581\u2581', '\ud7ff'.repeat(3)]) : rng.pick([-1, 0, 7, 255, 0x7fffffff, -0x80000000, NaN]);
        }
        else if (op === 'empty-strings' && e.arrayType === GGUF_VALUE.STRING) for (let i = 0; i < arr.length; i++) arr[i] = '';
        else if (op === 'duplicates') for (let i = 0; i < 1 + rng.int(20); i++) arr[rng.int(arr.length)] = arr[rng.int(arr.length)];
        return `${e.key}: ${op} (${arr.length})`;
      });
      case 'token-id': return semantic((m) => {
        const ids = ['tokenizer.ggml.bos_token_id', 'tokenizer.ggml.eos_token_id', 'tokenizer.ggml.unknown_token_id', 'tokenizer.ggml.padding_token_id',
          'tokenizer.ggml.seperator_token_id', 'tokenizer.ggml.eot_token_id', 'tokenizer.ggml.mask_token_id'];
        const key = rng.pick(ids);
        const v = rng.pick([299, 300, 301, 1000, 65535, 0x7fffffff, 0xffffffff, 0x80000000, 3, 0]);
        const type = rng.next() < 0.7 ? GGUF_VALUE.UINT32 : GGUF_VALUE.INT32;
        const e = m.metadata.find((x) => x.key === key);
        if (e) { e.type = type; e.value = type === GGUF_VALUE.INT32 ? v | 0 : v; } else m.metadata.push({ key, type, value: type === GGUF_VALUE.INT32 ? v | 0 : v });
        return `${key} = ${v}`;
      });
      case 'arch': return semantic((m) => {
        const e = m.metadata.find((x) => x.key === 'general.architecture')!;
        const v = rng.pick(['', 'llama2', 'gpt2', 'qwen2', 'gemma', 'phi3', 'mamba', 'bert', 'clip', 't5', 'x'.repeat(300), 'LLAMA']);
        e.value = v;
        return `general.architecture = ${v.slice(0, 20)}`;
      });
      case 'tokenizer-model': return semantic((m) => {
        const e = m.metadata.find((x) => x.key === 'tokenizer.ggml.model')!;
        const v = rng.pick(['', 'gpt2', 'bert', 't5', 'rwkv', 'no_vocab', 'none', 'plamo2', 'ugm', 'unknown-tokenizer']);
        e.value = v;
        return `tokenizer.ggml.model = ${v}`;
      });
      case 'shape': return semantic((m) => {
        const t = rng.pick(m.tensors);
        const info = ggmlType(t.type)!;
        const numel = t.shape.reduce((a, b) => a * b, 1n);
        const bs = BigInt(info.blockSize);
        // a different shape with the same byte size, or a smaller/larger one (data resized)
        const options: bigint[][] = [];
        if (t.shape.length === 2) { options.push([t.shape[1], t.shape[0]]); options.push([numel]); options.push([bs, numel / bs]); options.push([t.shape[0], t.shape[1], 1n]); }
        else options.push([bs, numel / bs], [numel / 2n, 2n]);
        options.push([t.shape[0] * 2n, ...t.shape.slice(1)]);
        const s = rng.pick(options).filter((d) => d > 0n);
        if (s.length === 0 || s[0] % bs !== 0n) return `kept shape of ${t.name}`;
        t.shape = s;
        const size = tensorByteSize(t);
        if (size !== t.data.length) { const d = Buffer.alloc(size); t.data.copy(d, 0, 0, Math.min(size, t.data.length)); t.data = d; }
        return `${t.name} shape ${s.join('x')}`;
      });
      case 'drop-tensor': return semantic((m) => {
        const i = rng.int(m.tensors.length);
        const [t] = m.tensors.splice(i, 1);
        return `removed tensor ${t.name}`;
      });
      case 'rename-tensor': return semantic((m) => {
        const t = rng.pick(m.tensors);
        const v = rng.pick(['blk.1.attn_q.weight', 'blk.99.ffn_up.weight', 'blk.-1.attn_k.weight', 'blk.0.attn_q.weight.x', 'weird', 'output.weight', 'blk.4294967296.attn_q.weight', 'rope_freqs.weight']);
        if (m.tensors.some((x) => x.name === v)) return `kept ${t.name}`;
        const old = t.name;
        t.name = v;
        return `${old} renamed ${v}`;
      });
      case 'tensor-type': return semantic((m) => {
        // a valid ggml type with the data resized to match: llama.cpp must cope or refuse
        const t = rng.pick(m.tensors);
        const to = rng.pick([GGML_TYPE.F32, GGML_TYPE.F16, GGML_TYPE.BF16, GGML_TYPE.Q8_0, GGML_TYPE.Q4_0, GGML_TYPE.I32, GGML_TYPE.I8, GGML_TYPE.F64, GGML_TYPE.Q4_K, GGML_TYPE.IQ2_XXS, GGML_TYPE.Q8_K, GGML_TYPE.Q8_1, GGML_TYPE.TQ1_0, GGML_TYPE.MXFP4]);
        const info = ggmlType(to)!;
        if (t.shape[0] % BigInt(info.blockSize) !== 0n) return `kept type of ${t.name}`;
        t.type = to;
        const size = tensorByteSize(t);
        const d = Buffer.alloc(size);
        for (let i = 0; i < size; i++) d[i] = rng.int(256);
        t.data = d;
        return `${t.name} type ${info.name} (random bytes)`;
      });
      default: throw new RangeError(`unknown mutation kind ${k}`);
    }
  }
}

// ---------------------------------------------------------------- the campaign

/** What one command did with one mutant. */
export type JobOutcome = 'ok' | 'typed' | 'untyped' | 'abort' | 'hang';

export interface JobResult { outcome: JobOutcome; code?: string; signal?: string; message?: string }

export interface MutantReport {
  index: number; kind: string; detail: string; bytes: number;
  /** the validator in this process: 'ok' or the error code; 'THROW:<name>' for an untyped exception (a bug) */
  validator: string;
  /** model-level check after a valid structure */
  modelCheck?: string;
  commands: Record<string, JobResult>;
  /** files that appeared, vanished or changed that the commands were not asked to write */
  strayWrites: string[];
}

export interface FuzzSummary {
  files: number;
  seed: number;
  byKind: Record<string, number>;
  validator: Record<string, number>;
  commands: Record<string, Record<JobOutcome, number>>;
  errorCodes: Record<string, number>;
  aborts: MutantReport[];
  hangs: MutantReport[];
  untyped: MutantReport[];
  strayWrites: MutantReport[];
  elapsedMs: number;
}

import { fork, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { checkModel } from '../../src/gguf/model-check.ts';
import { MathneuroError } from '../../src/errors.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const JS_BUG = /^(TypeError|RangeError|ReferenceError|SyntaxError|AssertionError|Error \[ERR_)/m;

/**
 * Runs CLI commands in a child process that lives across jobs (node and tsx start once): a job
 * that aborts (SIGABRT, SIGSEGV) or hangs past its timeout is counted and the child replaced.
 */
export class CliWorker {
  private child: ChildProcess | undefined;
  private jobs = 0;
  private pending: { resolve: (r: JobResult) => void; timer: NodeJS.Timeout; child: ChildProcess; id: number } | undefined;
  private nextId = 0;
  constructor(private readonly recycleAfter = 300) {}

  private start(): ChildProcess {
    const child = fork(path.join(repoRoot, 'scripts', 'fuzz.ts'), ['--worker'], {
      execArgv: ['--import', 'tsx'], stdio: ['ignore', 'ignore', 'ignore', 'ipc'], env: { ...process.env, NO_COLOR: '1' },
    });
    child.on('message', (m: { id: number; code: number; stdout: string; stderr: string }) => {
      const p = this.pending;
      if (!p || p.child !== child || p.id !== m.id) return;
      this.pending = undefined;
      clearTimeout(p.timer);
      p.resolve(classify(m.code, m.stdout, m.stderr));
    });
    child.on('exit', (code, signal) => {
      if (this.child === child) this.child = undefined;
      const p = this.pending;
      if (!p || p.child !== child) return;
      this.pending = undefined;
      clearTimeout(p.timer);
      p.resolve({ outcome: 'abort', signal: signal ?? `exit ${code}` });
    });
    return child;
  }

  run(argv: string[], timeoutMs: number): Promise<JobResult> {
    if (this.child && this.jobs >= this.recycleAfter) { this.child.kill('SIGKILL'); this.child = undefined; }
    if (!this.child) { this.child = this.start(); this.jobs = 0; }
    this.jobs++;
    const child = this.child;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        if (this.pending?.timer !== timer) return;
        this.pending = undefined;
        child.kill('SIGKILL');
        if (this.child === child) this.child = undefined;
        resolve({ outcome: 'hang' });
      }, timeoutMs);
      const id = this.nextId++;
      this.pending = { resolve, timer, child, id };
      child.send({ id, argv });
    });
  }

  close() { this.child?.kill('SIGKILL'); this.child = undefined; }
}

function classify(code: number, stdout: string, stderr: string): JobResult {
  if (code === 0) return { outcome: 'ok' };
  let error: { code?: string; message?: string } | undefined;
  try { error = JSON.parse(stdout.trim().split('\n').pop() ?? '').error; } catch { /* not JSON */ }
  if (!error?.code || !/^E[A-Z]+$/.test(error.code)) return { outcome: 'untyped', message: (stderr || stdout).slice(0, 300) };
  // --verbose prints the stack: a JS engine error turned into a code by the CLI's fallback is a bug
  const stackHead = stderr.split('\n').slice(1).join('\n');
  if (JS_BUG.test(stackHead)) return { outcome: 'untyped', code: error.code, message: stackHead.slice(0, 300) };
  return { outcome: 'typed', code: error.code, message: error.message };
}

/** The worker side: `scripts/fuzz.ts --worker` runs main(argv) per message, output captured. */
export async function fuzzWorkerMain() {
  const { main } = await import('../../src/cli/main.ts');
  process.on('message', async (m: { id: number; argv: string[] }) => {
    let stdout = '', stderr = '';
    const io = {
      stdout: { write: (s: string) => { stdout += s; return true; } } as unknown as NodeJS.WritableStream,
      stderr: { write: (s: string) => { stderr += s; return true; } } as unknown as NodeJS.WritableStream,
      env: process.env,
    };
    let code: number;
    try { code = await main(m.argv, io); } catch (e) { code = 99; stderr += `uncaught: ${(e as Error)?.stack ?? String(e)}`; }
    process.send!({ id: m.id, code, stdout, stderr });
  });
}

function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = path.join(d, name);
      const st = statSync(p);
      if (st.isDirectory()) walk(p);
      else out.set(path.relative(dir, p), st.size < 4 << 20 ? createHash('sha1').update(readFileSync(p)).digest('hex') : `${st.size}:${st.mtimeMs}`);
    }
  };
  walk(dir);
  return out;
}

function diffSnapshots(before: Map<string, string>, after: Map<string, string>, allowed: Set<string>): string[] {
  const stray: string[] = [];
  for (const [k, v] of after) if (!allowed.has(k) && before.get(k) !== v) stray.push(before.has(k) ? `changed ${k}` : `new ${k}`);
  for (const k of before.keys()) if (!after.has(k) && !allowed.has(k)) stray.push(`removed ${k}`);
  return stray;
}

export interface FuzzOptions {
  count: number;
  seed: number;
  /** run the CLI commands on the first `cliCount` mutants (default: all) */
  cliCount?: number;
  /** working directory (created; emptied of mutants as it goes) */
  dir: string;
  /** per-command timeout (default 30 s) */
  timeoutMs?: number;
  /** which commands (default: those whose modules exist) */
  commands?: string[];
  /** mutation kinds to draw from (default: all) */
  kinds?: string[];
  onMutant?: (r: MutantReport, i: number) => void;
}

const emptyOutcomes = (): Record<JobOutcome, number> => ({ ok: 0, typed: 0, untyped: 0, abort: 0, hang: 0 });

/** Mutate, validate in process, run every command on each mutant in the worker; count outcomes. */
export async function runFuzz(options: FuzzOptions): Promise<FuzzSummary> {
  const t0 = Date.now();
  const dir = path.resolve(options.dir);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(path.join(dir, 'out'), { recursive: true });
  const timeoutMs = options.timeoutMs ?? 30_000;
  const available = ['inspect', 'stats', 'select', 'patch'].filter((c) => existsSync(path.join(repoRoot, 'src', 'cli', `${c}.ts`)));
  const commands = options.commands ?? available;
  const mutator = new GgufMutator(fuzzBaseModel(1));
  const base = path.join(dir, 'base.gguf');
  writeFileSync(base, mutator.bytes);
  writeFileSync(path.join(dir, 'math.txt'), 'abc 1+2=3.\n\n12+30=42. so 4+4=8\n');
  writeFileSync(path.join(dir, 'general.txt'), 'hello world.\n\nthe cat sat on the mat.\n');
  const worker = new CliWorker();
  const flags = ['--json', '--verbose', '--quiet'];
  const mathStats = path.join(dir, 'math.stats.gguf');
  const generalStats = path.join(dir, 'general.stats.gguf');
  if (commands.some((c) => c === 'select' || c === 'patch')) {
    for (const [data, out] of [['math.txt', mathStats], ['general.txt', generalStats]]) {
      const r = await worker.run(['stats', base, '--data', path.join(dir, data), '-o', out, '--threads', '1', ...flags], 120_000);
      if (r.outcome !== 'ok') throw new MathneuroError('EIO', `fuzz setup: stats of the base model failed: ${JSON.stringify(r)}`);
    }
  }
  // odd mutants are mutated statistics files, fed to inspect, select and patch as --math
  const statsTarget = commands.some((c) => c === 'select' || c === 'patch');
  const statsMutator = statsTarget ? new GgufMutator(fuzzModelFromFile(mathStats)) : undefined;
  const statsCommands = statsTarget ? commands.filter((c) => c !== 'stats').map((c) => `${c}:stats-file`) : [];
  const summary: FuzzSummary = {
    files: 0, seed: options.seed, byKind: {}, validator: {}, commands: Object.fromEntries([...commands, ...statsCommands].map((c) => [c, emptyOutcomes()])),
    errorCodes: {}, aborts: [], hangs: [], untyped: [], strayWrites: [], elapsedMs: 0,
  };
  const file = path.join(dir, 'm.gguf');
  const statsFile = path.join(dir, 'm.stats-mutant.gguf');
  const cliCount = options.cliCount ?? options.count;
  try {
    for (let i = 0; i < options.count; i++) {
      const mseed = (options.seed * 1_000_003 + i) >>> 0;
      const onStats = statsMutator !== undefined && i % 2 === 1;
      const kinds = options.kinds ?? (onStats ? GENERIC_MUTATION_KINDS : undefined);
      const m = (onStats ? statsMutator : mutator).mutate(mseed, kinds ? kinds[new FuzzRandom(mseed ^ 0x9e3779b9).int(kinds.length)] : undefined);
      const target = onStats ? statsFile : file;
      rmSync(onStats ? file : statsFile, { force: true });
      writeFileSync(target, m.bytes);
      const report: MutantReport = { index: i, kind: onStats ? `stats-file:${m.kind}` : m.kind, detail: m.detail, bytes: m.bytes.length, validator: 'ok', commands: {}, strayWrites: [] };
      summary.byKind[report.kind] = (summary.byKind[report.kind] ?? 0) + 1;
      try {
        const info = readGgufSync(target);
        try { checkModel(info); report.modelCheck = 'ok'; } catch (e) { report.modelCheck = e instanceof MathneuroError ? e.code : `THROW:${(e as Error)?.name}`; }
      } catch (e) {
        report.validator = e instanceof MathneuroError ? e.code : `THROW:${(e as Error)?.name}: ${(e as Error)?.message}`;
      }
      const vkey = report.validator === 'ok' ? `ok (model check ${report.modelCheck})` : report.validator;
      summary.validator[vkey] = (summary.validator[vkey] ?? 0) + 1;
      if (report.validator.startsWith('THROW')) summary.untyped.push(report);
      if (i < cliCount) {
        const outputs: Record<string, string> = { stats: 'out/m.stats.gguf', select: 'out/m.mnsel', patch: 'out/m.patched.gguf' };
        const argvs: Record<string, string[]> = onStats ? {
          inspect: ['inspect', statsFile],
          select: ['select', base, '--math', statsFile, '--general', generalStats, '--top-k', '1%', '-o', path.join(dir, outputs.select)],
          patch: ['patch', base, '--math', statsFile, '--general', generalStats, '--top-k', '1%', '-o', path.join(dir, outputs.patch)],
        } : {
          inspect: ['inspect', file],
          stats: ['stats', file, '--data', path.join(dir, 'math.txt'), '-o', path.join(dir, outputs.stats), '--threads', '1'],
          select: ['select', file, '--math', mathStats, '--general', generalStats, '--top-k', '1%', '-o', path.join(dir, outputs.select)],
          patch: ['patch', file, '--math', mathStats, '--general', generalStats, '--top-k', '1%', '-o', path.join(dir, outputs.patch)],
        };
        for (const cmd of commands) {
          if (!argvs[cmd]) continue;
          const c = onStats ? `${cmd}:stats-file` : cmd;
          const before = snapshot(dir);
          const r = await worker.run([...argvs[cmd], ...flags], timeoutMs);
          const after = snapshot(dir);
          report.commands[c] = r;
          summary.commands[c][r.outcome]++;
          if (r.code) summary.errorCodes[r.code] = (summary.errorCodes[r.code] ?? 0) + 1;
          const allowed = new Set<string>(r.outcome === 'ok' && outputs[cmd] ? [outputs[cmd]] : []);
          report.strayWrites.push(...diffSnapshots(before, after, allowed).map((s) => `${c}: ${s}`));
          rmSync(path.join(dir, 'out'), { recursive: true, force: true });
          mkdirSync(path.join(dir, 'out'));
        }
        if (Object.values(report.commands).some((r) => r.outcome === 'abort')) summary.aborts.push(report);
        if (Object.values(report.commands).some((r) => r.outcome === 'hang')) summary.hangs.push(report);
        if (Object.values(report.commands).some((r) => r.outcome === 'untyped') && !summary.untyped.includes(report)) summary.untyped.push(report);
        if (report.strayWrites.length) summary.strayWrites.push(report);
      }
      summary.files++;
      options.onMutant?.(report, i);
    }
  } finally {
    worker.close();
  }
  summary.elapsedMs = Date.now() - t0;
  return summary;
}

