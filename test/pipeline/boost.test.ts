// boost/ablate end to end on a generated model: statistics cached by model (a second boost with
// another scale runs no forward pass), output loads in node-llama-cpp with the source's tokenizer
// and chat metadata, the selection matches a recomputation from the cached statistics, and an
// Ollama input is read from a fake store that stays untouched.
import t from 'tap';
import { copyFileSync, existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { getLlama } from 'node-llama-cpp';
import { boost, buildReport, loadStats, overlapStudy, patchModel, readGgufSync, renderReportHtml } from '../../src/index.ts';
import { fixtureModel } from '../helpers/fixtures.ts';
import { fakeStore } from './fake-ollama.ts';

const small = { samples: 6, check: { kl: true, klPrompts: 2 } } as const;

t.test('boost, then boost again from the cache, then ablate', async (t) => {
  const dir = t.testdir();
  const source = path.join(dir, 'tiny.gguf');
  copyFileSync(await fixtureModel({ shape: 'tiny', type: 'q8_0', seed: 21 }), source);
  const cacheDir = path.join(dir, 'cache');
  const r = await boost({ model: source, cacheDir, ...small, modelfile: true });
  t.equal(r.output, path.join(dir, 'tiny.boosted.gguf'), 'default output beside the model');
  t.equal(r.statistics.math.cached, false);
  t.equal(r.statistics.math.samples, 6);
  t.ok(r.statistics.math.tokens > 6 * 20, 'worked problems are real text');
  t.equal(r.topK, 0.1);
  t.equal(r.scale, 1.1);
  t.ok(r.patch.selectedWeights > 0);
  t.ok(r.check?.kl && r.check.kl.meanKl >= 0 && r.check.kl.meanKl < 0.1, `small KL on general text (${r.check?.kl?.meanKl})`);
  t.equal(r.modelfile?.path, path.join(dir, 'tiny.boosted.Modelfile'));
  t.match(readFileSync(r.modelfile!.path, 'utf8'), /^FROM \.\/tiny\.boosted\.gguf$/m);

  // metadata: every key of the source is in the output with the same value (tokenizer, chat template)
  const before = readGgufSync(source), after = readGgufSync(r.output);
  let same = 0;
  for (const [k, v] of before.metadata) { if (JSON.stringify(after.metadata.get(k), (_, x) => (typeof x === 'bigint' ? String(x) : x)) === JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? String(x) : x))) same++; else t.fail(`metadata ${k} differs`); }
  t.equal(same, before.metadata.size, `${same} metadata keys carried over`);
  t.equal(after.metadata.get('mathneuro.method'), 'mathneuro');

  // the output loads and generates in node-llama-cpp
  const llama = await getLlama({ gpu: false, logLevel: 'error' as never });
  const model = await llama.loadModel({ modelPath: r.output });
  t.ok(model.tokenize('Tom has 3 apples.').length > 3, 'tokenizes');
  const context = await model.createContext({ contextSize: 128 });
  const seq = context.getSequence();
  let n = 0;
  for await (const _tok of seq.evaluate(model.tokenize('The river'))) { if (++n >= 4) break; }
  t.equal(n, 4, 'decodes');
  await context.dispose(); await model.dispose();

  // a second boost with another scale: statistics from the cache, no forward pass
  const r2 = await boost({ model: source, out: path.join(dir, 'x12.gguf'), cacheDir, samples: 6, scale: 1.2, check: false });
  t.equal(r2.statistics.math.cached, true);
  t.equal(r2.statistics.general.cached, true);
  t.equal(r2.statistics.math.elapsedMs + r2.statistics.general.elapsedMs, 0, 'no collection');
  t.equal(r2.patch.selectedWeights, r.patch.selectedWeights, 'same K, same statistics: same selection');
  // the selection equals one made directly from the cached statistics files
  const direct = await patchModel({ model: source, out: path.join(dir, 'direct.gguf'), topK: 0.1, scale: 1.2, math: await loadStats(r.statistics.math.path), general: await loadStats(r.statistics.general.path) });
  t.equal(direct.selectedWeights, r2.patch.selectedWeights);
  t.same(readFileSync(direct.output.path).subarray(after.dataOffset), readFileSync(r2.output).subarray(after.dataOffset), 'bit-identical tensor data');

  // ablate: prune at 15%, reuses the statistics
  const a = await boost({ model: source, intervention: 'prune', cacheDir, samples: 6, check: { klPrompts: 2 } });
  t.equal(a.output, path.join(dir, 'tiny.ablated.gguf'));
  t.equal(a.topK, 0.15);
  t.equal(a.scale, 0);
  t.ok(a.patch.selectedWeights > r.patch.selectedWeights, 'K 15% selects more than 10%');
  t.equal(a.statistics.math.cached, true);
  t.ok(a.check!.kl!.meanKl > r.check!.kl!.meanKl, 'zeroing moves the model more than x1.1');
  await t.rejects(boost({ model: source, cacheDir, samples: 6, check: false }), { code: 'EEXIST' }, 'no silent overwrite');

  // the report from the cached statistics: the grid matches the patch's count
  const data = await buildReport({ model: source, math: r.statistics.math.path, general: r.statistics.general.path });
  t.equal(data.selection.selectedTotal, r.patch.selectedWeights);
  t.same(data.selection.layers, ['0', '1']);
  t.equal(data.realizedScale?.at(-1)?.type, 'all');
  t.ok(data.scores && data.scores.math.total > 0);
  t.match(renderReportHtml(data), /<g class="layer-row" data-layer="1">/);

  // overlap on disjoint subsets: sizes 1 and 3, two subsets each
  const o = await overlapStudy({ model: source, sizes: [1, 3], subsets: 2, cacheDir });
  t.equal(o.points.length, 2);
  t.equal(o.samplesPerSet, 8, '2 x 1 + 2 x 3 disjoint samples per set');
  for (const p of o.points) {
    t.equal(p.pairs.length, 1);
    const x = p.pairs[0];
    t.ok(x.intersection <= Math.min(x.sizeA, x.sizeB));
    t.equal(p.meanOverlap, (2 * x.intersection) / (x.sizeA + x.sizeB));
    t.ok(p.meanOverlap > 0 && p.meanOverlap < 1, `overlap at ${p.samples}: ${p.meanOverlap}`);
  }
});

