// The boost experiment (issue 17) on the headroom fixture (test/fixtures/headroom: two-digit
// addition, learned partly): does scaling MathNeuro's math-specific weights raise held-out accuracy,
// and more than scaling as many other weights does?
// - copies: F32, and Q8_0 / Q4_K made by src/quantize.ts (statistics collected on each copy itself);
// - MathNeuro boost over scale x K (SCALES x TOP_KS of test/fixture/boost-lib.ts);
// - controls with the same count per matrix (src/select/controls.ts): random, wanda-matched (the
//   highest math scores, no general filter), general-specific (general top-K minus math top-K), and
//   norm-matched (every scored weight x the factor that changes the total weight norm as much);
// - 1, 10 and 100 calibration samples at the best MathNeuro setting.
// Per row: held-out accuracy with its Wilson interval, McNemar's p against the unpatched copy,
// held-out text loss and the realized scale. Rows are cached in .cache/boost-experiment/ (per copy,
// keyed by its sha256), so the script resumes where it stopped; --budget-minutes stops starting rows.
// Writes docs/boost-experiment.md (every row) and the summary between <!-- boost-experiment -->
// markers in README.md.
//
//   npm run experiment -- [--models f32,q8_0,q4_k] [--quant-grid best|full] [--budget-minutes N] [--best K,scale] [--only mathneuro|controls] [--no-readme] [--json F]
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { packageRoot } from '../src/native.ts';
import { DEFAULT_BOOST_SCALE, DEFAULT_BOOST_TOP_K } from '../src/pipeline.ts';
import { BoostExperiment, headroomDir, headroomModel, quantizedCopy, rowKey, SCALES, TOP_KS, type ExperimentRow, type RowSet } from '../test/fixture/boost-lib.ts';

process.env.OMP_WAIT_POLICY ??= 'passive';

