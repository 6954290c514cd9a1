// The selection file: version 2 (masks Rice-coded, or raw where smaller) written and read back;
// version 1 files (deflated masks, written here by hand in that layout) still read; unknown
// versions and codecs, and corrupt masks, refused with ESELECTION; and `mathneuro select`'s file
// against the brute-force reference selection.
import t from 'tap';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { crc32 } from '../../src/core/crc32.ts';
import { MathneuroError } from '../../src/errors.ts';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { SELECTION_VERSION, SelectionFile, SelectionFileWriter, type SelectionFileIndex } from '../../src/select/file.ts';
import { topKCount, type TensorSelection } from '../../src/select/select.ts';
import { fixtureModel } from '../helpers/fixtures.ts';
import { cli, dequantizedTensor, referenceMathNeuro, syntheticStats, syntheticStatsFile, workDir } from '../patch/helpers.ts';

const dir = path.join(workDir, 'selection-file');
rmSync(dir, { recursive: true, force: true });
mkdirSync(dir, { recursive: true });

function rng(seed: number) {
  let s = seed >>> 0;
  return () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32; };
}

/** A tensor of numel weights with one random mask per density. */
function selection(name: string, numel: number, densities: number[], r: () => number): TensorSelection {
  const masks = densities.map((p) => {
    const m = new Uint8Array(Math.ceil(numel / 8));
    for (let i = 0; i < numel; i++) if (r() < p) m[i >> 3] |= 1 << (i & 7);
    return m;
  });
  const counts = masks.map((m) => { let c = 0; for (let i = 0; i < numel; i++) c += (m[i >> 3] >> (i & 7)) & 1; return c; });
  return { tensor: { name, typeName: 'F32', shape: [numel], numel } as unknown as TensorSelection['tensor'], matrices: 1, masks, counts, countsPerMatrix: counts.map((c) => [c]) };
}

const INDEX_REST = {
  method: 'mathneuro' as const, includeOutput: false,
  model: { path: 'm.gguf', fileSize: 1, tensorCount: 3 },
  statistics: { math: { path: 'math.stats.gguf' } },
  summary: {} as SelectionFileIndex['summary'],
};

const TOP_K = [0.001, 0.05, 0.5];
const DENSITIES = [0.001, 0.05, 0.5];

async function writeV2(file: string, sels: TensorSelection[]): Promise<SelectionFileIndex> {
  const w = new SelectionFileWriter(file);
  for (const s of sels) await w.add(s);
  return w.finish({ ...INDEX_REST, topK: TOP_K });
}

/** The version 1 layout: magic | raw-deflated masks | index JSON (blobs without codec) | footer. */
function writeV1(file: string, sels: TensorSelection[], edit: (index: Record<string, unknown>) => void = () => {}): void {
  const parts: Buffer[] = [Buffer.from('MNSEL\0\0\0', 'latin1')];
  let at = 8;
  const tensors = sels.map((s) => ({
    name: s.tensor.name, type: s.tensor.typeName, shape: s.tensor.shape, numel: s.tensor.numel, counts: s.counts,
    blobs: s.masks.map((m) => { const d = deflateRawSync(m); parts.push(d); const b = { offset: at, length: d.length, crc32: crc32(m) }; at += d.length; return b; }),
  }));
  const index: Record<string, unknown> = { format: 'mathneuro-selection', version: 1, createdAt: new Date(0).toISOString(), ...INDEX_REST, topK: TOP_K, tensors };
  edit(index);
  const json = Buffer.from(JSON.stringify(index), 'utf8');
  const footer = Buffer.alloc(28);
  footer.writeBigUInt64LE(BigInt(at), 0);
  footer.writeBigUInt64LE(BigInt(json.length), 8);
  footer.writeUInt32LE(crc32(json), 16);
  footer.write('MNSELEND', 20, 'latin1');
  writeFileSync(file, Buffer.concat([...parts, json, footer]));
}

/** Rewrites a file's index (and the footer's length and checksum) through edit. */
function editIndex(file: string, edit: (index: Record<string, any>) => void): void {
  const bytes = readFileSync(file);
  const offset = Number(bytes.readBigUInt64LE(bytes.length - 28));
  const index = JSON.parse(bytes.subarray(offset, bytes.length - 28).toString('utf8'));
  edit(index);
  const json = Buffer.from(JSON.stringify(index), 'utf8');
  const footer = Buffer.from(bytes.subarray(bytes.length - 28));
  footer.writeBigUInt64LE(BigInt(json.length), 8);
  footer.writeUInt32LE(crc32(json), 16);
  writeFileSync(file, Buffer.concat([bytes.subarray(0, offset), json, footer]));
}

