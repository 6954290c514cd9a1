// The report as one self-contained HTML file: inline CSS and SVG, no scripts, no external assets,
// so it opens offline in any browser and can be attached to an issue as is.
import { escapeXml, formatCount, formatPercent, heatmapSvg, histogramSvg, layerBarsSvg, overlapSvg } from './svg.ts';
import type { ReportData } from './types.ts';

const style = `body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1000px;color:#222;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555}.note{color:#555;font-size:13px;max-width:800px}
table{border-collapse:collapse;font-size:13px;margin-top:8px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
svg text{font:11px system-ui,sans-serif}svg text:not([fill]){fill:#222}svg .axis-title{font-size:12px;fill:#444}svg .cell-label{font-size:10px}
.charts{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 16px}dt{color:#555}dd{margin:0}`;

const fixed = (x: number | undefined, d: number) => (x === undefined || !Number.isFinite(x) ? '-' : x.toFixed(d));

export function renderReportHtml(data: ReportData): string {
  const s = data.selection;
  const e = escapeXml;
  const body: string[] = [];
  body.push(`<h1>${e(data.title)}</h1>`);
  body.push(`<p class="meta">${e(data.generator)} &middot; ${e(data.createdAt)}</p>`);
  body.push('<dl>');
  const row = (k: string, v: string) => body.push(`<dt>${e(k)}</dt><dd>${e(v)}</dd>`);
  row('model', `${data.model.name} (${data.model.file}${data.model.bytes ? `, ${formatCount(data.model.bytes)}B` : ''})`);
  if (data.model.headerSha256) row('header sha256', data.model.headerSha256);
  row('method', `${data.method}, K = ${formatPercent(data.topK, 3)} per matrix`);
  if (data.calibration) {
    row('math calibration', `${data.calibration.math}${data.calibration.mathSamples ? ` (${data.calibration.mathSamples} samples, ${formatCount(data.calibration.mathTokens ?? 0)} tokens)` : ''}`);
    row('general calibration', `${data.calibration.general}${data.calibration.generalSamples ? ` (${data.calibration.generalSamples} samples, ${formatCount(data.calibration.generalTokens ?? 0)} tokens)` : ''}`);
  }
  row('selected weights', `${formatCount(s.selectedTotal)} = ${formatPercent(s.selectedTotal / Math.max(1, s.modelParameters), 3)} of all ${formatCount(s.modelParameters)} parameters, ${formatPercent(s.selectedTotal / Math.max(1, s.scoredParameters), 3)} of the ${formatCount(s.scoredParameters)} scored`);
  body.push('</dl>');

  body.push('<h2 id="selection">Selected weights per layer and matrix kind</h2>');
  body.push('<p class="note">Each cell is one weight matrix: the share of its weights that are math-specific (in the math top-K and not in the general top-K). Colour is scaled to the largest share.</p>');
  body.push(`<div class="charts">${heatmapSvg(s)}${layerBarsSvg(s)}</div>`);

  if (data.scores) {
    const sc = data.scores;
    body.push('<h2 id="scores">Score distributions</h2>');
    body.push(`<p class="note">log10 of S = |W| &middot; (sum over samples of the input column's L2 norm), for the math and the general calibration data; right: the math scores of the selected weights against all. ${sc.sampleStride > 1 ? `One weight in ${sc.sampleStride} was binned (${formatCount(sc.sampledWeights)} weights).` : `All ${formatCount(sc.sampledWeights)} scored weights were binned.`}</p>`);
    body.push(`<div class="charts">${histogramSvg([{ hist: sc.math, color: '#3b528b' }, { hist: sc.general, color: '#e07b39' }], 'log10 score', 'math and general score distributions')}${histogramSvg([{ hist: sc.math, color: '#888' }, { hist: sc.selected, color: '#21918c', fill: true }], 'log10 math score', 'math scores of the selected weights')}</div>`);
  }

  if (data.overlap) {
    const o = data.overlap;
    body.push('<h2 id="overlap">Consistency: overlap between disjoint calibration subsets</h2>');
    body.push(`<p class="note">The ${e(o.method)} selection (K = ${formatPercent(o.topK, 3)}) made from disjoint calibration subsets of each size; overlap = |A &cap; B| / mean(|A|, |B|), mean over pairs, bars from the smallest to the largest pair. ${o.note ? e(o.note) : ''}</p>`);
    body.push(overlapSvg(o.points));
    body.push('<table class="overlap-table"><tr><th>samples per subset</th><th>subsets</th><th>pairs</th><th>selected (mean)</th><th>overlap (mean)</th><th>min</th><th>max</th><th>Jaccard</th></tr>');
    for (const p of o.points) body.push(`<tr><td>${p.samples}</td><td>${p.subsets}</td><td>${p.pairs.length}</td><td>${formatCount(p.meanSelected)}</td><td>${formatPercent(p.meanOverlap, 1)}</td><td>${formatPercent(p.minOverlap, 1)}</td><td>${formatPercent(p.maxOverlap, 1)}</td><td>${formatPercent(p.meanJaccard, 1)}</td></tr>`);
    body.push('</table>');
  }

  if (data.realizedScale) {
    body.push('<h2 id="realized">Realized scale</h2>');
    body.push(`<p class="note">What each selected weight really became after its block was requantized: after / before (target ${data.scale === 0 ? '0, prune' : fixed(data.scale, 3)}). "Others" are weights not selected that share a rewritten block.</p>`);
    body.push('<table class="realized-table"><tr><th>type</th><th>selected</th><th>mean scale</th><th>median scale</th><th>unchanged</th><th>on target</th><th>blocks</th><th>others</th><th>others changed</th><th>others rel. RMS change</th></tr>');
    for (const r of data.realizedScale) {
      body.push(`<tr class="${r.type === 'all' ? 'total' : ''}"><td>${e(r.type)}</td><td>${formatCount(r.selectedWeights)}</td><td>${fixed(r.meanRealizedScale, 4)}</td><td>${fixed(r.medianRealizedScale, 4)}</td><td>${formatPercent(r.shareUnchanged, 1)}</td><td>${formatPercent(r.shareOnTarget, 1)}</td><td>${formatCount(r.blocksRewritten)}</td><td>${formatCount(r.otherWeightsInTouchedBlocks)}</td><td>${formatPercent(r.otherShareChanged, 1)}</td><td>${fixed(r.otherRelativeRmsChange, 4)}</td></tr>`);
    }
    body.push('</table>');
  }

  body.push('<h2 id="per-layer">Per layer</h2><table class="layer-table"><tr><th>layer</th>');
  for (const k of s.kinds) body.push(`<th>${e(k)}</th>`);
  body.push('<th>all</th></tr>');
  s.layers.forEach((layer, l) => {
    body.push(`<tr><td>${e(layer)}</td>`);
    s.kinds.forEach((_, k) => body.push(`<td>${s.parameters[l][k] ? formatCount(s.selected[l][k]) : ''}</td>`));
    body.push(`<td>${formatCount(s.selected[l].reduce((a, b) => a + b, 0))}</td></tr>`);
  });
  body.push('</table>');
  const json = JSON.stringify(data).replace(/</g, '\\u003c');
  return `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${e(data.title)}</title><style>${style}</style></head><body>\n${body.join('\n')}\n<script type="application/json" id="report-data">${json}</script>\n</body></html>\n`;
}
