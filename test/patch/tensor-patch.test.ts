// The whole-tensor native patch (patchTensor, through patchTensorInPlace) against a reference that
// takes the other road: the touched blocks gathered in JS, requantized by requantizeBlocks (the
// per-block codec call, one thread), the importance built per weight, and the realized-scale
// figures computed in JS from the before/after values. Same bytes, same changed ranges, same
// figures, for every type, strategy and thread count.
import t, { type Test } from 'tap';
import type { GgufTensorInfo } from '../../src/gguf/reader.ts';
import { RealizedScaleReport, type RealizedScaleRow } from '../../src/patch/realized.ts';
import { mergeRanges, patchTensorInPlace, type ChangedRange } from '../../src/patch/tensor-patch.ts';
import { getBit, newMask, setBit } from '../../src/select/bits.ts';
import { CANDIDATE_NAMES, codecTypeByName, codecTypeInfo, patchTensor, quantize, requantizeBlocks, type RequantizeStrategy } from '../../src/core/codec.ts';
import type { ColumnStatistics } from '../../src/select/select.ts';

function rng(seed: number) {
  let s = seed >>> 0;
  return () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32; };
}

/** The reference: touched blocks gathered per weight, requantizeBlocks, JS figures. */
async function referencePatch(tensor: GgufTensorInfo, bytes: Uint8Array, mask: Uint8Array, scale: number, strategy: RequantizeStrategy, importance: ColumnStatistics | undefined, realized: RealizedScaleReport) {
  const info = codecTypeInfo(tensor.type)!;
  const bs = info.blockSize, ts = info.typeSize, nIn = tensor.shape[0], perMatrix = nIn * tensor.shape[1];
  const blocks: number[] = [];
  for (let b = 0; b < tensor.numel / bs; b++) { for (let j = 0; j < bs; j++) if (getBit(mask, b * bs + j)) { blocks.push(b); break; } }
  const blockBytes = new Uint8Array(blocks.length * ts);
  const selected = newMask(blocks.length * bs);
  const imatrix = importance && info.usesImatrix ? new Float32Array(blocks.length * bs) : undefined;
  blocks.forEach((b, k) => {
    blockBytes.set(bytes.subarray(b * ts, (b + 1) * ts), k * ts);
    for (let j = 0; j < bs; j++) {
      const i = b * bs + j;
      if (getBit(mask, i)) setBit(selected, k * bs + j);
      if (imatrix) { const m = Math.floor(i / perMatrix), c = m * nIn + (i % nIn); imatrix[k * bs + j] = importance!.sum2[c] / importance!.counts[m]; }
    }
  });
  const r = await requantizeBlocks({ type: tensor.type, blocks: blockBytes, selected, scale, imatrix, strategy: info.isQuantized ? strategy : 'plain' });
  const candidates: Record<string, number> = {};
  for (const c of r.chosen) candidates[CANDIDATE_NAMES[c]] = (candidates[CANDIDATE_NAMES[c]] ?? 0) + 1;
  realized.add(info.name, r.before, r.after, selected, blocks.length, candidates);
  const out = new Uint8Array(bytes);
  const changed: ChangedRange[] = [];
  blocks.forEach((b, k) => {
    const next = r.bytes.subarray(k * ts, (k + 1) * ts);
    if (next.every((x, i) => x === out[b * ts + i])) return;
    out.set(next, b * ts);
    const last = changed[changed.length - 1];
    if (last && last.offset + last.length === b * ts) last.length += ts; else changed.push({ offset: b * ts, length: ts });
  });
  return { bytes: out, changed, blocksTouched: blocks.length };
}

const canonical = (v: unknown) => JSON.stringify(v && typeof v === 'object' ? Object.fromEntries(Object.entries(v).sort(([x], [y]) => x.localeCompare(y))) : v);

function sameRows(t: Test, got: RealizedScaleRow[], want: RealizedScaleRow[], label: string) {
  t.equal(got.length, want.length, `${label}: rows`);
  for (let i = 0; i < want.length; i++) {
    const g = got[i] as unknown as Record<string, unknown>, w = want[i] as unknown as Record<string, unknown>;
    for (const key of Object.keys(w)) {
      const a = g[key], b = w[key];
      if (typeof b === 'number' && typeof a === 'number' && Number.isFinite(b) && !Number.isInteger(b)) {
        if (Math.abs(a - b) > 1e-12 * Math.max(1, Math.abs(b))) t.fail(`${label}: ${w.type} ${key} ${a} != ${b}`);
      } else if (canonical(a) !== canonical(b)) t.fail(`${label}: ${w.type} ${key} ${JSON.stringify(a)} != ${JSON.stringify(b)}`);
    }
  }
}

