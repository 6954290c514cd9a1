// tune on the committed arithmetic fixture (test/fixtures/arith/model.gguf, F32) and its Q8_0 copy:
// in-memory patching writes exactly the bytes the patch pipeline writes to a file and gives exactly
// that file's logits; restore gives exactly the unpatched logits; tune's chosen point keeps its KL
// budget on held-out prompts (measured on the written file, through the other loading path) and is
// no worse than the unpatched model on the objective; a second run scores nothing again and loads
// no model; bad input is a coded error.
import t from 'tap';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { readExactly } from '../../src/core/tensor-io.ts';
import { klOfLogRows, logSoftmaxRow } from '../../src/eval/divergence.ts';
import { openModelSync } from '../../src/gguf/model.ts';
import { patchModel } from '../../src/patch/patch.ts';
import { calibrationStats } from '../../src/pipeline.ts';
import { requantizeModel } from '../../src/quantize.ts';
import { StatsModel } from '../../src/stats/collect.ts';
import { InMemoryPatcher, TuneModel } from '../../src/tune/model.ts';
import { arithFixtureTask } from '../../src/tune/tasks.ts';
import { paretoFront, refinementPoints, tune } from '../../src/tune/tune.ts';
import { run } from '../helpers/cli.ts';
import { splitGguf } from '../helpers/split.ts';
import { closeSync, openSync } from 'node:fs';
import { packageRoot } from '../../src/native.ts';

process.env.OMP_WAIT_POLICY ??= 'passive';

const fixture = path.join(packageRoot, 'test', 'fixtures', 'arith', 'model.gguf');
const skip = existsSync(fixture) ? false : 'the arith fixture is missing';
const sizes = { objective: 12, general: 3, samples: 12, seed: 0 };

function fileTensorBytes(file: string, name: string): Uint8Array {
  const info = openModelSync(file);
  const tensor = info.tensorByName.get(name)!;
  const fd = openSync(tensor.file ?? info.path, 'r');
  try { const b = new Uint8Array(tensor.byteSize); readExactly(fd, b, tensor.absoluteOffset, name); return b; } finally { closeSync(fd); }
}

const sameBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.length), Buffer.from(b.buffer, b.byteOffset, b.length)) === 0;
const f32Bytes = (x: Float32Array) => new Uint8Array(x.buffer, x.byteOffset, x.byteLength);

