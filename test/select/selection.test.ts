// Selection against a float64 brute-force reference: every score computed in JS, fully sorted
// (score descending, flat index ascending), top floor(n*K) taken. Exact equality of the sets.
import t from 'tap';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { dequantize, fileViews, quantize, selectTopK } from '../../src/core/codec.ts';
import { getBit } from '../../src/select/bits.ts';
import { selectTensor, topKCount, type ColumnStatistics, type ScoredTensor, type SelectionMethod } from '../../src/select/select.ts';
import type { GgufTensorInfo } from '../../src/gguf/reader.ts';

const TYPES: Record<string, { id: number; block: number }> = {
  F32: { id: 0, block: 1 }, F16: { id: 1, block: 1 }, BF16: { id: 30, block: 1 }, Q8_0: { id: 8, block: 32 },
  Q4_0: { id: 2, block: 32 }, Q4_K: { id: 12, block: 256 }, Q5_K: { id: 13, block: 256 }, Q6_K: { id: 14, block: 256 },
};

function rng(seed: number) {
  let s = seed >>> 0;
  return () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32; };
}

// Independent decoders for the float types (the quantized ones are decoded by ggml's to_float).
function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1, exp = (h >> 10) & 0x1f, frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}
function decodeReference(type: string, bytes: Uint8Array, n: number): Float64Array {
  const out = new Float64Array(n);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (type === 'F32') for (let i = 0; i < n; i++) out[i] = view.getFloat32(i * 4, true);
  else if (type === 'F16') for (let i = 0; i < n; i++) out[i] = f16ToF32(view.getUint16(i * 2, true));
  else if (type === 'BF16') { const f = new DataView(new ArrayBuffer(4)); for (let i = 0; i < n; i++) { f.setUint32(0, view.getUint16(i * 2, true) << 16); out[i] = f.getFloat32(0); } }
  else if (type === 'Q8_0') for (let b = 0; b < n / 32; b++) { const d = f16ToF32(view.getUint16(b * 34, true)); for (let j = 0; j < 32; j++) out[b * 32 + j] = Math.fround(view.getInt8(b * 34 + 2 + j) * d); }
  else if (type === 'Q4_0') for (let b = 0; b < n / 32; b++) {
    const d = f16ToF32(view.getUint16(b * 18, true));
    for (let j = 0; j < 16; j++) { const q = bytes[b * 18 + 2 + j]; out[b * 32 + j] = Math.fround(((q & 15) - 8) * d); out[b * 32 + j + 16] = Math.fround(((q >> 4) - 8) * d); }
  } else { const f = dequantize(TYPES[type].id, bytes, n); for (let i = 0; i < n; i++) out[i] = f[i]; }
  return out;
}

/** Weights with ties and exact zeros on purpose. */
function randomWeights(n: number, r: () => number): Float32Array {
  const w = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = r();
    w[i] = u < 0.05 ? 0 : u < 0.2 ? (r() < 0.5 ? -0.25 : 0.25) : (r() - 0.5) * 2 * (r() < 0.1 ? 4 : 1);
  }
  return w;
}
function randomColumns(n: number, r: () => number): Float64Array {
  const c = new Float64Array(n);
  for (let i = 0; i < n; i++) { const u = r(); c[i] = u < 0.05 ? 0 : u < 0.3 ? 2 : r() * 10; }
  return c;
}

/** Brute force: all positive scores of a group, sorted, top k. */
function referenceTop(values: Float64Array, col: (i: number) => number, begin: number, length: number, k: number): Set<number> {
  const items: { s: number; i: number }[] = [];
  for (let i = begin; i < begin + length; i++) { const s = Math.abs(values[i]) * col(i); if (s > 0) items.push({ s, i }); }
  items.sort((a, b) => (b.s - a.s) || (a.i - b.i));
  return new Set(items.slice(0, k).map((x) => x.i));
}

