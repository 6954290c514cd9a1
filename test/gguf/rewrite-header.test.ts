// ggufRewriteHeader (ggml's gguf code, on the thread pool): the source's header with keys removed,
// replaced and added, its tensor infos unchanged. Checked by reading the rewritten header (with the
// source's data section behind it) back with the project's own reader, against the key order and
// values the test expects; and its errors: a file ggml cannot read rejects, a bad entry throws.
import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { encodeGguf, fuzzBaseModel } from '../helpers/gguf-fuzz.ts';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { GGUF_VALUE } from '../../src/gguf/types.ts';
import { loadNative } from '../../src/native.ts';

t.test('keys removed, replaced (moved to the end) and added; the tensors and their data unchanged', async (t) => {
  const dir = t.testdir();
  const model = fuzzBaseModel(3);
  // a long string array, as a vocabulary is, and keys to drop and replace
  const merges = Array.from({ length: 3000 }, (_, i) => `m${i} x${i % 97}`);
  model.metadata.push(
    { key: 'x.drop', type: GGUF_VALUE.UINT32, value: 1 },
    { key: 'x.replace', type: GGUF_VALUE.STRING, value: 'old' },
    { key: 'tokenizer.ggml.merges', type: GGUF_VALUE.ARRAY, arrayType: GGUF_VALUE.STRING, value: merges },
    { key: 'x.keep', type: GGUF_VALUE.FLOAT64, value: 0.25 },
  );
  const src = path.join(dir, 'src.gguf');
  writeFileSync(src, encodeGguf(model).bytes);
  const before = readGgufSync(src);
  const set = [
    { key: 'x.replace', type: GGUF_VALUE.STRING, value: 'new' },
    { key: 'x.added', type: GGUF_VALUE.UINT32, value: 7 },
    { key: 'x.list', type: GGUF_VALUE.ARRAY, arrayType: GGUF_VALUE.INT32, value: [3, -1, 4] },
  ];
  const r = await loadNative().ggufRewriteHeader(src, set, ['x.drop']);
  t.equal(r.alignment, before.alignment);
  t.same(r.tensors.map((x) => [x.name, x.offset, x.byteSize]), before.tensors.map((x) => [x.name, x.offset, x.byteSize]), 'the tensor layout is the source\'s');
  const out = path.join(dir, 'out.gguf');
  const data = readFileSync(src).subarray(before.dataOffset);
  const pad = Buffer.alloc((before.alignment - (r.header.length % before.alignment)) % before.alignment);
  writeFileSync(out, Buffer.concat([r.header, pad, data]));
  const after = readGgufSync(out);
  const expectedKeys = [...before.metadataEntries.map((e) => e.key).filter((k) => k !== 'x.drop' && k !== 'x.replace'), 'x.replace', 'x.added', 'x.list'];
  t.same(after.metadataEntries.map((e) => e.key), expectedKeys, 'kept keys in order, then the set ones in order');
  t.equal(after.metadata.get('x.replace'), 'new');
  t.equal(after.metadata.get('x.added'), 7);
  t.same(after.metadata.get('x.list'), [3, -1, 4]);
  t.equal(after.metadata.get('x.keep'), 0.25);
  t.same(after.metadata.get('tokenizer.ggml.merges'), merges, 'the long string array as it was');
  t.same(after.tensors.map((x) => [x.name, x.typeName, x.shape.join('x'), x.offset]), before.tensors.map((x) => [x.name, x.typeName, x.shape.join('x'), x.offset]));
  t.ok(readFileSync(out).subarray(after.dataOffset).equals(data), 'the data section behind it reads as the source\'s');

  // from the header's bytes as the reader kept them (any pieces; the padding is not read): the same
  const head = readFileSync(src).subarray(0, before.headerBytes);
  for (const cuts of [[], [1], [7, 8, 4000], [before.headerBytes - 1]]) {
    const pieces: Buffer[] = [];
    let at = 0;
    for (const c of [...cuts, before.headerBytes]) { pieces.push(Buffer.from(head.subarray(at, c))); at = c; }
    const m = await loadNative().ggufRewriteHeader(src, set, ['x.drop'], pieces, before.dataOffset);
    t.ok(Buffer.from(m.header).equals(Buffer.from(r.header)), `pieces cut at ${cuts.join(', ') || 'nothing'}: the same header`);
    t.same(m.tensors, r.tensors);
  }
});

t.test('errors: a file ggml cannot read rejects; an entry that does not match its type throws before any work', async (t) => {
  const dir = t.testdir();
  await t.rejects(loadNative().ggufRewriteHeader(path.join(dir, 'missing.gguf'), [], []), { code: 'EBADGGUF', message: /ggml could not read the GGUF header/ });
  const src = path.join(dir, 'src.gguf');
  writeFileSync(src, encodeGguf(fuzzBaseModel(1)).bytes);
  t.throws(() => loadNative().ggufRewriteHeader(src, [{ key: 'x.bad', type: GGUF_VALUE.UINT32, value: 'text' }], []), { code: 'EUSAGE', message: /x\.bad/ });
  t.throws(() => loadNative().ggufRewriteHeader(src, [], [3 as unknown as string]), { code: 'EUSAGE', message: /removeKeys must be strings/ });
  const info = readGgufSync(src);
  const head = readFileSync(src).subarray(0, info.headerBytes);
  t.throws(() => loadNative().ggufRewriteHeader(src, [], [], [head]), { code: 'EUSAGE', message: /with dataOffset/ });
  t.throws(() => loadNative().ggufRewriteHeader(src, [], [], [head], info.headerBytes - 1), { code: 'EUSAGE', message: /dataOffset must be/ });
  // bytes that end before the header does: ggml's read comes up short, a rejection (not an abort)
  await t.rejects(loadNative().ggufRewriteHeader(src, [], [], [head.subarray(0, info.headerBytes - 10)], info.dataOffset), { code: 'EBADGGUF', message: /as read/ });
});