t.test('in-memory patch = the patched file, bytes and logits; restore = unpatched logits', { skip }, async (t) => {
  const dir = t.testdir();
  const q8 = await requantizeModel({ source: fixture, out: path.join(dir, 'q8.gguf'), type: 'q8_0', force: true });
  for (const [label, model] of [['F32', fixture], ['Q8_0', q8.path]] as const) {
    const info = openModelSync(model);
    const data = arithFixtureTask().data(sizes, dir);
    const math = await calibrationStats(info, 'math', data.calibration.math, { cacheDir: dir, samples: sizes.samples, nThreads: 1 });
    const general = await calibrationStats(info, 'general', data.calibration.general, { cacheDir: dir, samples: sizes.samples, nThreads: 1 });
    const topK = 0.05, scale = 1.2;
    const out = path.join(dir, `${label}.patched.gguf`);
    await patchModel({ model, out, scale, topK, method: 'mathneuro', math: { ...math.stats, path: math.path }, general: { ...general.stats, path: general.path }, strategy: 'best', threads: 1 });

    const m = await TuneModel.open(model, { nThreads: 1, kvType: 'f32' });
    const patched = await StatsModel.open(out, { nThreads: 1, kvType: 'f32', nSeqMax: 1 });
    try {
      const patcher = new InMemoryPatcher(info, m, { method: 'mathneuro', math: math.stats, general: general.stats, strategy: 'best', threads: 1 });
      await patcher.prepare([0.005, topK]);   // one selection pass for several K, as tune does
      let changed = 0;
      for (const s of patcher.plan.scored) {
        const { bytes, patched: touched } = await patcher.patchedBytes(s.tensor, topK, scale);
        if (touched) changed++;
        if (!sameBytes(bytes, fileTensorBytes(out, s.tensor.name))) t.fail(`${label} ${s.tensor.name}: in-memory bytes differ from the patched file's`);
      }
      t.ok(changed > 10, `${label}: ${changed} tensors patched, every scored tensor byte-identical to the file`);
      // the same with the masks kept Rice-coded between prepare and patch (as for models with large masks)
      const coded = new InMemoryPatcher(info, undefined, { method: 'mathneuro', math: math.stats, general: general.stats, strategy: 'best', threads: 1, rawMaskBytes: 0 });
      await coded.prepare([topK]);
      for (const s of coded.plan.scored) {
        if (!sameBytes((await coded.patchedBytes(s.tensor, topK, scale)).bytes, fileTensorBytes(out, s.tensor.name))) t.fail(`${label} ${s.tensor.name}: bytes patched from Rice-coded masks differ from the patched file's`);
      }
      t.pass(`${label}: patched from Rice-coded masks, byte-identical too`);

      const texts = ['37+45=82\n12+9=21\n', 'The small cat sees the red ball.\nMy sister likes reading on Monday.\n'];
      const tokens = texts.map((x) => m.tokenize(x));
      const before: Float32Array[] = [];
      for (const x of tokens) before.push((await m.logits(x)).logits);   // one at a time: a model runs one pass at a time (EBUSY)
      await patcher.apply(topK, scale);
      for (const s of patcher.plan.scored.slice(0, 4)) t.ok(sameBytes(m.native.getWeight(s.tensor.name), (await patcher.patchedBytes(s.tensor, topK, scale)).bytes), `${label} ${s.tensor.name}: loaded bytes are the patched bytes`);
      for (const [i, x] of tokens.entries()) {
        const a = (await m.logits(x)).logits;
        const b = (await patched.logits(x)).logits;
        t.ok(sameBytes(f32Bytes(a), f32Bytes(b)), `${label} text ${i}: in-memory logits == the patched file's, bit for bit`);
        t.notOk(sameBytes(f32Bytes(a), f32Bytes(before[i]!)), `${label} text ${i}: and they differ from the unpatched ones`);
      }
      patcher.restore();
      for (const [i, x] of tokens.entries()) t.ok(sameBytes(f32Bytes((await m.logits(x)).logits), f32Bytes(before[i]!)), `${label} text ${i}: restore gives the unpatched logits exactly`);
    } finally {
      patched.dispose();
      m.dispose();
    }
  }
});