/** Brute force per matrix, for every column set and count: expected[set][count]. */
function referencePerMatrix(values: Float64Array, cols: Float64Array[], counts: number[], nIn: number, perMatrix: number, matrices: number): Set<number>[][] {
  return cols.map((col) => counts.map((c) => {
    const set = new Set<number>();
    for (let m = 0; m < matrices; m++) for (const i of referenceTop(values, (i) => col[m * nIn + (i % nIn)], m * perMatrix, perMatrix, c)) set.add(i);
    return set;
  }));
}

function maskToSet(mask: Uint8Array, n: number): Set<number> {
  const s = new Set<number>();
  for (let i = 0; i < n; i++) if (getBit(mask, i)) s.add(i);
  return s;
}

function sameSet(a: Set<number>, b: Set<number>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}

function stats(name: string, nIn: number, nMat: number, r: () => number): ColumnStatistics {
  const normSum = randomColumns(nIn * nMat, r);
  const sum2 = randomColumns(nIn * nMat, r);
  const counts = new Float64Array(nIn * nMat).map(() => 1 + Math.floor(r() * 3));
  return { name, nIn, nMat, normSum, sum2, counts };
}

const SHAPES: number[][] = [[32, 7], [64, 33], [256, 5], [256, 4, 3], [512, 40]];
const KS = [0.0001, 0.01, 0.1, 0.29, 0.5];

t.test('float decoders agree with ggml (the reference decodes independently)', async (t) => {
  const r = rng(7);
  for (const type of ['F32', 'F16', 'BF16', 'Q8_0', 'Q4_0']) {
    const n = 256;
    const bytes = quantize(TYPES[type].id, randomWeights(n, r), n);
    const ours = decodeReference(type, bytes, n), ggml = dequantize(TYPES[type].id, bytes, n);
    let same = true;
    for (let i = 0; i < n; i++) if (ours[i] !== ggml[i]) same = false;
    t.ok(same, `${type} decodes identically`);
  }
});

for (const method of ['mathneuro', 'wanda', 'wanda-row'] as SelectionMethod[]) {
  t.test(`${method} equals the brute-force reference`, async (t) => {
    let seed = 100;
    for (const [typeName, type] of Object.entries(TYPES)) {
      for (const shape of SHAPES) {
        if (shape[0] % type.block !== 0) continue;
        const r = rng(seed++);
        const [nIn, rows] = shape, matrices = shape[2] ?? 1, numel = nIn * rows * matrices, perMatrix = nIn * rows;
        const bytes = quantize(type.id, randomWeights(numel, r), nIn);
        const values = decodeReference(typeName, bytes, numel);
        const tensor = { name: 'blk.0.ffn_up.weight', type: type.id, typeName, shape, numel } as GgufTensorInfo;
        const math = stats(tensor.name, nIn, matrices, r), general = stats(tensor.name, nIn, matrices, r);
        const scored: ScoredTensor = { tensor, stats: math, rows, matrices };
        const wandaCol = (i: number) => { const m = Math.floor(i / perMatrix), j = i % nIn; return Math.sqrt(math.sum2[m * nIn + j] / math.counts[m * nIn + j]); };
        for (const radixMinGroup of [1, undefined]) {
          const got = await selectTensor(scored, bytes, { method, topK: KS, math: { weights: new Map([[tensor.name, math]]) }, general: { weights: new Map([[tensor.name, general]]) }, radixMinGroup });
          KS.forEach((k, q) => {
            const expected = new Set<number>();
            if (method === 'wanda-row') {
              for (let row = 0; row < rows * matrices; row++) for (const i of referenceTop(values, wandaCol, row * nIn, nIn, topKCount(nIn, k))) expected.add(i);
            } else {
              for (let m = 0; m < matrices; m++) {
                const mathCol = (i: number) => math.normSum[m * nIn + (i % nIn)];
                const generalCol = (i: number) => general.normSum[m * nIn + (i % nIn)];
                const count = topKCount(perMatrix, k);
                const mathTop = referenceTop(values, mathCol, m * perMatrix, perMatrix, count);
                const generalTop = method === 'mathneuro' ? referenceTop(values, generalCol, m * perMatrix, perMatrix, count) : new Set<number>();
                for (const i of mathTop) if (!generalTop.has(i)) expected.add(i);
              }
            }
            const actual = maskToSet(got.masks[q], numel);
            if (!sameSet(actual, expected)) t.fail(`${method} ${typeName} ${shape.join('x')} K=${k} radix=${radixMinGroup}: ${actual.size} selected, reference ${expected.size}`);
            t.equal(got.counts[q], expected.size);
          });
        }
      }
    }
  });
}