t.test('an Ollama model as input, a Modelfile as output, the store untouched', async (t) => {
  const dir = t.testdir();
  const model = readFileSync(await fixtureModel({ shape: 'tiny', type: 'q8_0', seed: 21 }));
  const { store } = fakeStore(dir, { name: 'tiny', tag: 'q8', model });
  const listing = () => readdirSync(store, { recursive: true }).map(String).sort().map((f) => { const p = path.join(store, f); const s = statSync(p); return `${f} ${s.isFile() ? s.size : 'd'} ${s.mtimeMs}`; });
  const before = listing();
  const cwd = process.cwd();
  process.chdir(dir);
  try {
    const r = await boost({ model: 'ollama:tiny:q8', env: { OLLAMA_MODELS: store }, cacheDir: path.join(dir, 'cache'), samples: 4, check: false, modelfile: true });
    t.equal(r.output, path.join(dir, 'tiny-q8.boosted.gguf'));
    t.equal(r.model.ollama, 'ollama:tiny:q8');
    t.equal(r.modelfile?.templateFrom, 'ollama');
    const text = readFileSync(r.modelfile!.path, 'utf8');
    t.match(text, /^FROM \.\/tiny-q8\.boosted\.gguf$/m);
    t.match(text, /^TEMPLATE """\{\{ if \.System \}\}/m);
    t.match(text, /^SYSTEM "You are a careful math tutor\."$/m);
    t.match(text, /^PARAMETER stop "<\|eot_id\|>"$/m);
    t.match(text, /^LICENSE """LLAMA 3\.2/m);
    await t.rejects(boost({ model: 'ollama:tiny:q8', out: path.join(store, 'blobs', 'x.gguf'), env: { OLLAMA_MODELS: store }, check: false }), { code: 'EUSAGE' });
    await t.rejects(boost({ model: 'ollama:tiny:nope', env: { OLLAMA_MODELS: store }, check: false }), { code: 'ENOENT' });
  } finally {
    process.chdir(cwd);
  }
  t.same(listing(), before, 'nothing in the store was written');
  t.notOk(existsSync(path.join(store, 'tiny-q8.boosted.gguf')));
});
