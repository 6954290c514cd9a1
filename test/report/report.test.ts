// The HTML report: built from plain numbers, self-contained, and drawn by a real browser (Debian's
// headless Chromium): the screenshot is decoded and its pixels show one bar per layer and the
// heatmap's colours; the DOM dump has one heatmap row per layer.
import t from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { renderReportHtml, rampColor, selectionGrid, type ReportData } from '../../src/report/index.ts';
import { chromiumPath, dumpDom, screenshot } from './chromium.ts';
import { decodePng, near, pixel } from './png.ts';
import { repoRoot } from '../helpers/fixtures.ts';

const kinds = ['attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_gate', 'ffn_up', 'ffn_down'];

function sampleData(nLayers: number): ReportData {
  const tensors: { name: string; numel: number; selected: number }[] = [];
  for (let l = 0; l < nLayers; l++) for (const [k, kind] of kinds.entries()) {
    const numel = kind.startsWith('ffn') ? 256 * 512 : 256 * 256;
    // a pattern with a clear maximum: the last layer's ffn_down
    tensors.push({ name: `blk.${l}.${kind}.weight`, numel, selected: Math.round(numel * 0.002 * (1 + l + k / 2)) });
  }
  tensors.push({ name: 'output.weight', numel: 256 * 32000, selected: 4000 });
  const hist = (label: string, shift: number) => ({ label, edges: Array.from({ length: 41 }, (_, i) => -6 + i * 0.2), counts: Array.from({ length: 40 }, (_, i) => Math.round(1000 * Math.exp(-(((i - 20 - shift) / 6) ** 2)))), total: 0 });
  const scores = { math: hist('math', 0), general: hist('general', -3), selected: hist('selected', 8), sampledWeights: 1e6, sampleStride: 3 };
  for (const h of [scores.math, scores.general, scores.selected]) h.total = h.counts.reduce((a, b) => a + b, 0);
  const pair = (samples: number, d: number) => ({ samples, subsets: 3, pairs: [0, 1, 2].map((i) => ({ a: `s${i}`, b: `s${(i + 1) % 3}`, sizeA: 1000, sizeB: 1000, intersection: Math.round(1000 * (d + i * 0.01)), dice: d + i * 0.01, jaccard: (d + i * 0.01) / (2 - d - i * 0.01) })), meanOverlap: d + 0.01, minOverlap: d, maxOverlap: d + 0.02, meanJaccard: d / (2 - d), meanSelected: 1000 });
  return {
    title: 'mathneuro report: tiny <test> & "quotes"', generator: 'mathneuro 0.1.0', createdAt: '2025-01-01T00:00:00.000Z',
    model: { name: 'tiny', file: 'tiny.gguf', bytes: 17_900_000, headerSha256: 'ab'.repeat(32) },
    method: 'mathneuro', topK: 0.1, scale: 1.1,
    calibration: { math: 'builtin:math@1/seed0', general: 'builtin:general@1/seed0', mathSamples: 100, generalSamples: 100, mathTokens: 12000, generalTokens: 15000 },
    selection: selectionGrid(tensors, 20_000_000),
    scores,
    overlap: { method: 'mathneuro', topK: 0.1, points: [pair(1, 0.7), pair(10, 0.9), pair(100, 0.96)] },
    realizedScale: [{ type: 'Q8_0', targetScale: 1.1, selectedWeights: 5000, meanRealizedScale: 1.0998, medianRealizedScale: 1.1, shareUnchanged: 0.01, shareOnTarget: 0.4, otherWeightsInTouchedBlocks: 20000, otherShareChanged: 0.03, otherRelativeRmsChange: 0.002, blocksRewritten: 700 },
      { type: 'all', targetScale: 1.1, selectedWeights: 5000, meanRealizedScale: 1.0998, medianRealizedScale: 1.1, shareUnchanged: 0.01, shareOnTarget: 0.4, otherWeightsInTouchedBlocks: 20000, otherShareChanged: 0.03, otherRelativeRmsChange: 0.002, blocksRewritten: 700 }],
  };
}

t.test('selection grid: layers x kinds from tensor counts', async (t) => {
  const g = selectionGrid([
    { name: 'blk.10.ffn_down.weight', numel: 100, selected: 3 }, { name: 'blk.2.attn_q.weight', numel: 50, selected: 1 },
    { name: 'output.weight', numel: 1000, selected: 7 }, { name: 'blk.2.ffn_down.weight', numel: 100, selected: 4 },
    { name: 'blk.2.ffn_gate_exps.weight', numel: 400, selected: 9 },
  ], 5000);
  t.same(g.layers, ['2', '10', 'output']);
  t.same(g.kinds, ['attn_q', 'ffn_down', 'ffn_gate_exps', 'output']);
  t.same(g.selected, [[1, 4, 9, 0], [0, 3, 0, 0], [0, 0, 0, 7]]);
  t.same(g.parameters, [[50, 100, 400, 0], [0, 100, 0, 0], [0, 0, 0, 1000]]);
  t.equal(g.selectedTotal, 24);
  t.equal(g.scoredParameters, 1650);
});