const { values: args } = parseArgs({
  options: {
    models: { type: 'string', default: 'f32,q8_0,q4_k' },
    'quant-grid': { type: 'string', default: 'best' },
    'budget-minutes': { type: 'string' },
    best: { type: 'string' },
    only: { type: 'string' },
    'no-readme': { type: 'boolean', default: false },
    json: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log('usage: npm run experiment -- [--models f32,q8_0,q4_k] [--quant-grid best|full] [--budget-minutes N] [--best K,scale] [--no-readme] [--json F]');
  process.exit(0);
}
const started = Date.now();
const budgetMs = args['budget-minutes'] ? Number(args['budget-minutes']) * 60_000 : Infinity;
const log = (s: string) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0)}s] ${s}\n`);
const overBudget = () => Date.now() - started > budgetMs;
const figures = JSON.parse(readFileSync(path.join(headroomDir, 'figures.json'), 'utf8'));
const cacheDir = path.join(packageRoot, '.cache', 'boost-experiment');
const CONTROLS = ['random', 'wanda-matched', 'general-specific', 'norm-matched'] as const;
/** boost's defaults (src/pipeline.ts) */
const DEFAULT_SETTING = { topK: DEFAULT_BOOST_TOP_K, scale: DEFAULT_BOOST_SCALE } as const;

const wanted = args.models!.split(',').map((s) => s.trim().toLowerCase());
const models: { label: string; path: string; types?: Record<string, number> }[] = [];
if (wanted.includes('f32')) models.push({ label: 'F32', path: headroomModel });
for (const type of ['q8_0', 'q4_k'] as const) {
  if (!wanted.includes(type)) continue;
  const q = await quantizedCopy(type);
  models.push({ label: type.toUpperCase(), path: q.path, types: q.typeCounts });
}

const rows: ExperimentRow[] = [];
let skipped = 0;
/** The best MathNeuro setting: highest accuracy, then the lower p, then the smaller scale and K. */
function best(rs: ExperimentRow[]): ExperimentRow | undefined {
  return rs.filter((r) => r.set === 'mathneuro' && r.samples === 100)
    .sort((a, b) => b.correct - a.correct || (a.pValue ?? 1) - (b.pValue ?? 1) || a.scale! - b.scale! || a.topK! - b.topK!)[0];
}

// Phases, so that a time budget cuts the least important rows: (1) F32: the MathNeuro grid, then
// at its best setting the controls and 1 and 10 calibration samples; (2) Q8_0 and Q4_K: unpatched,
// and MathNeuro and the controls at F32's best setting (--best K,scale picks another); (3) F32:
// the controls over the whole grid; (4) with --quant-grid full, the quantized copies' whole grids.
// --only mathneuro|controls: just that part of the F32 grid, into a cache file of its own (two
// processes on two cores); a later run without --only reads every cache file and does the rest.
const only = args.only;
const experiments = models.map((m) => ({ m, exp: new BoostExperiment(m.label, m.path, figures.seed, path.join(cacheDir, `${m.label}.rows${only ? `.${only}` : ''}.json`), log), rows: [] as ExperimentRow[] }));
const run = async (e: typeof experiments[number], set: Exclude<RowSet, 'unpatched'>, topK: number, scale: number, samples = 100) => {
  if (e.rows.some((r) => r.set === set && r.topK === topK && r.scale === scale && r.samples === samples)) return;
  if (overBudget() && !e.exp.cachedRow(rowKey(set, topK, scale, samples))) { skipped++; return; }
  e.rows.push(await e.exp.row(set, topK, scale, samples));
};
let bestSetting: { topK: number; scale: number } | undefined;
if (args.best) {
  const [k, c] = args.best.split(',').map(Number);
  bestSetting = { topK: k, scale: c };
}
try {
  for (const e of experiments) e.rows.push(await e.exp.base());
  const f32 = experiments.find((e) => e.m.label === 'F32');
  if (only === 'mathneuro' && f32) for (const k of TOP_KS) for (const c of SCALES) await run(f32, 'mathneuro', k, c);
  if (only === 'controls' && f32) for (const k of TOP_KS) for (const c of SCALES) for (const set of CONTROLS) await run(f32, set, k, c);
  if (only) { for (const e of experiments) e.exp.dispose(); log(`--only ${only}: done`); process.exit(0); }
  if (f32) {
    for (const k of TOP_KS) for (const c of SCALES) await run(f32, 'mathneuro', k, c);
    if (!bestSetting) { const b = best(f32.rows); if (b) bestSetting = { topK: b.topK!, scale: b.scale! }; }
  }
  const b = bestSetting;
  if (b) {
    for (const e of experiments) {
      await run(e, 'mathneuro', b.topK, b.scale);
      for (const set of CONTROLS) await run(e, set, b.topK, b.scale);
      if (e === f32) for (const samples of [1, 10]) await run(e, 'mathneuro', b.topK, b.scale, samples);
    }
  }
  // boost's default setting (K 10%, x1.1) with its controls and calibration sizes, on every copy
  for (const e of experiments) {
    for (const set of ['mathneuro', ...CONTROLS] as const) await run(e, set, DEFAULT_SETTING.topK, DEFAULT_SETTING.scale);
    if (e === f32) for (const samples of [1, 10]) await run(e, 'mathneuro', DEFAULT_SETTING.topK, DEFAULT_SETTING.scale, samples);
  }
  if (f32) for (const k of TOP_KS) for (const c of SCALES) for (const set of CONTROLS) await run(f32, set, k, c);
  if (args['quant-grid'] === 'full') {
    for (const e of experiments) if (e !== f32) for (const set of ['mathneuro', ...CONTROLS] as const) for (const k of TOP_KS) for (const c of SCALES) await run(e, set, k, c);
  }
} finally {
  for (const e of experiments) { e.exp.dispose(); rows.push(...e.rows); }
}

// ---- tables ----------------------------------------------------------------------------------
const pct = (x: number, d = 1) => `${(100 * x).toFixed(d)}%`;
const baseOf = (model: string) => rows.find((r) => r.model === model && r.set === 'unpatched')!;
const setName: Record<RowSet, string> = {
  unpatched: 'unpatched', mathneuro: 'MathNeuro', random: 'random', 'wanda-matched': 'Wanda-style, same count', 'general-specific': 'general-specific', 'norm-matched': 'all scored weights, norm-matched',
};
const fmtP = (p?: number) => (p === undefined ? '' : p < 0.001 ? p.toExponential(1) : p.toFixed(3));
function line(r: ExperimentRow): string {
  const b = baseOf(r.model);
  const acc = `${pct(r.accuracy)} [${pct(r.ci95.low)}, ${pct(r.ci95.high)}]`;
  const delta = r.set === 'unpatched' ? '' : `${r.correct - b.correct >= 0 ? '+' : ''}${((100 * (r.correct - b.correct)) / r.total).toFixed(1)} (+${r.onlyPatched}/-${r.onlyUnpatched})`;
  const loss = r.set === 'unpatched' ? r.textLoss.toFixed(4) : `${r.textLoss.toFixed(4)} (${r.textLoss >= b.textLoss ? '+' : ''}${pct(r.textLoss / b.textLoss - 1, 2)})`;
  const realized = r.realizedMean === undefined ? '' : `${r.realizedMean.toFixed(4)} / ${r.realizedMedian!.toFixed(4)}`;
  const applied = r.set === 'norm-matched' ? `x${r.appliedScale!.toFixed(5)} (matches x${r.scale})` : r.scale === undefined ? '' : `x${r.scale}`;
  return `| ${r.model} | ${setName[r.set]} | ${r.topK === undefined ? '' : pct(r.topK, 1)} | ${applied} | ${r.samples || ''} | ${r.weights ?? ''} | ${acc} | ${delta} | ${fmtP(r.pValue)} | ${loss} | ${realized} |`;
}
const header = [
  '| copy | set | K | scale | samples | weights | accuracy [95% Wilson] | Δ pts vs unpatched (+only patched/-only unpatched) | McNemar p | text loss (vs unpatched) | realized scale mean / median |',
  '|---|---|---:|---|---:|---:|---|---|---:|---|---|',
];
const order = (r: ExperimentRow) => [['F32', 'Q8_0', 'Q4_K'].indexOf(r.model), ['unpatched', 'mathneuro', ...CONTROLS].indexOf(r.set), r.topK ?? 0, r.scale ?? 0, -r.samples];
const sorted = [...rows].sort((a, b) => { const x = order(a), y = order(b); for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i] - y[i]; return 0; });

// Summary: per copy the unpatched row, the best MathNeuro setting, its controls and sample sizes,
// and the best row of each control over the grid.
const summary: ExperimentRow[] = [];
const notes: string[] = [];
for (const m of models) {
  const mine = rows.filter((r) => r.model === m.label);
  const b = baseOf(m.label);
  summary.push(b);
  const bm = best(mine);
  if (!bm) continue;
  for (const setting of [{ topK: bm.topK!, scale: bm.scale! }, DEFAULT_SETTING]) {
    const at = mine.filter((r) => r.topK === setting.topK && r.scale === setting.scale && !summary.includes(r));
    summary.push(...at.filter((r) => r.set === 'mathneuro' && r.samples === 100), ...at.filter((r) => r.samples === 100 && r.set !== 'mathneuro'), ...at.filter((r) => r.set === 'mathneuro' && r.samples !== 100));
  }
  const grid = mine.filter((r) => r.set === 'mathneuro' && r.samples === 100);
  const gains = grid.filter((r) => r.correct > b.correct);
  const significant = grid.filter((r) => r.correct > b.correct && (r.pValue ?? 1) < 0.05);
  const losses = grid.filter((r) => r.correct < b.correct && (r.pValue ?? 1) < 0.05);
  notes.push(`${m.label}: unpatched ${b.correct}/${b.total} (${pct(b.accuracy)}). MathNeuro boost ran at ${grid.length} of ${SCALES.length * TOP_KS.length} settings; ${gains.length} raise accuracy, ${significant.length} of them with McNemar p < 0.05${significant.length ? ` (${significant.map((r) => `K ${pct(r.topK!)} x${r.scale}: ${r.correct - b.correct >= 0 ? '+' : ''}${((100 * (r.correct - b.correct)) / r.total).toFixed(1)} pts, p ${fmtP(r.pValue)}`).join('; ')})` : ''}; ${losses.length} lower it with p < 0.05. Best: K ${pct(bm.topK!)} x${bm.scale}, ${bm.correct}/${bm.total} (${bm.correct - b.correct >= 0 ? '+' : ''}${((100 * (bm.correct - b.correct)) / bm.total).toFixed(1)} pts, p ${fmtP(bm.pValue)}).`);
  const def = grid.find((r) => r.topK === DEFAULT_SETTING.topK && r.scale === DEFAULT_SETTING.scale);
  if (def) notes.push(`${m.label}: boost's default (K ${pct(DEFAULT_SETTING.topK, 0)}, x${DEFAULT_SETTING.scale}) gives ${def.correct}/${def.total} (${def.correct - b.correct >= 0 ? '+' : ''}${((100 * (def.correct - b.correct)) / def.total).toFixed(1)} pts, +${def.onlyPatched}/-${def.onlyUnpatched}, p ${fmtP(def.pValue)}), text loss ${def.textLoss.toFixed(4)}.`);
  for (const set of CONTROLS) {
    const cs = mine.filter((r) => r.set === set && r.samples === 100);
    if (!cs.length) continue;
    const up = cs.filter((r) => r.correct > b.correct && (r.pValue ?? 1) < 0.05).length;
    const down = cs.filter((r) => r.correct < b.correct && (r.pValue ?? 1) < 0.05).length;
    const top = cs.sort((x, y) => y.correct - x.correct)[0];
    notes.push(`${m.label} ${setName[set]}: ${cs.length} settings; ${up} raise and ${down} lower accuracy with p < 0.05; best ${top.correct}/${top.total} at K ${pct(top.topK!)} x${top.scale}.`);
  }
}
const ranLine = models.map((m) => {
  const n = rows.filter((r) => r.model === m.label && r.set !== 'unpatched').length;
  return `${m.label}: ${n} patched rows${m.types ? ` (tensor types ${Object.entries(m.types).map(([t, c]) => `${c} ${t}`).join(', ')})` : ''}`;
}).join('; ');
const intro = `Generated by \`npm run experiment\` (scripts/boost-experiment.ts) on the headroom fixture (${figures.steps} training steps, seed ${figures.seed}; card: test/fixtures/headroom/CARD.md). Held out: ${figures.heldOut.twoDigitTotal} two-digit additions (greedy exact match) and ${figures.heldOut.textTokens} sentence tokens. Statistics: 100 calibration samples per set unless the samples column says otherwise, collected on each copy itself. Grid: scale ${SCALES.join(', ')} x K ${TOP_KS.map((k) => pct(k)).join(', ')}. What ran: ${ranLine}${skipped ? `; ${skipped} rows not run (time budget)` : ''}.`;
const summaryTable = [...header, ...summary.map(line)].join('\n');
const fullTable = [...header, ...sorted.map(line)].join('\n');
const readmeBlock = [intro, '', summaryTable, '', ...notes.map((n) => `- ${n}`), '', 'Every row: [docs/boost-experiment.md](docs/boost-experiment.md).'].join('\n');
const doc = `# The boost experiment: every row\n\nSee the README's "Boost on a fixture with headroom" section for what this is.\n\n${intro}\n\n${fullTable}\n\n${notes.map((n) => `- ${n}`).join('\n')}\n`;

process.stdout.write(`${readmeBlock}\n`);
if (args.json) writeFileSync(args.json, `${JSON.stringify({ rows: rows.map(({ items: _i, ...r }) => r), notes, seconds: Math.round((Date.now() - started) / 1000) }, null, 2)}\n`);
if (!args['no-readme']) {
  writeFileSync(path.join(packageRoot, 'docs', 'boost-experiment.md'), doc);
  const readmePath = path.join(packageRoot, 'README.md');
  const readme = readFileSync(readmePath, 'utf8');
  const open = '<!-- boost-experiment -->', close = '<!-- /boost-experiment -->';
  const a = readme.indexOf(open), b = readme.indexOf(close);
  if (a < 0 || b < a) log('README.md has no <!-- boost-experiment --> markers: table not written');
  else { writeFileSync(readmePath, `${readme.slice(0, a + open.length)}\n${readmeBlock}\n${readme.slice(b)}`); log('README.md and docs/boost-experiment.md written'); }
}
log(`done in ${((Date.now() - started) / 1000).toFixed(0)} s`);
