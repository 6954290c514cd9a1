// A new-file patch from statistics writes the file while the selection runs (each tensor waits for
// its own mask). Checked against the same selection written to a selection file first and patched
// from it (the other path), byte for byte but for the provenance keys that name the sources; with a
// K small enough that some tensors get no weight (copied as they are); and an abort or a failing
// selection part-way, which leaves no output and no temporary.
import t from 'tap';
import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { codecTypeByName, quantize } from '../../src/core/codec.ts';
import { readGgufSync } from '../../src/gguf/reader.ts';
import { patchModel, STREAMING_LIMITS } from '../../src/patch/patch.ts';
import { fixtureModel } from '../helpers/fixtures.ts';
import { encodeGguf, fuzzModelFromFile } from '../helpers/gguf-fuzz.ts';
import { modelIdentity, saveStats } from '../../src/stats/index.ts';
import { cli, cycleModelIn, syntheticStats, syntheticStatsFile, tensorBytes, workDir } from './helpers.ts';

const dir = path.join(workDir, 'streaming');

function tensorsOf(file: string) {
  const info = readGgufSync(file);
  return info.tensors.map((x) => [x.name, tensorBytes(info, x).toString('base64')]);
}

t.test('written while selecting: the bytes of a patch from the selection file', async (t) => {
  const { model, math } = await cycleModelIn(dir, 31);
  const info = readGgufSync(model);
  // general statistics equal to the math ones for every other block tensor: MathNeuro selects
  // nothing there (the math top K is the general top K), so those tensors are copied, not patched
  const m = syntheticStats(info, 31).weights, g = syntheticStats(info, 32).weights;
  const mixed = new Map([...g].map(([name, w], i) => [name, i % 2 ? m.get(name)! : w]));
  const general = path.join(dir, 'general.stats.gguf');
  await saveStats({ model: modelIdentity(info), samples: 10, tokens: 1000, datasets: ['mixed'], weights: mixed }, general);
  const block = info.tensors.filter((x) => mixed.has(x.name));
  for (const k of [0.05, 0.2]) {
    const sel = path.join(dir, `k${k}.mnsel`), viaFile = path.join(dir, `file-${k}.gguf`), streamed = path.join(dir, `stream-${k}.gguf`);
    const s = await cli(['select', model, '--math', math, '--general', general, '--top-k', String(k), '-o', sel, '--json']);
    t.equal(s.code, 0, s.stderr);
    // (--math: its sums of squares are the importance matrix of both)
    const a = await cli(['patch', model, '-o', viaFile, '--selection', sel, '--math', math, '--json']);
    t.equal(a.code, 0, a.stderr);
    const b = await cli(['patch', model, '-o', streamed, '--math', math, '--general', general, '--top-k', String(k), '--json']);
    t.equal(b.code, 0, b.stderr);
    const ra = JSON.parse(a.stdout), rb = JSON.parse(b.stdout);
    t.equal(rb.selectedWeights, JSON.parse(s.stdout).totals[0].selected, `K=${k}: the selection's count`);
    t.same([rb.tensorsPatched, rb.blocksTouched, rb.bytesChanged, rb.realized], [ra.tensorsPatched, ra.blocksTouched, ra.bytesChanged, ra.realized], `K=${k}: the same figures`);
    t.same(tensorsOf(streamed), tensorsOf(viaFile), `K=${k}: every tensor's bytes`);
    const patchedNames = rb.tensors.map((x: { name: string }) => x.name);
    const selected = JSON.parse(s.stdout).tensors.filter((x: { counts: number[] }) => x.counts[0] > 0).map((x: { name: string }) => x.name);
    t.same(patchedNames, selected, `K=${k}: the tensors with selected weights patched, in order`);
    t.ok(rb.tensorsPatched > 0 && rb.tensorsPatched <= Math.ceil(block.length / 2), `K=${k}: ${rb.tensorsPatched} of ${block.length} tensors patched`);
    const src = readGgufSync(model), out = readGgufSync(streamed);
    const untouched = block.filter((x) => !patchedNames.includes(x.name));
    t.ok(untouched.length >= Math.floor(block.length / 2), `${untouched.length} tensors with nothing selected`);
    t.ok(untouched.every((x) => tensorBytes(src, x).equals(tensorBytes(out, out.tensorByName.get(x.name)!))), 'copied byte for byte');
  }
});

t.test('an abort, or a selection that fails, part-way: no output, no temporary', async (t) => {
  const model = path.join(dir, 'model.gguf');
  const info = readGgufSync(model);
  const math = syntheticStats(info, 31), general = syntheticStats(info, 32);
  const out = path.join(dir, 'aborted.gguf');
  const controller = new AbortController();
  let patched = 0;
  await t.rejects(patchModel({
    model, out, math, general, topK: 0.05, signal: controller.signal,
    onProgress: (p) => { if (p.phase === 'patch' && ++patched === 2) controller.abort(); },
  }), { code: 'EABORT' });
  t.equal(patched, 2, 'aborted while writing');
  t.notOk(existsSync(out));
  t.notOk(readdirSync(dir).some((f) => f.includes('mathneuro-tmp')), 'no temporary left behind');

  // statistics whose last scored tensor's column weights are cut short: that tensor's selection
  // fails after the first tensors were written
  const names = [...math.weights.keys()].filter((n) => n.startsWith('blk.'));
  const last = names[names.length - 1];
  const broken = new Map(math.weights);
  const w = broken.get(last)!;
  broken.set(last, { ...w, normSum: w.normSum.subarray(0, 3) });
  const failing = path.join(dir, 'failing.gguf');
  let written = 0;
  const e = await patchModel({ model, out: failing, math: { weights: broken }, general, topK: 0.05, onProgress: (p) => { if (p.phase === 'patch') written++; } }).then(() => undefined, (x) => x);
  t.ok(e, `refused: ${e?.message}`);
  t.ok(written > 0, `after ${written} tensors were being written`);
  t.notOk(existsSync(failing));
  t.notOk(readdirSync(dir).some((f) => f.includes('mathneuro-tmp')), 'no temporary left behind');
});