t.test('large groups: every thread count and radix refinement give the brute-force sets', async (t) => {
  // groups large enough to be split over threads (>= 2 x 65536 weights), odd widths so that matrix
  // and row boundaries fall inside mask bytes, heavy ties (F16 values repeat), K sweep in one call
  const cases = [{ type: 'F16', shape: [512, 520, 1] }, { type: 'F32', shape: [33, 4001, 3] }, { type: 'Q8_0', shape: [256, 600, 1] }, { type: 'F16', shape: [520, 512, 1], fewValues: true }];
  const ks = [0.0001, 0.02, 0.25];
  let seed = 900;
  for (const { type, shape, fewValues } of cases) {
    const r = rng(seed++);
    const [nIn, rows, matrices] = shape, perMatrix = nIn * rows, numel = perMatrix * matrices;
    // fewValues: scores take a handful of values, so every threshold is a tie shared by all threads
    const weights = fewValues ? new Float32Array(numel).map(() => [0, 0.25, -0.25, 0.5, -0.5][Math.floor(r() * 5)]) : randomWeights(numel, r);
    const bytes = quantize(TYPES[type].id, weights, nIn);
    const values = decodeReference(type, bytes, numel);
    const col = fewValues ? new Float64Array(nIn * matrices).map(() => 1 + Math.floor(r() * 2)) : randomColumns(nIn * matrices, r);
    for (const groupBy of ['matrix', 'row'] as const) {
      const group = groupBy === 'matrix' ? perMatrix : nIn;
      const counts = ks.map((k) => topKCount(group, k));
      const expected = counts.map(() => new Set<number>());
      for (let g = 0; g < numel; g += group) {
        const m = Math.floor(g / perMatrix);
        counts.forEach((c, q) => { for (const i of referenceTop(values, (i) => col[m * nIn + (i % nIn)], g, group, c)) expected[q].add(i); });
      }
      for (const threads of [1, 2, 3]) {
        // sampling 1: thresholds estimated from a sample (the default); 0: histogram only; 2: no
        // margin around the estimate, so the exact fallback runs for most K
        for (const [radixMinGroup, radixBucketLimit, radixSampling] of [[1, 1, 0], [1, 64, 0], [1, 64, 2], [1, undefined, 1], [undefined, undefined, undefined]] as const) {
          if (groupBy === 'row' && radixBucketLimit === 1 && threads !== 2) continue;
          const [masks] = await selectTopK({ type: TYPES[type].id, data: bytes, nIn, rows, matrices, colWeights: [col], groupBy, counts, threads, radixMinGroup, radixBucketLimit, radixSampling });
          const label = `${type} ${shape.join('x')} ${groupBy} threads=${threads} radix=${radixMinGroup} limit=${radixBucketLimit} sampling=${radixSampling}`;
          counts.forEach((_, q) => {
            const ok = sameSet(maskToSet(masks[q], numel), expected[q]);
            if (!ok) t.fail(`${label} K=${ks[q]}`);
            else t.pass(`${label} K=${ks[q]}`);
          });
        }
      }
    }
  }
});