t.test('the HTML is self-contained and carries the numbers', async (t) => {
  const data = sampleData(5);
  const html = renderReportHtml(data);
  t.notMatch(html, /\b(src|href)=/, 'no external resources');
  t.notMatch(html, /<script(?![^>]*application\/json)/, 'no executable script');
  t.match(html, /mathneuro report: tiny &lt;test&gt; &amp; &quot;quotes&quot;/, 'text is escaped');
  t.equal(html.match(/<g class="layer-row"/g)?.length, 6, 'a heatmap row per layer (5 blocks + output)');
  t.equal(html.match(/<g class="layer-bar"/g)?.length, 6);
  t.equal(html.match(/<rect class="cell" /g)?.length, 5 * 7 + 1, 'a cell per existing matrix');
  t.equal(html.match(/<rect class="cell empty"/g)?.length, 7 + 5, 'output has no block kinds and blocks have no output');
  t.equal(html.match(/<g class="overlap-point"/g)?.length, 3);
  t.equal(html.match(/<svg /g)?.length, 5, 'heatmap, layer bars, two histograms, overlap');
  t.match(html, /<table class="realized-table">/);
  const json = /<script type="application\/json" id="report-data">(.*?)<\/script>/s.exec(html)![1];
  t.same(JSON.parse(json), data, 'the embedded JSON is the report data');
  const withoutOptional = renderReportHtml({ ...data, scores: undefined, overlap: undefined, realizedScale: undefined });
  t.equal(withoutOptional.match(/<svg /g)?.length, 2, 'only what there is data for');
  t.equal(rampColor(0), 'rgb(68,1,84)');
  t.equal(rampColor(1), 'rgb(253,231,37)');
});

const chromium = chromiumPath();
t.test('headless Chromium renders the charts', { skip: chromium ? false : 'Debian chromium is not installed (/usr/bin/chromium); .ci/run installs it (apt-get install chromium)' }, async (t) => {
  const dir = path.join(repoRoot, '.cache', 'report-test');
  mkdirSync(dir, { recursive: true });
  const nLayers = 6;
  const data = sampleData(nLayers);
  const page = path.join(dir, 'report.html');
  writeFileSync(page, renderReportHtml(data));
  const dom = dumpDom(page);
  const heatmap = /<svg[^>]*class="chart heatmap"[^>]*>.*?<\/svg>/s.exec(dom)?.[0] ?? '';
  t.ok(heatmap.length > 1000, 'the heatmap SVG is in the rendered DOM and not empty');
  t.equal(heatmap.match(/<g class="layer-row"/g)?.length, nLayers + 1, `${nLayers} block rows + output`);
  t.equal(heatmap.match(/<rect class="cell" /g)?.length, nLayers * kinds.length + 1);
  t.equal(dom.match(/<svg /g)?.length, 5);

  const png = decodePng(screenshot(page, path.join(dir, 'report.png'), 1200, 1400));
  t.equal(png.width, 1200);
  // layer bars are drawn in #d6336c, a colour used nowhere else: in the column that crosses the
  // most bars, count separate vertical runs of it: one per layer with a selection
  const pink: [number, number, number] = [0xd6, 0x33, 0x6c];
  let bestRuns = 0, pinkPixels = 0;
  for (let x = 0; x < png.width; x++) {
    let runs = 0, inRun = false;
    for (let y = 0; y < png.height; y++) {
      const on = near(pixel(png, x, y), pink);
      if (on) pinkPixels++;
      if (on && !inRun) runs++;
      inRun = on;
    }
    bestRuns = Math.max(bestRuns, runs);
  }
  t.equal(bestRuns, nLayers + 1, 'one drawn bar per layer');
  t.ok(pinkPixels > (nLayers + 1) * 10 * 13, `bars have area (${pinkPixels} px)`);
  // the heatmap's largest cell is the top of the ramp (yellow), the smallest non-zero near its bottom
  let yellow = 0, purple = 0;
  for (let y = 0; y < png.height; y++) for (let x = 0; x < png.width; x++) {
    const p = pixel(png, x, y);
    if (near(p, [253, 231, 37], 4)) yellow++;
    if (near(p, [68, 1, 84], 30)) purple++;
  }
  t.ok(yellow > 500, `the largest cell is drawn in the top colour (${yellow} px)`);
  t.ok(purple > 500, `small cells in the bottom colours (${purple} px)`);
});