// A tensor ggml only quantizes with an importance matrix (IQ2_XXS), patched without one
// (useImportance false): refused only when it has selected weights. While streaming every scored
// tensor is a candidate until its mask is known, so the check waits for the selection there.
t.test('a tensor that cannot be requantized only matters if weights are selected in it', async (t) => {
  const f32 = await fixtureModel({ shape: 'tiny', type: 'f32', seed: 1 });
  const m = fuzzModelFromFile(f32);
  const q = m.tensors.find((x) => x.name === 'blk.0.attn_q.weight')!;
  const values = new Float32Array(q.data.buffer, q.data.byteOffset, q.data.length / 4);
  const iq2 = codecTypeByName('IQ2_XXS')!;
  q.type = iq2.id;
  q.data = Buffer.from(quantize(iq2.id, values, Number(q.shape[0]), new Float32Array(Number(q.shape[0])).fill(1)));
  const model = path.join(dir, 'iq2.gguf');
  writeFileSync(model, encodeGguf(m).bytes);
  const info = readGgufSync(model);
  t.equal(info.tensorByName.get('blk.0.attn_q.weight')!.typeName, 'IQ2_XXS');
  const math = syntheticStats(info, 41), other = syntheticStats(info, 42);
  // general statistics equal to the math ones for the IQ2_XXS tensor: nothing selected there
  const general = { weights: new Map([...other.weights].map(([name, w]) => [name, name === 'blk.0.attn_q.weight' ? math.weights.get(name)! : w])) };
  const out = path.join(dir, 'iq2-out.gguf');
  rmSync(out, { force: true });
  const r = await patchModel({ model, out, math, general, topK: 0.05, useImportance: false, hashMemo: undefined });
  t.ok(r.tensorsPatched > 0, `${r.tensorsPatched} tensors patched`);
  t.notOk(r.tensors.some((x) => x.name === 'blk.0.attn_q.weight'), 'not the IQ2_XXS tensor');
  const o = readGgufSync(out), t0 = info.tensorByName.get('blk.0.attn_q.weight')!;
  t.ok(tensorBytes(info, t0).equals(tensorBytes(o, o.tensorByName.get(t0.name)!)), 'copied as it is');
  // with weights selected in it: refused before anything is written
  const refused = path.join(dir, 'iq2-refused.gguf');
  await t.rejects(patchModel({ model, out: refused, math, general: other, topK: 0.05, useImportance: false }), { code: 'EQUANT', message: /IQ2_XXS.*importance matrix/ });
  t.notOk(existsSync(refused));
  t.notOk(readdirSync(dir).some((f) => f.includes('mathneuro-tmp')), 'no temporary left behind');
  // with the math statistics as importance matrix (the default) it is patched
  rmSync(out, { force: true });
  const ok = await patchModel({ model, out, math, general: other, topK: 0.05 });
  t.ok(ok.tensors.some((x) => x.name === 'blk.0.attn_q.weight'), 'patched with the importance matrix');
});

// Streaming, the masks wait for the patch as the selection made them while they fit
// STREAMING_LIMITS.rawMaskBytes, and Rice-coded beyond it: every budget (none kept raw, some, all)
// gives the same file as the selection written to a file first and patched from it.
t.test('masks kept as selected or coded while they wait: the same file', async (t) => {
  const model = path.join(dir, 'model.gguf');
  const info = readGgufSync(model);
  const mathFile = await syntheticStatsFile(model, 51, path.join(dir, 'budget-math.stats.gguf'));
  const generalFile = await syntheticStatsFile(model, 52, path.join(dir, 'budget-general.stats.gguf'));
  const math = syntheticStats(info, 51), general = syntheticStats(info, 52);
  const sel = path.join(dir, 'budget.mnsel');
  const s = await cli(['select', model, '--math', mathFile, '--general', generalFile, '--top-k', '0.1', '-o', sel, '--json']);
  t.equal(s.code, 0, s.stderr);
  const reference = path.join(dir, 'budget-file.gguf');
  const ra = await patchModel({ model, out: reference, selection: sel, math, force: true });
  t.equal(ra.selectedWeights, JSON.parse(s.stdout).totals[0].selected);
  const largest = Math.max(...info.tensors.filter((x) => math.weights.has(x.name)).map((x) => Math.ceil(x.numel / 8)));
  const saved = STREAMING_LIMITS.rawMaskBytes;
  try {
    for (const budget of [0, largest + 1, 2 ** 40]) {
      STREAMING_LIMITS.rawMaskBytes = budget;
      const out = path.join(dir, `budget-${budget}.gguf`);
      const rb = await patchModel({ model, out, math, general, topK: 0.1, force: true });
      t.same([rb.selectedWeights, rb.blocksTouched, rb.bytesChanged, rb.realized], [ra.selectedWeights, ra.blocksTouched, ra.bytesChanged, ra.realized], `budget ${budget}: the same figures`);
      t.same(tensorsOf(out), tensorsOf(reference), `budget ${budget}: every tensor's bytes`);
    }
  } finally {
    STREAMING_LIMITS.rawMaskBytes = saved;
  }
});