t.test('fused pass: two column sets, chunked and dequantized types, window misses; masks independent of threads and sampling', async (t) => {
  // groups of 16384 weights and more take the one-pass path (radixMinGroup 1 lets the smaller ones
  // in); F32, F16 and BF16 are converted chunk by chunk there, the others dequantized whole. Cases:
  // a width that splits mask bytes, matrices split over threads (>= 2 x 32768 weights), a set whose
  // scores are mostly zero (K = 0.5 then takes every positive score: the window misses), scores
  // with a handful of values (ties fill the window: it overflows), and radixSampling 2 (no margin:
  // most windows miss and the histogram path redoes those K after clearing their bits).
  const cases = [
    { type: 'F16', shape: [128, 160, 2] }, { type: 'F32', shape: [129, 200, 1] }, { type: 'BF16', shape: [264, 500, 1] },
    { type: 'Q4_K', shape: [256, 80, 1] }, { type: 'Q8_0', shape: [96, 200, 2] }, { type: 'F16', shape: [256, 300, 1], fewValues: true },
    { type: 'F16', shape: [256, 96, 1], sparse: true },
  ];
  const ks = [0.0001, 0.01, 0.1, 0.3, 0.5];
  let seed = 1300;
  for (const { type, shape, fewValues, sparse } of cases) {
    const r = rng(seed++);
    const [nIn, rows, matrices] = shape, perMatrix = nIn * rows, numel = perMatrix * matrices;
    const weights = fewValues ? new Float32Array(numel).map(() => [0, 0.25, -0.25, 0.5, -0.5][Math.floor(r() * 5)]) : randomWeights(numel, r);
    const bytes = quantize(TYPES[type].id, weights, nIn);
    const values = decodeReference(type, bytes, numel);
    const cols = [0, 1].map((set) => {
      const c = fewValues ? new Float64Array(nIn * matrices).map(() => 1 + Math.floor(r() * 2)) : randomColumns(nIn * matrices, r);
      if (sparse && set === 1) for (let i = 0; i < c.length; i++) if (r() < 0.7) c[i] = 0;
      return c;
    });
    const counts = ks.map((k) => topKCount(perMatrix, k));
    const expected = referencePerMatrix(values, cols, counts, nIn, perMatrix, matrices);
    let first: Uint8Array[][] | undefined;
    for (const threads of [1, 2, 3]) {
      for (const radixSampling of [1, 2, 0]) {
        const masks = await selectTopK({ type: TYPES[type].id, data: bytes, nIn, rows, matrices, colWeights: cols, groupBy: 'matrix', counts, threads, radixMinGroup: 1, radixSampling });
        const label = `${type} ${shape.join('x')}${fewValues ? ' few values' : ''}${sparse ? ' sparse' : ''} threads=${threads} sampling=${radixSampling}`;
        let ok = true;
        masks.forEach((perK, set) => perK.forEach((mask, q) => { if (!sameSet(maskToSet(mask, numel), expected[set][q])) { ok = false; t.fail(`${label} set ${set} K=${ks[q]}`); } }));
        if (ok) t.pass(label);
        if (!first) first = masks;
        else t.ok(masks.every((perK, set) => perK.every((mask, q) => Buffer.from(mask).equals(Buffer.from(first![set][q])))), `${label}: bitwise the masks of threads=1 sampling=1`);
        // subtract: one set, the first's brute-force set less the second's
        const [diff, ...rest] = await selectTopK({ type: TYPES[type].id, data: bytes, nIn, rows, matrices, colWeights: cols, groupBy: 'matrix', counts, threads, radixMinGroup: 1, radixSampling, subtract: true });
        t.equal(rest.length, 0, `${label} subtract: one set`);
        t.ok(diff.every((mask, q) => sameSet(maskToSet(mask, numel), new Set([...expected[0][q]].filter((i) => !expected[1][q].has(i))))), `${label} subtract: math set less general set`);
      }
    }
  }
});

