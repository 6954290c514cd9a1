// End to end through the TypeScript API, on a model it generates (no download, no data file):
// synth -> statistics on the built-in calibration sets -> select + patch (x1.1) -> KL check ->
// HTML report. The same stages `mathneuro boost` runs; run with `npx tsx scripts/example.ts [dir]`.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  builtinSamples, buildReport, calibrationStats, checkPatched, patchModel, readGgufSync, renderReportHtml, synthModel,
} from '../src/index.ts';

const dir = path.resolve(process.argv[2] ?? '.cache/example');
mkdirSync(dir, { recursive: true });

// 1. a model: random weights, a real tokenizer (tiny: 2 layers, n_embd 256)
const model = path.join(dir, 'tiny.gguf');
await synthModel({ out: model, shape: 'tiny', type: 'q8_0', seed: 1, overwrite: true });
console.log('model     ', model);

// 2. calibration text: the built-in sets (versioned, seeded) and statistics, cached per model
console.log('a math sample:\n' + builtinSamples('math', { count: 1 })[0].text.replace(/^/gm, '  '));
const info = readGgufSync(model);
const cacheDir = path.join(dir, 'cache');
const math = await calibrationStats(info, 'math', { builtin: 'math' }, { samples: 20, cacheDir });
const general = await calibrationStats(info, 'general', { builtin: 'general' }, { samples: 20, cacheDir });
console.log('statistics', `math ${math.tokens} tokens, general ${general.tokens} tokens${math.cached ? ' (cached)' : ''}`);

// 3. select (math top-10% minus general top-10%, per matrix) and scale by 1.1 into a new file
const out = path.join(dir, 'tiny.boosted.gguf');
const patch = await patchModel({ model, out, topK: 0.1, scale: 1.1, math: { ...math.stats, path: math.path }, general: { ...general.stats, path: general.path }, force: true });
const all = patch.realized.find((r) => r.type === 'all')!;
console.log('patch     ', `${patch.selectedWeights} weights (${(100 * patch.selectedWeights / patch.modelParameters).toFixed(3)}%), realized mean scale ${all.meanRealizedScale.toFixed(4)}`);

// 4. check: KL divergence on general text, patched vs source (node-llama-cpp)
const check = await checkPatched(model, out, { kl: true, klPrompts: 4 });
console.log('check     ', `mean KL ${check.kl!.meanKl.toExponential(2)} nats/token, same top token ${(100 * check.kl!.sameTopToken).toFixed(1)}%`);

// 5. report
const report = await buildReport({ model, math: math.path, general: general.path, topK: 0.1 });
const html = path.join(dir, 'report.html');
writeFileSync(html, renderReportHtml(report));
console.log('report    ', html, `(${report.selection.layers.length} layers x ${report.selection.kinds.length} matrix kinds)`);