const CASES: { type: string; shape: number[] }[] = [
  { type: 'F32', shape: [96, 50, 1] }, { type: 'F16', shape: [96, 70, 2] }, { type: 'BF16', shape: [64, 40, 1] }, { type: 'F16', shape: [129, 7, 1] },
  { type: 'Q8_0', shape: [256, 180, 1] }, { type: 'Q4_0', shape: [128, 150, 3] }, { type: 'Q5_1', shape: [64, 100, 1] },
  { type: 'Q4_K', shape: [512, 300, 2] }, { type: 'Q5_K', shape: [256, 90, 1] }, { type: 'Q6_K', shape: [256, 160, 1] },
  { type: 'Q3_K', shape: [256, 40, 1] }, { type: 'IQ4_NL', shape: [128, 60, 1] },
];

for (const { type, shape } of CASES) {
  t.test(`${type} ${shape.join('x')}: native whole-tensor patch equals the per-block reference`, async (t) => {
    const info = codecTypeByName(type)!;
    const r = rng(shape[0] * 7 + shape[1]);
    const [nIn, rows, matrices] = shape, numel = nIn * rows * matrices;
    const values = new Float32Array(numel).map(() => (r() < 0.03 ? 0 : (r() - 0.5) * (r() < 0.05 ? 2 : 0.2)));
    const source = quantize(info.id, values, nIn);
    // ~2% of the weights, clustered in some rows so some blocks hold several and most none
    const mask = newMask(numel);
    for (let i = 0; i < numel; i++) if (r() < (Math.floor(i / nIn) % 5 === 0 ? 0.08 : 0.004)) setBit(mask, i);
    const stats: ColumnStatistics = { name: 'w', nIn, nMat: matrices, normSum: new Float64Array(nIn * matrices), sum2: new Float64Array(nIn * matrices).map(() => 0.01 + r() * 3), counts: new Float64Array(matrices).fill(7) };
    const tensor = { name: `blk.0.${type}.weight`, type: info.id, typeName: info.name, shape, numel } as GgufTensorInfo;
    const strategies: RequantizeStrategy[] = !info.isQuantized ? ['plain'] : info.keepScale ? ['best', 'plain', 'keep-scale', 'auto'] : ['best', 'plain', 'auto'];
    for (const strategy of strategies) {
      for (const [scale, withImportance] of [[1.1, true], [0, false]] as const) {
        const importance = withImportance ? stats : undefined;
        const refReport = new RealizedScaleReport(scale);
        const ref = await referencePatch(tensor, source, mask, scale, strategy, importance, refReport);
        for (const threads of [1, 2, 3]) {
          const label = `${type} ${strategy} x${scale}${withImportance ? ' +importance' : ''} threads=${threads}`;
          const report = new RealizedScaleReport(scale);
          const bytes = new Uint8Array(source);
          const got = await patchTensorInPlace(tensor, bytes, mask, { scale, strategy, importance, realized: report, threads });
          t.ok(Buffer.from(bytes).equals(Buffer.from(ref.bytes)), `${label}: same bytes`);
          t.same(mergeRanges(got.changed), ref.changed, `${label}: same changed ranges`);
          t.equal(got.bytesChanged, ref.changed.reduce((a, c) => a + c.length, 0), `${label}: bytes changed`);
          t.equal(got.blocksTouched, ref.blocksTouched, `${label}: blocks touched`);
          sameRows(t, report.rows(), refReport.rows(), label);
          if (threads === 2) {
            // ranges merged across gaps natively, or not returned at all
            const gapped = await patchTensorInPlace(tensor, new Uint8Array(source), mask, { scale, strategy, importance, threads, mergeGap: 300 });
            const refGapped = mergeRanges(new Float64Array(ref.changed.flatMap((c) => [c.offset, c.length])), 300);
            t.same(mergeRanges(gapped.changed), refGapped, `${label}: ranges merged across gaps of 300 bytes`);
            const none = await patchTensorInPlace(tensor, new Uint8Array(source), mask, { scale, strategy, importance, threads, ranges: false });
            t.equal(none.changed.length, 0, `${label}: no ranges when not asked for`);
            t.equal(none.bytesChanged, got.bytesChanged, `${label}: bytes changed still counted`);
          }
        }
      }
    }
  });
}

