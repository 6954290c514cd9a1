// The realized-scale table: for each tensor type, generate a model whose weight matrices are all of
// that type, select 1% of the weights (MathNeuro, synthetic statistics), patch x1.1 with a plain
// requantization, with 'best', with keep-scale re-rounding and with the default ('auto'), prune, and upcast, and report what the
// weights really got. Usage:
//   npx tsx scripts/realized-scale.ts [--shape tiny] [--top-k 0.01] [--scale 1.1] [--json]
import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { readGgufSync, type GgufInfo } from '../src/gguf/reader.ts';
import { patchModel, type PatchResult } from '../src/patch/patch.ts';
import type { RealizedScaleRow } from '../src/patch/realized.ts';
import type { ColumnStatistics, StatisticsSource } from '../src/select/select.ts';
import { synthModel, type SynthShapeName, type SynthTypeName } from '../src/synth.ts';

const { values } = parseArgs({
  options: {
    shape: { type: 'string', default: 'tiny' }, 'top-k': { type: 'string', default: '0.01' }, scale: { type: 'string', default: '1.1' },
    seed: { type: 'string', default: '1' }, json: { type: 'boolean', default: false }, 'work-dir': { type: 'string' },
  },
});
const TYPES: SynthTypeName[] = ['f32', 'f16', 'bf16', 'q8_0', 'q6_k', 'q5_k', 'q4_k', 'q4_0'];
const topK = Number(values['top-k']), scale = Number(values.scale), seed = Number(values.seed);
const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const work = path.resolve(values['work-dir'] ?? path.join(root, '.cache', 'realized-scale'));
mkdirSync(work, { recursive: true });

/** Column statistics with a heavy tail, so that math and general top-K overlap partly. */
function statistics(info: GgufInfo, statSeed: number): StatisticsSource {
  let s = statSeed >>> 0;
  const r = () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32; };
  const weights = new Map<string, ColumnStatistics>();
  for (const t of info.tensors) {
    if (!t.name.startsWith('blk.') || t.shape.length < 2) continue;
    const nIn = t.shape[0], nMat = t.shape[2] ?? 1;
    weights.set(t.name, {
      name: t.name, nIn, nMat,
      normSum: new Float64Array(nIn * nMat).map(() => 0.1 + r() * (r() < 0.05 ? 50 : 5)),
      sum2: new Float64Array(nIn * nMat).map(() => 0.01 + r() * 3),
      counts: new Float64Array(nMat).fill(100),
    });
  }
  return { weights };
}

const all = (r: PatchResult): RealizedScaleRow => r.realized.find((x) => x.type === 'all')!;
const rows: Record<string, unknown>[] = [];
for (const type of TYPES) {
  const model = path.join(work, `${values.shape}-${type}-s${seed}.gguf`);
  await synthModel({ out: model, shape: values.shape as SynthShapeName, type, seed, overwrite: true });
  const info = readGgufSync(model);
  const math = statistics(info, 1000 + seed), general = statistics(info, 2000 + seed);
  const run = (extra: Record<string, unknown>) => patchModel({ model, out: path.join(work, 'out.gguf'), force: true, math, general, topK, scale, ...extra });
  const plain = all(await run({ strategy: 'plain' }));
  const best = all(await run({ strategy: 'best' }));
  const keep = ['q8_0', 'q6_k', 'q5_k', 'q4_k', 'q4_0'].includes(type) ? all(await run({ strategy: 'keep-scale' })) : undefined;
  const auto = all(await run({ strategy: 'auto' }));
  const pruned = all(await run({ prune: true, scale: undefined }));
  const quantized = !['f32', 'f16', 'bf16', 'q8_0'].includes(type);
  const upcast = quantized ? await run({ upcast: 'q8_0' }) : undefined;
  rows.push({
    type: type.toUpperCase(), selected: best.selectedWeights,
    plain: { mean: plain.meanRealizedScale, median: plain.medianRealizedScale, unchanged: plain.shareUnchanged, othersChanged: plain.otherShareChanged, othersRelativeRms: plain.otherRelativeRmsChange },
    best: { mean: best.meanRealizedScale, median: best.medianRealizedScale, unchanged: best.shareUnchanged, othersChanged: best.otherShareChanged, othersRelativeRms: best.otherRelativeRmsChange, candidates: best.candidates },
    keepScale: keep ? { mean: keep.meanRealizedScale, median: keep.medianRealizedScale, unchanged: keep.shareUnchanged, othersChanged: keep.otherShareChanged } : undefined,
    auto: { mean: auto.meanRealizedScale, median: auto.medianRealizedScale, unchanged: auto.shareUnchanged, othersChanged: auto.otherShareChanged, candidates: auto.candidates },
    prune: { exactlyZero: pruned.shareOnTarget, meanResidualScale: pruned.meanRealizedScale },
    upcastQ8_0: upcast ? { mean: all(upcast).meanRealizedScale, extraBytes: upcast.upcast!.extraBytes, fileBytes: info.fileSize } : undefined,
  });
  rmSync(model, { force: true });
}
rmSync(path.join(work, 'out.gguf'), { force: true });