t.test('fused pass SIMD kernels (baseline, AVX2, AVX-512 as far as this CPU runs them): brute-force masks with NaN, infinities, -0 and subnormal weights', async (t) => {
  // rows of a multiple of 8 weights take the kernels that score whole groups of 8 (a width that is
  // not, 129, the generic path); simdLevel caps the level, so every level the CPU has is compared
  // with the brute force and with each other bitwise. Special values: scores of NaN and -0 are not
  // eligible, infinities are (and tie with each other), subnormal halves are tiny but positive.
  const specials = [NaN, Infinity, -Infinity, -0, 2 ** -20, -(2 ** -24), 65504];
  const cases = [{ type: 'F16', shape: [256, 300, 1] }, { type: 'F32', shape: [136, 500, 1] }, { type: 'BF16', shape: [64, 1100, 2] }, { type: 'F16', shape: [129, 400, 1] }, { type: 'Q8_0', shape: [128, 300, 1] }];
  const ks = [0.001, 0.1, 0.4];
  let seed = 2100;
  for (const { type, shape } of cases) {
    const r = rng(seed++);
    const [nIn, rows, matrices] = shape, perMatrix = nIn * rows, numel = perMatrix * matrices;
    const weights = randomWeights(numel, r);
    if (type !== 'Q8_0') for (let i = 0; i < numel; i++) if (r() < 0.01) weights[i] = specials[Math.floor(r() * specials.length)];
    const bytes = quantize(TYPES[type].id, weights, nIn);
    const values = decodeReference(type, bytes, numel);
    const cols = [0, 1].map(() => randomColumns(nIn * matrices, r));
    const counts = ks.map((k) => topKCount(perMatrix, k));
    const expected = referencePerMatrix(values, cols, counts, nIn, perMatrix, matrices);
    let first: Uint8Array[][] | undefined;
    for (const simdLevel of [0, 1, 2]) {
      for (const [threads, radixSampling] of [[1, 1], [2, 1], [2, 2]]) {
        const masks = await selectTopK({ type: TYPES[type].id, data: bytes, nIn, rows, matrices, colWeights: cols, groupBy: 'matrix', counts, threads, radixMinGroup: 1, radixSampling, simdLevel });
        const label = `${type} ${shape.join('x')} simdLevel=${simdLevel} threads=${threads} sampling=${radixSampling}`;
        let ok = true;
        masks.forEach((perK, set) => perK.forEach((mask, q) => { if (!sameSet(maskToSet(mask, numel), expected[set][q])) { ok = false; t.fail(`${label} set ${set} K=${ks[q]}`); } }));
        if (ok) t.pass(label);
        if (!first) first = masks;
        else t.ok(masks.every((perK, set) => perK.every((mask, q) => Buffer.from(mask).equals(Buffer.from(first![set][q])))), `${label}: bitwise the masks of simdLevel=0`);
      }
    }
  }
});

t.test('random: MathNeuro counts per matrix, reproducible by seed', async (t) => {
  const r = rng(5);
  const [nIn, rows, matrices] = [64, 40, 3], numel = nIn * rows * matrices;
  const bytes = quantize(0, randomWeights(numel, r), nIn);
  const tensor = { name: 'blk.1.ffn_down_exps.weight', type: 0, typeName: 'F32', shape: [nIn, rows, matrices], numel } as GgufTensorInfo;
  const math = stats(tensor.name, nIn, matrices, r), general = stats(tensor.name, nIn, matrices, r);
  const scored: ScoredTensor = { tensor, stats: math, rows, matrices };
  const base = { topK: [0.01, 0.1, 0.5], math: { weights: new Map([[tensor.name, math]]) }, general: { weights: new Map([[tensor.name, general]]) } };
  const neuro = await selectTensor(scored, bytes, { ...base, method: 'mathneuro' });
  const a = await selectTensor(scored, bytes, { ...base, method: 'random', seed: 1 });
  const b = await selectTensor(scored, bytes, { ...base, method: 'random', seed: 1 });
  const c = await selectTensor(scored, bytes, { ...base, method: 'random', seed: 2 });
  t.same(a.countsPerMatrix, neuro.countsPerMatrix, 'same count per matrix as MathNeuro');
  for (let q = 0; q < 3; q++) {
    t.same(Array.from(a.masks[q]), Array.from(b.masks[q]), 'same seed, same set');
    if (a.counts[q] > 0) t.notSame(Array.from(a.masks[q]), Array.from(c.masks[q]), 'another seed, another set');
  }
});