t.test('tune: the chosen point keeps its budget on held-out prompts, beats the unpatched objective, and a second run scores nothing', { skip }, async (t) => {
  const dir = t.testdir();
  const out = path.join(dir, 'tuned.gguf');
  // the fixture answers 99.8% of its problems: boosting (scale > 1) only sharpens what is already
  // right and raises the answers' NLL, so the grid here also holds factors below 1 (tune's contract
  // does not depend on which side of 1 wins)
  const options = {
    model: fixture, out, task: arithFixtureTask(), samples: sizes.samples, objectiveSamples: 16, generalPrompts: 3, klTokens: 96,
    topK: [0.005, 0.05], scales: [0.95, 0.98, 1.02], refine: 1, klBudget: 1e-5, cacheDir: path.join(dir, 'cache'), nThreads: 1, force: true,
  };
  const seen: string[] = [];
  const r = await tune({ ...options, onCandidate: (c) => seen.push(`${c.topK}:${c.scale}`) });
  t.equal(r.cache.hits, 0);
  t.equal(r.cache.scored, r.candidates.length);
  t.equal(seen.length, r.candidates.length, 'one report per candidate');
  t.ok(r.candidates.some((c) => c.phase === 'refine'), 'refinement points were scored');
  t.ok(r.chosen, `a point was chosen (${r.reason ?? ''})`);
  const chosen = r.chosen!;
  t.ok(chosen.feasible && chosen.kl <= options.klBudget, 'feasible on the search prompts');
  t.ok(chosen.objective < r.baseline.objective, `objective ${chosen.objective} < unpatched ${r.baseline.objective}`);
  t.ok(r.pareto.length >= 1 && r.pareto.every((p, i) => i === 0 || p.kl >= r.pareto[i - 1]!.kl && p.objective < r.pareto[i - 1]!.objective), 'the Pareto front is sorted and non-dominated');
  t.equal(r.output, out);
  t.equal(openModelSync(out).metadata.get('mathneuro.top_k'), chosen.topK, 'written with the chosen K (boost\'s patch provenance)');
  t.equal(openModelSync(out).metadata.get('mathneuro.scale'), chosen.scale);

  // held-out prompts (never searched with), through the other loading path: the written file and
  // its source, each opened with mmap as the kl task opens them
  const data = arithFixtureTask().data({ objective: 16, general: 3, samples: sizes.samples, seed: 0 }, dir);
  const p = await StatsModel.open(fixture, { nThreads: 1, nSeqMax: 1 });
  const q = await StatsModel.open(out, { nThreads: 1, nSeqMax: 1 });
  try {
    let kl = 0, n = 0;
    for (const text of data.general.heldOut) {
      t.notOk(data.general.search.includes(text), 'a held-out prompt is not a search prompt');
      const tokens = p.tokenize(text).slice(0, 96);
      const a = await p.logits(tokens), b = await q.logits(tokens);
      const lp = new Float64Array(a.nVocab), lq = new Float64Array(a.nVocab);
      for (let i = 0; i + 1 < tokens.length; i++) {
        logSoftmaxRow(a.logits, i * a.nVocab, a.nVocab, lp);
        logSoftmaxRow(b.logits, i * a.nVocab, a.nVocab, lq);
        kl += klOfLogRows(lp, lq).kl;
        n++;
      }
    }
    t.ok(kl / n <= options.klBudget, `held-out KL ${kl / n} <= budget ${options.klBudget}`);
    t.ok(Math.abs(kl / n - r.heldOut!.chosen.kl) < 1e-6 + 0.5 * r.heldOut!.chosen.kl, `tune's own held-out KL (${r.heldOut!.chosen.kl}) agrees`);
  } finally { p.dispose(); q.dispose(); }
  // tune chooses on the search objective; on the held-out problems the fixture's gains (1e-4 nats)
  // are within sampling noise, so only a gross loss fails here (the figures are printed)
  t.ok(r.heldOut!.chosen.objective <= r.heldOut!.baseline.objective + 0.002, `held-out objective ${r.heldOut!.chosen.objective} vs unpatched ${r.heldOut!.baseline.objective}`);

  // an interrupted run (here: stopped after its third candidate) resumes with the candidates it scored
  const partial = { ...options, klTokens: 64, refine: 0, write: false };
  await t.rejects(tune({ ...partial, onCandidate: (_c, i) => { if (i === 2) throw new Error('stop'); } }), /stop/);
  const resumed = await tune(partial);
  t.equal(resumed.cache.hits, 3, 'the three scored candidates come from the cache');
  t.equal(resumed.cache.scored, resumed.candidates.length - 3, 'only the rest is scored');

  // the second run: everything from the cache, and no model is loaded (the hook refuses any load)
  process.env.MATHNEURO_TEST_REFUSE_LOAD = '1';
  try {
    const again = await tune(options);
    t.equal(again.cache.scored, 0, 'no candidate scored again');
    t.equal(again.cache.hits, r.candidates.length);
    t.same(again.chosen && { k: again.chosen.topK, s: again.chosen.scale }, { k: chosen.topK, s: chosen.scale }, 'the same choice');
  } finally { delete process.env.MATHNEURO_TEST_REFUSE_LOAD; }
});