if (values.json) {
  process.stdout.write(JSON.stringify({ shape: values.shape, topK, scale, seed, rows }, null, 2) + '\n');
} else {
  const f = (x: unknown, d = 3) => (typeof x === 'number' && Number.isFinite(x) ? x.toFixed(d) : '-');
  const p = (x: unknown) => (typeof x === 'number' && Number.isFinite(x) ? `${(x * 100).toFixed(1)}%` : '-');
  const autoBlocks = (c: Record<string, number>) => {
    const n = Object.values(c).reduce((a, x) => a + x, 0);
    return c.exact ? '-' : `${p((c.rescaled ?? 0) / n)} / ${p(((c.plain ?? 0) + (c.weighted ?? 0)) / n)}`;
  };
  const lines = [
    `model: synthetic ${values.shape}, every weight matrix in the given type; MathNeuro K=${topK}, scale x${scale}; "others" = unselected weights in rewritten blocks`,
    '',
    '| type | selected | plain: mean / median scale | plain: unchanged | plain: others changed | best: mean / median scale | best: unchanged | best: others changed (rel. RMS) | keep-scale: mean / median scale | keep-scale: unchanged | keep-scale: others changed | auto (default): mean / median scale | auto: others changed | auto: blocks rescaled / by ggml | prune: exactly 0 | upcast q8_0: mean scale (size cost) |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows as any[]) {
    lines.push(`| ${r.type} | ${r.selected} | ${f(r.plain.mean)} / ${f(r.plain.median)} | ${p(r.plain.unchanged)} | ${p(r.plain.othersChanged)} | ${f(r.best.mean)} / ${f(r.best.median)} | ${p(r.best.unchanged)} | ${p(r.best.othersChanged)} (${f(r.best.othersRelativeRms, 4)}) | ${r.keepScale ? `${f(r.keepScale.mean)} / ${f(r.keepScale.median)}` : '-'} | ${r.keepScale ? p(r.keepScale.unchanged) : '-'} | ${r.keepScale ? p(r.keepScale.othersChanged) : '-'} | ${f(r.auto.mean)} / ${f(r.auto.median)} | ${p(r.auto.othersChanged)} | ${autoBlocks(r.auto.candidates)} | ${p(r.prune.exactlyZero)} | ${r.upcastQ8_0 ? `${f(r.upcastQ8_0.mean)} (+${(r.upcastQ8_0.extraBytes / 1048576).toFixed(1)} MiB of ${(r.upcastQ8_0.fileBytes / 1048576).toFixed(1)})` : '-'} |`);
  }
  process.stdout.write(lines.join('\n') + '\n');
}