t.test('read: the tensor viewed from a file (mapped on the worker) gives the masks of its bytes; a short file is EIO', { skip: !fileViews && 'no file views on this platform' }, async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'mathneuro-read-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const r = rng(77);
  for (const { type, shape } of [{ type: 'F32', shape: [256, 600, 1] }, { type: 'F16', shape: [136, 700, 2] }, { type: 'Q8_0', shape: [128, 520, 1] }]) {
    const [nIn, rows, matrices] = shape, numel = nIn * rows * matrices;
    const bytes = quantize(TYPES[type].id, randomWeights(numel, r), nIn);
    const cols = [0, 1].map(() => randomColumns(nIn * matrices, r));
    const counts = [0.01, 0.2].map((k) => topKCount(nIn * rows, k));
    const request = { type: TYPES[type].id, nIn, rows, matrices, colWeights: cols, groupBy: 'matrix' as const, counts, radixMinGroup: 1 };
    const expected = await selectTopK({ ...request, data: bytes });
    // offsets: page-aligned, 32-aligned inside a page, odd (no alignment: F32 is then converted, not read in place)
    for (const offset of [8192, 4096 + 64, 4096 * 3 + 37]) {
      const file = path.join(dir, `${type}-${offset}.bin`);
      const content = new Uint8Array(offset + bytes.length + 100);
      content.fill(0xff, 0, offset); content.set(bytes, offset); content.fill(0xff, offset + bytes.length);
      writeFileSync(file, content);
      const fd = openSync(file, 'r');
      try {
        const got = await selectTopK({ ...request, read: { fd, offset } });
        t.ok(got.every((perK, set) => perK.every((m, q) => Buffer.from(m).equals(Buffer.from(expected[set][q])))), `${type} at offset ${offset}: the masks of the bytes`);
        await t.rejects(selectTopK({ ...request, read: { fd, offset: offset + 101 } }), { code: 'EIO', message: /unexpected end of file/ }, `${type}: the tensor runs past the end of the file`);
        await t.rejects(selectTopK({ ...request, read: { fd, offset }, data: bytes }), { code: 'EUSAGE' }, 'data and read');
      } finally { closeSync(fd); }
    }
  }
  await t.rejects(selectTopK({ type: 0, nIn: 8, rows: 1, matrices: 1, colWeights: [new Float64Array(8)], groupBy: 'matrix', counts: [1], read: { fd: 987654, offset: 0 } }), { code: 'EIO' }, 'not an open file');
});

t.test('native argument validation', async (t) => {
  const data = new Uint8Array(144);
  const base = { type: 12, data, nIn: 256, rows: 1, matrices: 1, colWeights: [new Float64Array(256)], groupBy: 'matrix' as const, counts: [1] };
  await t.rejects(selectTopK({ ...base, data: new Uint8Array(143) }), { code: 'EUSAGE' });
  await t.rejects(selectTopK({ ...base, nIn: 32, rows: 8 }), { code: 'EUSAGE' }, 'rows not a whole number of blocks');
  await t.rejects(selectTopK({ ...base, type: 4 }), { code: 'EQUANT' }, 'removed type id');
  await t.rejects(selectTopK({ ...base, colWeights: [new Float64Array(10)] }), { code: 'EUSAGE' });
  await t.rejects(selectTopK({ ...base, counts: [257] }), { code: 'EUSAGE' });
  await t.rejects(selectTopK({ ...base, subtract: true }), { code: 'EUSAGE' }, 'subtract with one set');
  await t.rejects(selectTopK({ ...base, subtract: 1 as unknown as boolean }), { code: 'EUSAGE' }, 'subtract not a boolean');
  t.throws(() => quantize(19, new Float32Array(256), 256), { code: 'EQUANT' }, 'IQ1_S needs an imatrix');
  t.throws(() => quantize(12, new Float32Array(100), 100), { code: 'EUSAGE' });
});