// Blocks whose fp16 scale is infinite or NaN dequantize to infinities and NaNs (an infinite scale
// times code 0 is NaN): the native figures count and sum those weights as the JS reference does (a
// changed NaN, an unchanged infinity), and the bytes are the reference's.
t.test('blocks of infinite and NaN scale: the same bytes and figures as the reference', async (t) => {
  for (const [type, scaleAt] of [['Q8_0', 0], ['Q4_K', 0], ['Q4_K', 2], ['Q6_K', 208]] as const) {
    const info = codecTypeByName(type)!;
    const r = rng(97 + scaleAt);
    const nIn = 256, rows = 12, numel = nIn * rows;
    const tensor = { name: 'blk.0.w.weight', type: info.id, typeName: info.name, shape: [nIn, rows, 1], numel } as GgufTensorInfo;
    const source = quantize(info.id, new Float32Array(numel).map(() => (r() - 0.5) * 0.2), nIn);
    const bs = info.blockSize, ts = info.typeSize;
    // block 1's scale +inf, block 2's -inf, block 3's NaN (fp16 bits, little-endian)
    for (const [b, bits] of [[1, 0x7c00], [2, 0xfc00], [3, 0x7e00]] as const) { source[b * ts + scaleAt] = bits & 0xff; source[b * ts + scaleAt + 1] = bits >> 8; }
    const mask = newMask(numel);
    for (let i = 0; i < 6 * bs; i++) if (i % 5 === 1) setBit(mask, i);
    for (const strategy of ['keep-scale', 'auto', 'best'] as RequantizeStrategy[]) {
      const label = `${type} (scale bytes at ${scaleAt}) ${strategy}`;
      const refReport = new RealizedScaleReport(1.1);
      const ref = await referencePatch(tensor, source, mask, 1.1, strategy, undefined, refReport);
      const report = new RealizedScaleReport(1.1);
      const bytes = new Uint8Array(source);
      await patchTensorInPlace(tensor, bytes, mask, { scale: 1.1, strategy, realized: report, threads: 2 });
      t.ok(Buffer.from(bytes).equals(Buffer.from(ref.bytes)), `${label}: same bytes`);
      const want = refReport.rows();
      sameRows(t, report.rows(), want, label);
      t.ok(want.some((w) => !Number.isFinite(w.otherRelativeRmsChange) || Number.isNaN(w.meanRealizedScale) || w.otherShareChanged > 0), `${label}: the reference's figures see the non-finite weights`);
    }
  }
});

t.test('patchTensor refuses bad input before it reaches ggml', async (t) => {
  const q4k = codecTypeByName('Q4_K')!;
  const data = new Uint8Array(144 * 2), mask = new Uint8Array(64);
  const base = { type: q4k.id, data, mask, nIn: 256, rows: 2, matrices: 1, scale: 1.1 };
  await t.resolves(patchTensor(base), 'a valid call');
  await t.rejects(patchTensor({ ...base, data: new Uint8Array(100) }), { code: 'EUSAGE' }, 'data of the wrong size');
  await t.rejects(patchTensor({ ...base, mask: new Uint8Array(3) }), { code: 'EUSAGE' }, 'mask of the wrong size');
  await t.rejects(patchTensor({ ...base, nIn: 100, rows: 1 }), { code: 'EUSAGE' }, 'rows not whole blocks');
  await t.rejects(patchTensor({ ...base, scale: NaN }), { code: 'EUSAGE' }, 'scale NaN');
  await t.rejects(patchTensor({ ...base, importance: new Float32Array(3) }), { code: 'EUSAGE' }, 'importance of the wrong size');
  await t.rejects(patchTensor({ ...base, strategy: 'fastest' as RequantizeStrategy }), { code: 'EUSAGE' }, 'unknown strategy');
  await t.rejects(patchTensor({ ...base, type: 4 }), { code: 'EQUANT' }, 'removed type id');
  await t.rejects(patchTensor({ ...base, type: codecTypeByName('IQ2_XXS')!.id, data: new Uint8Array(66 * 2) }), { code: 'EQUANT' }, 'IQ2_XXS without importance');
  await t.rejects(patchTensor({ ...base, nIn: 2 ** 41 }), { code: 'EUSAGE' }, 'absurd shape');
  await t.rejects(patchTensor({ ...base, histogram: { min: 1, max: 0, bins: 10 } }), { code: 'EUSAGE' }, 'empty histogram range');
});