function sels(seed: number): TensorSelection[] {
  const r = rng(seed);
  return [selection('big', 100003, DENSITIES, r), selection('small', 13, DENSITIES, r), selection('empty', 4096, [0, 0, 0], r)];
}

const sameBytes = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));

function errorOf(fn: () => unknown): MathneuroError | undefined {
  try { fn(); } catch (e) { if (e instanceof MathneuroError) return e; throw e; }
  return undefined;
}

t.test('version 2: every mask Rice-coded or raw, whichever is smaller, and read back', async (t) => {
  const file = path.join(dir, 'v2.mnsel');
  const input = sels(1);
  const index = await writeV2(file, input);
  t.equal(index.version, 2);
  t.equal(SELECTION_VERSION, 2);
  const f = SelectionFile.open(file);
  t.equal(f.index.version, 2);
  for (const s of input) {
    const entry = f.tensor(s.tensor.name)!;
    t.same(entry.counts, s.counts, `${s.tensor.name}: counts`);
    s.masks.forEach((m, q) => {
      const blob = entry.blobs[q];
      t.ok(blob.codec === 'rice' || blob.codec === 'raw', `${s.tensor.name} K#${q}: codec ${blob.codec}`);
      t.ok(blob.length <= m.length, `${s.tensor.name} K#${q}: ${blob.length} bytes stored for ${m.length}`);
      t.equal(blob.crc32, crc32(m), 'the crc32 is the mask\'s');
      t.ok(sameBytes(f.mask(s.tensor.name, q), m), `${s.tensor.name} K#${q}: read back`);
      // into a mask the caller reuses (holding another mask's bits): the same mask, in it
      const into = new Uint8Array(m.length).fill(0xa5);
      const got = f.mask(s.tensor.name, q, into);
      t.ok(got === into && sameBytes(into, m), `${s.tensor.name} K#${q} (${blob.codec}): read back into a used mask`);
    });
  }
  t.match(errorOf(() => f.mask('big', 0, new Uint8Array(12502))), { code: 'EUSAGE', message: 'a mask of big has 12501 bytes, not 12502' });
  t.equal(f.tensor('small')!.blobs[2].codec, 'raw', 'a 13-bit mask at half density is kept raw');
  t.equal(f.tensor('big')!.blobs[0].codec, 'rice');
  t.equal(f.tensor('empty')!.blobs[0].length, 1, 'an empty mask is its one-byte header');
  const big = f.tensor('big')!.blobs;
  t.ok(big[0].length < 0.02 * 12501 && big[1].length < 0.4 * 12501, `sizes ${big.map((b) => b.length).join(', ')} of 12501`);
});

t.test('version 1 files (deflated masks) still open and give the same masks', async (t) => {
  const file = path.join(dir, 'v1.mnsel');
  const input = sels(2);
  writeV1(file, input);
  const f = SelectionFile.open(file);
  t.equal(f.index.version, 1);
  for (const s of input) s.masks.forEach((m, q) => t.ok(sameBytes(f.mask(s.tensor.name, q), m), `${s.tensor.name} K#${q}`));
  // a v1 file whose blob names a codec is not one this mathneuro wrote
  writeV1(file, input, (index) => { (index.tensors as { blobs: { codec?: string }[] }[])[0].blobs[0].codec = 'rice'; });
  t.match(errorOf(() => SelectionFile.open(file)), { code: 'ESELECTION', message: /stored as "rice"; this mathneuro reads version 1 masks deflated/ });
});

t.test('unknown versions and codecs are refused, naming what this mathneuro reads', async (t) => {
  const file = path.join(dir, 'edit.mnsel');
  await writeV2(file, sels(3));
  editIndex(file, (index) => { index.version = 3; });
  t.match(errorOf(() => SelectionFile.open(file)), { code: 'ESELECTION', message: /selection file version 3; this mathneuro reads versions 1 and 2/ });
  await writeV2(file, sels(3));
  editIndex(file, (index) => { index.tensors[0].blobs[1].codec = 'zstd'; });
  t.match(errorOf(() => SelectionFile.open(file)), { code: 'ESELECTION', message: /mask of big is stored as "zstd"; this mathneuro reads version 2 masks stored as rice or raw/ });
  await writeV2(file, sels(3));
  editIndex(file, (index) => { delete index.tensors[0].blobs[1].codec; });
  t.match(errorOf(() => SelectionFile.open(file)), { code: 'ESELECTION', message: /stored as "undefined"/ });
  await writeV2(file, sels(3));
  editIndex(file, (index) => { index.tensors[0].counts[0] = index.tensors[0].numel + 1; });
  t.match(errorOf(() => SelectionFile.open(file)), { code: 'ESELECTION', message: /counts out of range/ });
  await writeV2(file, sels(3));
  editIndex(file, (index) => { Object.assign(index.tensors[1].blobs[2], { codec: 'raw', length: 1 }); });
  t.match(errorOf(() => SelectionFile.open(file)), { code: 'ESELECTION', message: /raw mask of small is 1 bytes, not 2/ });
});