t.test('bad input is a coded error', { skip }, async (t) => {
  const dir = t.testdir();
  const base = { model: fixture, task: arithFixtureTask(), samples: 4, objectiveSamples: 2, generalPrompts: 1, topK: [0.01], scales: [1.1], refine: 0, cacheDir: path.join(dir, 'cache'), nThreads: 1, write: false };
  await t.rejects(tune({ ...base, method: 'bogus' as never }), { code: 'EUSAGE' }, 'unknown method');
  await t.rejects(tune({ ...base, klBudget: 0 }), { code: 'EUSAGE' }, 'budget 0');
  await t.rejects(tune({ ...base, klBudget: -1 }), { code: 'EUSAGE' }, 'budget < 0');
  await t.rejects(tune({ ...base, topK: [0.9] }), { code: 'EUSAGE' }, 'K out of range');
  await t.rejects(tune({ ...base, task: 'nope' }), { code: 'EUSAGE' }, 'unknown task');
  await t.rejects(tune({ ...base, useMmap: true }), { code: 'EMMAP' }, 'a model loaded with mmap cannot be patched in memory');
  const m = await TuneModel.open(fixture, { nThreads: 1 });
  try {
    const name = 'blk.0.attn_q.weight';
    const size = m.native.weightInfo(name).nbytes;
    t.throws(() => m.native.setWeight(name, new Uint8Array(size - 1)), { code: 'EUSAGE' }, 'a partial tensor');
    t.throws(() => m.native.setWeight('blk.99.nothing', new Uint8Array(4)), { code: 'ENOENT' }, 'an unknown weight');
    t.throws(() => m.native.setWeight(name, [1, 2] as never), { code: 'EUSAGE' }, 'not bytes');
  } finally { m.dispose(); }
  for (const argv of [['tune', fixture, '--kl-budget', '0'], ['tune', fixture, '--method', 'bogus'], ['tune', fixture, '--task', 'nope'], ['tune', fixture, '--scales', '1.1,-2'], ['tune', fixture, '--top-k', '']]) {
    const r = await run([...argv, '--json']);
    t.equal(r.code, 2, `${argv.slice(2).join(' ')}: exit 2`);
    t.equal(r.json?.error?.code, 'EUSAGE');
  }
});

t.test('a split model is patched in memory as the single file is', { skip }, async (t) => {
  const dir = t.testdir();
  const shards = await splitGguf(fixture, path.join(dir, 'arith'), 15);
  t.ok(shards.length >= 3, `${shards.length} shards`);
  const info = openModelSync(fixture);
  const data = arithFixtureTask().data(sizes, dir);
  const math = await calibrationStats(info, 'math', data.calibration.math, { cacheDir: dir, samples: sizes.samples, nThreads: 1 });
  const general = await calibrationStats(info, 'general', data.calibration.general, { cacheDir: dir, samples: sizes.samples, nThreads: 1 });
  const logitsOf = async (model: string) => {
    const m = await TuneModel.open(model, { nThreads: 1, kvType: 'f32' });
    try {
      const patcher = new InMemoryPatcher(openModelSync(model), m, { method: 'mathneuro', math: math.stats, general: general.stats, strategy: 'best', threads: 1 });
      await patcher.prepare([0.05]);
      await patcher.apply(0.05, 1.2);
      return (await m.logits(m.tokenize('37+45=82\nThe small cat sees the red ball.\n'))).logits;
    } finally { m.dispose(); }
  };
  t.ok(sameBytes(f32Bytes(await logitsOf(shards[0]!)), f32Bytes(await logitsOf(fixture))), 'the same logits, bit for bit');
});

t.test('refinement points and the Pareto front', async (t) => {
  const pts = refinementPoints(0.01, 1.1, [0.005, 0.01, 0.05], [1.05, 1.1, 1.2]);
  t.equal(pts.length, 9);
  t.ok(pts.some((p) => Math.abs(p.topK - Math.sqrt(0.005 * 0.01)) < 1e-6 && p.scale === 1.075));
  t.ok(pts.some((p) => Math.abs(p.topK - Math.sqrt(0.05 * 0.01)) < 1e-6 && p.scale === 1.15));
  const edge = refinementPoints(0.005, 1.01, [0.005, 0.01], [1.01, 1.02]);
  t.ok(edge.every((p) => p.topK > 0 && p.scale > 1), 'at the grid\'s edge: half-way to K/2 and to x1');
  t.same(paretoFront([{ objective: 1, kl: 0.1 }, { objective: 2, kl: 0.01 }, { objective: 1.5, kl: 0.2 }, { objective: 0.5, kl: 0.3 }]), [{ objective: 2, kl: 0.01 }, { objective: 1, kl: 0.1 }, { objective: 0.5, kl: 0.3 }]);
});