t.test('auto: keep-scale where it reaches the target, rescaled sub-blocks where a selected weight sits at the largest code', async (t) => {
  for (const type of ['Q8_0', 'Q6_K', 'Q5_K', 'Q4_K']) {
    const info = codecTypeByName(type)!;
    const r = rng(11);
    const nIn = 256, rows = 64, numel = nIn * rows;
    const values = new Float32Array(numel).map(() => (r() - 0.5) * (r() < 0.05 ? 2 : 0.2));
    const source = quantize(info.id, values, nIn);
    // 10% of the weights, the largest in magnitude (a harsh case: most sit at their block's largest code;
    // on Q4_K the closest candidate is then often keep-scale, and best's ggml requantization realizes more)
    const order = [...values.keys()].sort((a, b) => Math.abs(values[b]) - Math.abs(values[a]));
    const mask = newMask(numel);
    for (const i of order.slice(0, numel / 10)) setBit(mask, i);
    const run = async (strategy: RequantizeStrategy) => {
      const data = new Uint8Array(source);
      const res = await patchTensor({ type: info.id, data, mask, nIn, rows, matrices: 1, scale: 1.1, strategy, threads: 2 });
      return { mean: res.realized.ratioSum / res.realized.ratioCount, candidates: res.candidates, othersChanged: res.realized.othersChanged / res.realized.others };
    };
    const [keep, auto, best] = [await run('keep-scale'), await run('auto'), await run('best')];
    t.comment(`${type}: mean realized scale keep-scale ${keep.mean.toFixed(4)}, auto ${auto.mean.toFixed(4)}, best ${best.mean.toFixed(4)}; auto candidates ${[...auto.candidates].join('/')}`);
    t.ok(auto.mean > keep.mean, `${type}: auto realizes more of x1.1 than keep-scale`);
    if (type === 'Q8_0' || type === 'Q6_K') t.ok(auto.mean >= 1.085, `${type}: auto realizes at least x1.085 (best ${best.mean.toFixed(4)})`);
    if (type !== 'Q8_0') {
      t.ok(auto.candidates[CANDIDATE_NAMES.indexOf('rescaled')] > 0, `${type}: rescaled blocks`);
      t.equal(auto.candidates[CANDIDATE_NAMES.indexOf('plain')] + auto.candidates[CANDIDATE_NAMES.indexOf('weighted')], 0, `${type}: no ggml requantization needed`);
    }
  }
});

t.test('auto: dropping rescaled candidates that provably lose changes no byte and no figure', async (t) => {
  // The bound (native/keep_scale.cpp rerounded_error_bound) skips building rescaled Q4_K/Q5_K candidates
  // whose error must exceed keep-scale's; with candidateBound: false every candidate is built in full.
  // Harsh masks (the largest weights, many at their block's largest code, where the rescaled candidate
  // is built and usually loses on Q4_K), random ones, near-ties (scales just above 1), and prune.
  let dropped = 0;
  for (const type of ['Q4_K', 'Q5_K', 'Q6_K']) {
    const info = codecTypeByName(type)!;
    for (const seed of [3, 4]) {
      const r = rng(seed);
      const nIn = 512, rows = 48, numel = nIn * rows;
      const values = new Float32Array(numel).map(() => (r() - 0.5) * (r() < 0.05 ? 2 : 0.2) + (seed === 4 ? 0.05 : 0));
      const source = quantize(info.id, values, nIn);
      const order = [...values.keys()].sort((a, b) => Math.abs(values[b]) - Math.abs(values[a]));
      const largest = newMask(numel), random = newMask(numel);
      for (const i of order.slice(0, numel / 10)) setBit(largest, i);
      for (let i = 0; i < numel; i++) if (r() < 0.08) setBit(random, i);
      for (const [label, mask] of [['largest 10%', largest], ['random 8%', random]] as const) {
        for (const scale of [1.1, 1.5, 1.0000001, 0]) {
          const run = async (candidateBound: boolean) => {
            const data = new Uint8Array(source);
            const res = await patchTensor({ type: info.id, data, mask, nIn, rows, matrices: 1, scale, strategy: 'auto', threads: 2, candidateBound, histogram: { min: 0, max: 2, bins: 64 } });
            return { data, res };
          };
          const [on, off] = [await run(true), await run(false)];
          const what = `${type} seed ${seed}, ${label}, x${scale}`;
          t.ok(Buffer.from(on.data).equals(Buffer.from(off.data)), `${what}: the same bytes`);
          t.same([...on.res.changed], [...off.res.changed], `${what}: the same changed ranges`);
          t.same({ ...on.res.realized, bins: [...on.res.realized.bins] }, { ...off.res.realized, bins: [...off.res.realized.bins] }, `${what}: the same figures`);
          t.same([...on.res.candidates], [...off.res.candidates], `${what}: the same candidates kept`);
          if (type !== 'Q6_K' && label === 'largest 10%' && scale === 1.1) dropped += on.res.candidates[CANDIDATE_NAMES.indexOf('keep-scale')];
        }
      }
    }
  }
  t.ok(dropped > 0, 'keep-scale kept over a rescaled candidate in harsh Q4_K/Q5_K blocks (where the bound applies)');
  await t.rejects(patchTensor({ type: codecTypeByName('Q4_K')!.id, data: new Uint8Array(144), mask: new Uint8Array(32), nIn: 256, rows: 1, matrices: 1, scale: 1.1, candidateBound: 1 as unknown as boolean }), { code: 'EUSAGE' }, 'candidateBound must be a boolean');
});