t.test('a corrupt mask is reported as such, with the file and tensor', async (t) => {
  const file = path.join(dir, 'corrupt.mnsel');
  const index = await writeV2(file, sels(4));
  const blob = index.tensors[0].blobs[1];
  t.equal(blob.codec, 'rice');
  const pristine = readFileSync(file);
  const corrupt = (at: number, value: number) => { const b = Buffer.from(pristine); b[at] = value; writeFileSync(file, b); return SelectionFile.open(file); };
  t.match(errorOf(() => corrupt(blob.offset, 0xff).mask('big', 1)), { code: 'ESELECTION', message: `${file}: mask of big is corrupt` });
  t.match(errorOf(() => corrupt(blob.offset, 0xff).mask('big', 1, new Uint8Array(12501))), { code: 'ESELECTION', message: `${file}: mask of big is corrupt` }, 'decoded into a given mask too');
  t.match(errorOf(() => corrupt(blob.offset + blob.length - 1, 0).mask('big', 1)), { code: 'ESELECTION', message: /mask of big (is corrupt|fails its checksum)/ });
  let caught = 0;
  for (let i = 1; i < blob.length; i++) {
    const f = corrupt(blob.offset + i, pristine[blob.offset + i] ^ 0x10);
    const e = errorOf(() => f.mask('big', 1));
    if (e) { caught++; if (e.code !== 'ESELECTION' || !/mask of big (is corrupt|fails its checksum)/.test(e.message)) t.fail(e.message); }
  }
  t.equal(caught, blob.length - 1, 'every flipped byte is caught (the code or the crc32)');
  // the counts of the index are what the code is decoded with: another count is a corrupt mask
  writeFileSync(file, pristine);
  editIndex(file, (index) => { index.tensors[0].counts[1] -= 1; });
  t.match(errorOf(() => SelectionFile.open(file).mask('big', 1)), { code: 'ESELECTION', message: /mask of big is corrupt/ });
});

t.test('mathneuro select writes a version 2 file whose masks are the brute-force selection', async (t) => {
  const model = await fixtureModel({ shape: 'tiny', type: 'cycle', seed: 1 });
  const mathFile = await syntheticStatsFile(model, 21, path.join(dir, 'math.stats.gguf'));
  const generalFile = await syntheticStatsFile(model, 22, path.join(dir, 'general.stats.gguf'));
  const file = path.join(dir, 'cli.mnsel');
  const ks = [0.001, 0.05, 0.3];
  const sel = await cli(['select', model, '--math', mathFile, '--general', generalFile, '--top-k', '0.1%,5%,30%', '-o', file, '--json']);
  t.equal(sel.code, 0, sel.stderr);
  const f = SelectionFile.open(file);
  t.equal(f.index.version, 2);
  t.same(f.index.topK, ks);
  const src = readGgufSync(model);
  const math = syntheticStats(src, 21), general = syntheticStats(src, 22);
  const codecs = new Set<string>();
  let compared = 0;
  for (const entry of f.index.tensors) {
    const ts = src.tensorByName.get(entry.name)!;
    t.equal(entry.shape.length, 2, `${entry.name} is a matrix`);
    const values = dequantizedTensor(src, ts);
    for (let q = 0; q < ks.length; q++) {
      codecs.add(entry.blobs[q].codec!);
      const expected = referenceMathNeuro(values, ts.shape[0], math.weights.get(ts.name)!.normSum, general.weights.get(ts.name)!.normSum, topKCount(ts.numel, ks[q]));
      const mask = f.mask(entry.name, q);
      let same = mask.length === Math.ceil(ts.numel / 8), n = 0;
      for (let i = 0; i < ts.numel && same; i++) { const on = ((mask[i >> 3] >> (i & 7)) & 1) === 1; if (on !== expected.has(i)) same = false; n += on ? 1 : 0; }
      t.ok(same && n === entry.counts[q], `${entry.name} K=${ks[q]}: the reference's ${expected.size} weights`);
      compared++;
    }
  }
  t.ok(compared > 0);
  t.ok(codecs.has('rice'), `codecs used: ${[...codecs].join(', ')}`);
});
