// The validator against hand-made broken files: every class the issue lists gives EBADGGUF with a
// reason, never another exception. The files come from encodeGguf (test/helpers/gguf-fuzz.ts), a writer
// independent of the reader, with its own map of where each header field is.
import t, { type Test } from 'tap';
import { closeSync, copyFileSync, openSync, renameSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import { MathneuroError } from '../../src/errors.ts';
import { encodeGguf, fuzzBaseModel, FuzzRandom, GgufMutator, type FuzzModel, type GgufField } from '../helpers/gguf-fuzz.ts';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { GGUF_VALUE, ggmlTypeTable } from '../../src/gguf/types.ts';
import { loadNative } from '../../src/native.ts';

const base = fuzzBaseModel(1);
const { bytes, fields } = encodeGguf(base);

function check(t: Test, dir: string, name: string, b: Buffer, pattern: RegExp) {
  const file = path.join(dir, name);
  writeFileSync(file, b);
  try {
    readGgufSync(file);
    t.fail(`${name}: accepted`);
  } catch (e) {
    t.ok(e instanceof MathneuroError, `${name}: a MathneuroError (${(e as Error).message})`);
    t.equal((e as MathneuroError).code, 'EBADGGUF', name);
    t.match((e as Error).message, pattern, name);
  }
}

const field = (kind: GgufField['kind'], owner?: string) => fields.find((f) => f.kind === kind && (owner === undefined || f.owner === owner))!;
const withU64 = (f: GgufField, v: bigint) => { const b = Buffer.from(bytes); b.writeBigUInt64LE(v, f.offset); return b; };
const withU32 = (f: GgufField, v: number) => { const b = Buffer.from(bytes); b.writeUInt32LE(v >>> 0, f.offset); return b; };

t.test('the base model is valid and reads back as written', async (t) => {
  const dir = t.testdir();
  writeFileSync(path.join(dir, 'm.gguf'), bytes);
  const info = readGgufSync(path.join(dir, 'm.gguf'));
  t.equal(info.tensors.length, base.tensors.length);
  t.same(info.tensors.map((x) => x.name), base.tensors.map((x) => x.name));
  t.same(info.metadata.get('tokenizer.ggml.tokens'), base.metadata.find((e) => e.key === 'tokenizer.ggml.tokens')!.value);
  const data = fields.filter((f) => f.kind === 'data');
  t.same(info.tensors.map((x) => [x.absoluteOffset, x.byteSize]), data.map((f) => [f.offset, f.size]), 'tensor ranges as the writer placed them');
});

t.test('every value type reads back as written, in arrays that run across the reader\'s 1 MiB refills', async (t) => {
  // The reader refills its buffer 1 MiB at a time; values here are long enough (and strings of
  // uneven length, multi-byte UTF-8 among them) that refills land inside arrays at every width.
  const rnd = new FuzzRandom(7);
  const model = fuzzBaseModel(1);
  const V = GGUF_VALUE;
  const ints = (n: number, lo: number, span: number) => Array.from({ length: n }, () => lo + rnd.int(span));
  const arrays: [string, number, (number | bigint | boolean | string)[]][] = [
    ['t.u8', V.UINT8, ints(300_001, 0, 256)],
    ['t.i8', V.INT8, ints(300_003, -128, 256)],
    ['t.u16', V.UINT16, ints(300_005, 0, 65536)],
    ['t.i16', V.INT16, ints(300_007, -32768, 65536)],
    ['t.u32', V.UINT32, ints(300_009, 0, 2 ** 32)],
    ['t.i32', V.INT32, ints(300_011, -(2 ** 31), 2 ** 32)],
    ['t.f32', V.FLOAT32, Array.from({ length: 300_013 }, () => Math.fround((rnd.next() - 0.5) * 1e6))],
    ['t.f64', V.FLOAT64, Array.from({ length: 300_015 }, () => (rnd.next() - 0.5) * 1e300)],
    // u64 and i64: safe integers come back as numbers, larger ones as bigint
    ['t.u64', V.UINT64, Array.from({ length: 200_017 }, (_, i) => (i % 3 ? rnd.int(2 ** 52) : (1n << 63n) + BigInt(rnd.int(2 ** 30))))],
    ['t.i64', V.INT64, Array.from({ length: 200_019 }, (_, i) => (i % 3 ? -rnd.int(2 ** 52) : -(1n << 62n) - BigInt(rnd.int(2 ** 30))))],
    ['t.bool', V.BOOL, Array.from({ length: 300_021 }, () => rnd.int(2) === 1)],
    ['t.str', V.STRING, Array.from({ length: 200_023 }, (_, i) => ['', 'a', 'Ġthe', '数学', 'x'.repeat(rnd.int(40)), '🙂'.repeat(rnd.int(5))][i % 6] + String(i))],
  ];
  for (const [key, arrayType, value] of arrays) model.metadata.push({ key, type: V.ARRAY, arrayType, value: value as never });
  // scalars after the arrays, at whatever offset the arrays left
  model.metadata.push({ key: 't.after.u64', type: V.UINT64, value: 2n ** 60n }, { key: 't.after.str', type: V.STRING, value: 'end' });
  const dir = t.testdir();
  const file = path.join(dir, 'arrays.gguf');
  writeFileSync(file, encodeGguf(model).bytes);
  const info = readGgufSync(file);
  for (const [key, , value] of arrays) {
    const got = info.metadata.get(key) as unknown[];
    let bad = -1;
    for (let i = 0; i < value.length && bad < 0; i++) if (!Object.is(got[i], value[i])) bad = i;
    t.equal(bad, -1, `${key}: every one of ${value.length} values${bad >= 0 ? ` (first wrong at ${bad}: ${String(got[bad])} vs ${String(value[bad])})` : ''}`);
    t.equal(got.length, value.length, `${key}: length`);
  }
  t.equal(info.metadata.get('t.after.u64'), 2n ** 60n);
  t.equal(info.metadata.get('t.after.str'), 'end');
  // (arrays of 1024 values or more are decoded when first asked for: every way of asking gives the
  // same array, and iterating decodes those not asked for yet)
  for (const [key] of arrays) t.equal(info.metadataEntries.find((e) => e.key === key)!.value, info.metadata.get(key), `${key}: one array for the map and the entries`);
  const again = readGgufSync(file, {});
  const iterated = new Map(again.metadata);
  t.same([...again.metadata.keys()], info.metadataEntries.map((e) => e.key), 'keys in file order');
  t.ok([...iterated.values()].every((v) => v !== undefined), 'iterating the map decodes every array');
  for (const key of ['t.str', 't.i64', 't.f32']) t.same(iterated.get(key), arrays.find((a) => a[0] === key)![2], `${key}: iterated, the values written`);
  t.same([...again.metadata.values()].length, again.metadata.size);
  // a string of a long array whose length runs past the end fails the parse, as before (checked
  // while the array is skipped, not when it is decoded)
  const broken = fuzzBaseModel(1);
  broken.metadata.push({ key: 't.long', type: V.ARRAY, arrayType: V.STRING, value: Array.from({ length: 5000 }, (_, i) => `s${i}`) as never });
  const enc = encodeGguf(broken).bytes;
  const at = enc.indexOf(Buffer.from('s2500', 'latin1')) - 8;
  enc.writeBigUInt64LE(1n << 40n, at);
  writeFileSync(path.join(dir, 'long.gguf'), enc);
  t.throws(() => readGgufSync(path.join(dir, 'long.gguf')), { code: 'EBADGGUF', message: /metadata "t.long"\[2500\] length 1099511627776 runs past the end of the file/ });
  // one inside the file but over the cap of one string (64 MiB; the file made longer, sparse)
  enc.writeBigUInt64LE(BigInt(64 * 2 ** 20 + 1), at);
  writeFileSync(path.join(dir, 'large.gguf'), enc);
  truncateSync(path.join(dir, 'large.gguf'), enc.length + 65 * 2 ** 20);
  t.throws(() => readGgufSync(path.join(dir, 'large.gguf')), { code: 'EBADGGUF', message: /metadata "t.long"\[2500\] length 67108865 is larger than 67108864/ });
  t.same(info.tensors.map((x) => x.name), model.tensors.map((x) => x.name), 'the tensor infos after them');
  // the held parse keeps the header bytes as the cursor read them, over many refills: a second read
  // compares them with the file's and returns the same parse
  t.equal(readGgufSync(file), info, 'read again: the parse held (its header bytes, from every refill, equal the file\'s)');
});

t.test('the public API returns infos whose metadata survives structuredClone (a Map is cloned without its methods)', async (t) => {
  const api = await import('../../src/index.ts');
  const V = GGUF_VALUE;
  const model = fuzzBaseModel(1);
  const tokens = Array.from({ length: 5000 }, (_, i) => `tok${i}`);
  const scores = Array.from({ length: 5000 }, (_, i) => Math.fround(i / 7));
  model.metadata.push({ key: 't.tokens', type: V.ARRAY, arrayType: V.STRING, value: tokens as never }, { key: 't.scores', type: V.ARRAY, arrayType: V.FLOAT32, value: scores as never });
  const dir = t.testdir();
  const bytesOut = encodeGguf(model).bytes;
  const files = ['sync.gguf', 'async.gguf', 'model.gguf', 'internal.gguf'].map((n) => { const f = path.join(dir, n); writeFileSync(f, bytesOut); return f; });
  const infos = { readGgufSync: api.readGgufSync(files[0]), readGguf: await api.readGguf(files[1]), openModelSync: api.openModelSync(files[2]) };
  for (const [name, info] of Object.entries(infos)) {
    const copy = structuredClone(info);
    t.same(copy.metadata.get('t.tokens'), tokens, `${name}: the strings, cloned`);
    t.same(copy.metadata.get('t.scores'), scores, `${name}: the floats, cloned`);
    t.same(copy.metadataEntries.find((e) => e.key === 't.tokens')!.value, tokens, `${name}: the entry, cloned`);
  }
  // the reader the CLI uses decodes on demand; withMetadataDecoded makes such an info plain data
  const inner = readGgufSync(files[3]);
  const shown = (await import('node:util')).inspect(inner.metadata, { maxArrayLength: 30 });
  t.notMatch(shown, /lazy/, 'util.inspect shows the metadata, not the decoder\'s bookkeeping');
  t.match(shown, /'t\.tokens' => \[\s+'tok0',\s+'tok1'/, 'util.inspect shows the array\'s values');
  t.equal(api.withMetadataDecoded(inner), inner, 'decoded in place');
  t.same(structuredClone(inner.metadata).get('t.tokens'), tokens, 'withMetadataDecoded: cloned whole');
});

t.test('a header read again is the same parse only while the file and its header bytes are unchanged', async (t) => {
  const dir = t.testdir();
  const file = path.join(dir, 'm.gguf');
  writeFileSync(file, bytes);
  const first = readGgufSync(file);
  t.equal(first.version, 3);
  t.equal(readGgufSync(file), first, 'read again: the parse held');
  const version = field('version');
  const fd = openSync(file, 'r+');
  // a tensor's data changed in place (not the header): the same parse
  const data = field('data');
  writeSync(fd, Buffer.from([bytes[data.offset]! ^ 0xff]), 0, 1, data.offset);
  t.equal(readGgufSync(file), first, 'tensor data changed: the same header, the same parse');
  // one header byte changed in place: the same size and inode, likely the same timestamps
  writeSync(fd, Buffer.from([2]), 0, 1, version.offset);
  closeSync(fd);
  const v2 = readGgufSync(file);
  t.not(v2, first, 'a header byte changed: parsed again');
  t.equal(v2.version, 2, 'the new value read');
  writeFileSync(file, bytes);
  const v3 = readGgufSync(file);
  t.not(v3, v2, 'rewritten: parsed again');
  t.equal(v3.version, 3);
  // the same bytes as a new file renamed over it (another inode): parsed again, equal
  copyFileSync(file, path.join(dir, 'copy.gguf'));
  renameSync(path.join(dir, 'copy.gguf'), file);
  const renamed = readGgufSync(file);
  t.not(renamed, v3, 'another inode: parsed again');
  t.same(renamed.tensors, v3.tensors);
  // a broken header is never held: the error each time; fixed, the file reads again
  writeFileSync(file, withU32(version, 9));
  t.throws(() => readGgufSync(file), { code: 'EBADGGUF' });
  t.throws(() => readGgufSync(file), { code: 'EBADGGUF' });
  writeFileSync(file, bytes);
  t.equal(readGgufSync(file).version, 3);
  // the same file under another path string is its own parse (info.path is the path given)
  const dotted = `${dir}${path.sep}.${path.sep}m.gguf`;
  t.equal(readGgufSync(dotted).path, dotted);
});

t.test('header classes: magic, version, counts, lengths, types, dims, offsets, alignment', async (t) => {
  const dir = t.testdir();
  const b = Buffer.from(bytes); b.write('GGUX', 0, 'latin1');
  check(t, dir, 'magic', b, /not a GGUF/);
  check(t, dir, 'version1', withU32(field('version'), 1), /version 1/);
  check(t, dir, 'version-big', withU32(field('version'), 0x03000000), /version/);
  for (const v of [0xffffffffffffffffn, 0x8000000000000000n, 1n << 40n, BigInt(bytes.length)]) {
    check(t, dir, `tensor-count-${v}`, withU64(field('tensor_count'), v), /tensor count .* cannot fit/);
    check(t, dir, `kv-count-${v}`, withU64(field('kv_count'), v), /metadata count .* cannot fit/);
    check(t, dir, `key-length-${v}`, withU64(field('key_length'), v), /length .* (past the end|larger)/);
    check(t, dir, `array-length-${v}`, withU64(field('array_length', 'tokenizer.ggml.tokens'), v), /array length .* cannot fit/);
    check(t, dir, `name-length-${v}`, withU64(field('name_length', 'output.weight'), v), /length .* (past the end|larger)/);
    check(t, dir, `string-length-${v}`, withU64(field('string_length', 'general.name'), v), /length .* (past the end|larger)/);
  }
  check(t, dir, 'value-type', withU32(field('value_type', 'general.name'), 13), /unknown value type 13/);
  check(t, dir, 'array-type', withU32(field('array_type', 'tokenizer.ggml.scores'), 99), /unknown array element type 99/);
  check(t, dir, 'nested-array', withU32(field('array_type', 'tokenizer.ggml.scores'), GGUF_VALUE.ARRAY), /nested arrays/);
  for (const ty of [4, 5, 31, 36, 43, 0xffffffff]) check(t, dir, `tensor-type-${ty}`, withU32(field('tensor_type', 'blk.0.attn_q.weight'), ty), /unknown or removed ggml type/);
  check(t, dir, 'zero-dim', withU64(field('dim', 'blk.0.attn_q.weight'), 0n), /dimension 0/);
  check(t, dir, 'negative-dim', withU64(field('dim', 'blk.0.attn_q.weight'), 0xffffffffffffffffn), /cannot fit/);
  check(t, dir, 'n-dims-0', withU32(field('n_dims', 'output.weight'), 0), /0 dimensions/);
  check(t, dir, 'n-dims-5', withU32(field('n_dims', 'output.weight'), 5), /5 dimensions/);
  check(t, dir, 'row-not-blocks', withU64(field('dim', 'blk.0.attn_q.weight'), 16n), /not a multiple of the Q8_0 block size|expected/);
  check(t, dir, 'offset-past-end', withU64(field('tensor_offset', 'output.weight'), BigInt(bytes.length) * 2n), /past the end|expected/);
  check(t, dir, 'offset-huge', withU64(field('tensor_offset', 'output.weight'), 0xffffffffffffffe0n), /past the end|expected/);
  check(t, dir, 'offset-unaligned', withU64(field('tensor_offset', 'output.weight'), Buffer.from(bytes).readBigUInt64LE(field('tensor_offset', 'output.weight').offset) + 1n), /aligned/);
  const prev = bytes.readBigUInt64LE(field('tensor_offset', 'blk.0.attn_q.weight').offset);
  check(t, dir, 'overlap', withU64(field('tensor_offset', 'blk.0.attn_k.weight'), prev), /overlaps|expected/);
  const nameField = field('name', 'output.weight');
  const nul = Buffer.from(bytes); nul[nameField.offset + 2] = 0;
  check(t, dir, 'nul-in-name', nul, /NUL/);
  const bad = Buffer.from(bytes); bad[nameField.offset + 2] = 0xff;
  check(t, dir, 'utf8-name', bad, /UTF-8/);
  const keyField = field('key', 'general.name');
  const badKey = Buffer.from(bytes); badKey[keyField.offset + 1] = 0xc0;
  check(t, dir, 'utf8-key', badKey, /UTF-8/);
  check(t, dir, 'duplicate-key', encodeGguf({ ...base, metadata: [...base.metadata, base.metadata[1]] }).bytes, /duplicate metadata key "general.name"/);
  check(t, dir, 'duplicate-tensor', encodeGguf({ ...base, tensors: [...base.tensors, base.tensors[2]] }).bytes, /duplicate tensor name/);
  const boolField = field('value', 'tokenizer.ggml.add_bos_token');
  const badBool = Buffer.from(bytes); badBool[boolField.offset] = 2;
  check(t, dir, 'bool', badBool, /bool value 2/);
  for (const [v, re] of [[0, /power-of-two/], [48, /power-of-two/], [4096, /aligned|expected|past the end/]] as const) {
    const m: FuzzModel = { ...base, metadata: [{ key: 'general.alignment', type: GGUF_VALUE.UINT32, value: v }, ...base.metadata] };
    check(t, dir, `alignment-${v}`, encodeGguf(m).bytes, re);
  }
  const m64: FuzzModel = { ...base, metadata: [{ key: 'general.alignment', type: GGUF_VALUE.UINT64, value: 32 }, ...base.metadata] };
  check(t, dir, 'alignment-u64', encodeGguf(m64).bytes, /power-of-two u32/);
});

t.test('truncation at every field boundary is refused', async (t) => {
  const dir = t.testdir();
  const m = new GgufMutator(base);
  let n = 0;
  // a file may end right after its last tensor's bytes (the padding after it is optional, as in ggml)
  const lastData = fields.filter((f) => f.kind === 'data').pop()!;
  const cuts = m.boundaries().filter((at) => at < lastData.offset + lastData.size);
  for (const at of cuts) {
    const file = path.join(dir, 'cut.gguf');
    writeFileSync(file, bytes.subarray(0, at));
    try { readGgufSync(file); t.fail(`cut at ${at} accepted`); } catch (e) {
      if (!(e instanceof MathneuroError) || e.code !== 'EBADGGUF') t.fail(`cut at ${at}: ${(e as Error).message}`);
      else n++;
    }
  }
  t.equal(n, cuts.length, `${n} cuts, all EBADGGUF`);
  t.ok(n > 1000, 'every field of a 300-token vocabulary');
});

t.test('the type table matches ggml (size, block size) for every id ggml knows', async (t) => {
  const native = loadNative();
  for (let id = 0; id < 64; id++) {
    const ours = ggmlTypeTable[id];
    const theirs = native.codecTypeInfo(id);
    if (!ours) {
      t.ok(!theirs || theirs.blockSize === 0 || theirs.typeSize === 0, `id ${id} is unknown to both (ggml: ${JSON.stringify(theirs)})`);
      continue;
    }
    t.ok(theirs, `ggml knows ${ours[0]}`);
    t.same([theirs!.blockSize, theirs!.typeSize], [ours[1], ours[2]], `${ours[0]}: block size, bytes per block`);
  }
});

t.test('metadata volume is capped (a crafted header cannot exhaust memory)', async (t) => {
  const dir = t.testdir();
  const n = (1 << 25) + 1;
  const head = Buffer.alloc(4 + 4 + 8 + 8 + 8 + 1 + 4 + 4 + 8);
  let o = head.write('GGUF', 0, 'latin1');
  o = head.writeUInt32LE(3, o); o = head.writeBigUInt64LE(0n, o); o = head.writeBigUInt64LE(1n, o);
  o = head.writeBigUInt64LE(1n, o); o += head.write('x', o, 'latin1');
  o = head.writeUInt32LE(GGUF_VALUE.ARRAY, o); o = head.writeUInt32LE(GGUF_VALUE.UINT8, o); head.writeBigUInt64LE(BigInt(n), o);
  const file = path.join(dir, 'many.gguf');
  writeFileSync(file, Buffer.concat([head, Buffer.alloc(n)]));
  t.throws(() => readGgufSync(file), { code: 'EBADGGUF', message: /more than 33554432 metadata values/ });
});
