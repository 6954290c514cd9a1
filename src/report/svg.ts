// Hand-written SVG charts (no dependencies, no scripts): a layer x matrix-kind heatmap, a bar per
// layer, score histograms and the overlap figure. Elements carry class and data-* attributes so
// tests can count what was drawn; <title> children give hover text in a browser.
import type { Histogram, OverlapPoint, ReportSelection } from './types.ts';

export function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#39;');
}

const n = (x: number) => (Number.isFinite(x) ? Number(x.toFixed(2)) : 0);

/** Perceptually ordered colour ramp (viridis anchors), t in [0, 1]. */
export function rampColor(t: number): string {
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const x = Math.max(0, Math.min(1, Number.isFinite(t) ? t : 0)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const c = stops[i].map((v, k) => Math.round(v + (stops[i + 1][k] - v) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

export function formatPercent(fraction: number, digits = 2): string {
  if (!Number.isFinite(fraction)) return '-';
  return `${(fraction * 100).toFixed(digits)}%`;
}

export function formatCount(x: number): string {
  if (!Number.isFinite(x)) return '-';
  if (Math.abs(x) >= 1e9) return `${(x / 1e9).toFixed(2)}G`;
  if (Math.abs(x) >= 1e6) return `${(x / 1e6).toFixed(2)}M`;
  if (Math.abs(x) >= 1e4) return `${(x / 1e3).toFixed(1)}k`;
  return String(Math.round(x));
}

/** Layer x kind heatmap of the share of each matrix that was selected. */
export function heatmapSvg(sel: ReportSelection): string {
  const cell = { w: 78, h: sel.layers.length > 40 ? 10 : 18 };
  const left = 70, top = 56, right = 110;
  const width = left + sel.kinds.length * cell.w + right;
  const barHeight = Math.max(60, Math.min(200, sel.layers.length * cell.h));
  const height = Math.max(top + sel.layers.length * cell.h + 20, top + barHeight + 12);
  let max = 0;
  sel.layers.forEach((_, l) => sel.kinds.forEach((_, k) => {
    const p = sel.parameters[l][k];
    if (p > 0) max = Math.max(max, sel.selected[l][k] / p);
  }));
  const parts: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" class="chart heatmap" data-layers="${sel.layers.length}" data-kinds="${sel.kinds.length}" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="selected weights per layer and matrix kind">`];
  parts.push(`<text x="${left}" y="16" class="axis-title">matrix kind (columns) / layer (rows): share of the matrix selected</text>`);
  sel.kinds.forEach((kind, k) => {
    parts.push(`<text class="kind-label" x="${left + k * cell.w + cell.w / 2}" y="${top - 8}" text-anchor="middle">${escapeXml(kind)}</text>`);
  });
  sel.layers.forEach((layer, l) => {
    const y = top + l * cell.h;
    parts.push(`<g class="layer-row" data-layer="${escapeXml(layer)}">`);
    parts.push(`<text class="layer-label" x="${left - 6}" y="${y + cell.h * 0.72}" text-anchor="end">${escapeXml(/^\d+$/.test(layer) ? `blk ${layer}` : layer)}</text>`);
    sel.kinds.forEach((kind, k) => {
      const p = sel.parameters[l][k], s = sel.selected[l][k];
      const x = left + k * cell.w;
      if (p === 0) {
        parts.push(`<rect class="cell empty" x="${x}" y="${y}" width="${cell.w - 2}" height="${cell.h - 2}" fill="#eee"/>`);
        return;
      }
      const f = s / p;
      parts.push(`<rect class="cell" data-kind="${escapeXml(kind)}" data-selected="${s}" data-parameters="${p}" x="${x}" y="${y}" width="${cell.w - 2}" height="${cell.h - 2}" fill="${rampColor(max > 0 ? f / max : 0)}"><title>${escapeXml(`layer ${layer} ${kind}: ${formatCount(s)} of ${formatCount(p)} (${formatPercent(f, 3)})`)}</title></rect>`);
      if (cell.h >= 16) parts.push(`<text class="cell-label" x="${x + cell.w / 2 - 1}" y="${y + cell.h * 0.68}" text-anchor="middle" fill="${max > 0 && f / max > 0.6 ? '#000' : '#fff'}">${formatPercent(f, 2)}</text>`);
    });
    parts.push('</g>');
  });
  // colour bar
  const bx = left + sel.kinds.length * cell.w + 30, by = top, bh = barHeight;
  parts.push('<defs><linearGradient id="ramp" x1="0" y1="1" x2="0" y2="0">');
  for (let i = 0; i <= 4; i++) parts.push(`<stop offset="${i / 4}" stop-color="${rampColor(i / 4)}"/>`);
  parts.push('</linearGradient></defs>');
  parts.push(`<rect class="colorbar" x="${bx}" y="${by}" width="14" height="${bh}" fill="url(#ramp)"/>`);
  parts.push(`<text x="${bx + 18}" y="${by + 10}">${formatPercent(max, 2)}</text><text x="${bx + 18}" y="${by + bh}">0%</text>`);
  parts.push('</svg>');
  return parts.join('');
}

/** Horizontal bars: share of each layer's scored parameters selected. */
export function layerBarsSvg(sel: ReportSelection): string {
  const rowH = sel.layers.length > 40 ? 10 : 16, left = 70, plotW = 360, top = 30;
  const width = left + plotW + 90, height = top + sel.layers.length * rowH + 24;
  const fractions = sel.layers.map((_, l) => {
    const s = sel.selected[l].reduce((a, b) => a + b, 0), p = sel.parameters[l].reduce((a, b) => a + b, 0);
    return { s, p, f: p > 0 ? s / p : 0 };
  });
  const max = Math.max(1e-12, ...fractions.map((x) => x.f));
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" class="chart layer-bars" data-layers="${sel.layers.length}" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="selected share per layer">`];
  parts.push(`<text x="${left}" y="16" class="axis-title">share of each layer's scored weights selected</text>`);
  sel.layers.forEach((layer, l) => {
    const y = top + l * rowH, w = (fractions[l].f / max) * plotW;
    parts.push(`<g class="layer-bar" data-layer="${escapeXml(layer)}"><text class="layer-label" x="${left - 6}" y="${y + rowH * 0.75}" text-anchor="end">${escapeXml(/^\d+$/.test(layer) ? `blk ${layer}` : layer)}</text>`);
    parts.push(`<rect class="bar" x="${left}" y="${y + 1}" width="${n(Math.max(w, fractions[l].s > 0 ? 1 : 0))}" height="${rowH - 3}" fill="#d6336c"><title>${escapeXml(`layer ${layer}: ${formatCount(fractions[l].s)} of ${formatCount(fractions[l].p)}`)}</title></rect>`);
    parts.push(`<text x="${left + w + 4}" y="${y + rowH * 0.75}">${formatPercent(fractions[l].f, 2)}</text></g>`);
  });
  parts.push('</svg>');
  return parts.join('');
}

/** Overlaid histograms as densities (share of each histogram's values per bin). */
export function histogramSvg(hists: { hist: Histogram; color: string; fill?: boolean }[], xLabel: string, ariaLabel: string): string {
  const width = 560, height = 260, left = 56, right = 16, top = 28, bottom = 44;
  const plotW = width - left - right, plotH = height - top - bottom;
  const edges = hists[0].hist.edges;
  const x0 = edges[0], x1 = edges[edges.length - 1];
  const densities = hists.map(({ hist }) => hist.counts.map((c) => (hist.total > 0 ? c / hist.total : 0)));
  const yMax = Math.max(1e-12, ...densities.flat());
  const sx = (x: number) => left + ((x - x0) / (x1 - x0 || 1)) * plotW;
  const sy = (y: number) => top + plotH - (y / yMax) * plotH;
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" class="chart histogram" data-series="${hists.length}" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${escapeXml(ariaLabel)}">`];
  parts.push(`<line class="axis" x1="${left}" y1="${top + plotH}" x2="${left + plotW}" y2="${top + plotH}" stroke="#444"/><line class="axis" x1="${left}" y1="${top}" x2="${left}" y2="${top + plotH}" stroke="#444"/>`);
  const ticks = 6;
  for (let i = 0; i <= ticks; i++) {
    const x = x0 + ((x1 - x0) * i) / ticks;
    parts.push(`<text x="${n(sx(x))}" y="${top + plotH + 16}" text-anchor="middle">${x.toFixed(1)}</text>`);
  }
  parts.push(`<text x="${left + plotW / 2}" y="${height - 6}" text-anchor="middle" class="axis-title">${escapeXml(xLabel)}</text>`);
  parts.push(`<text x="14" y="${top + plotH / 2}" transform="rotate(-90 14 ${top + plotH / 2})" text-anchor="middle" class="axis-title">share of weights</text>`);
  hists.forEach(({ hist, color, fill }, h) => {
    const d = densities[h];
    let path = `M${n(sx(edges[0]))},${n(sy(0))}`;
    for (let i = 0; i < d.length; i++) path += ` L${n(sx(edges[i]))},${n(sy(d[i]))} L${n(sx(edges[i + 1]))},${n(sy(d[i]))}`;
    path += ` L${n(sx(edges[edges.length - 1]))},${n(sy(0))}`;
    parts.push(`<path class="series" data-label="${escapeXml(hist.label)}" data-total="${hist.total}" d="${path}${fill ? ' Z' : ''}" fill="${fill ? color : 'none'}" fill-opacity="${fill ? 0.35 : 0}" stroke="${color}" stroke-width="1.5"/>`);
    parts.push(`<rect x="${left + plotW - 190}" y="${top + 4 + h * 16}" width="10" height="10" fill="${color}"/><text x="${left + plotW - 175}" y="${top + 13 + h * 16}">${escapeXml(`${hist.label} (${formatCount(hist.total)})`)}</text>`);
  });
  parts.push('</svg>');
  return parts.join('');
}

/** The consistency figure: overlap of selections from disjoint calibration subsets vs subset size. */
export function overlapSvg(points: OverlapPoint[]): string {
  const width = 560, height = 280, left = 56, right = 20, top = 24, bottom = 46;
  const plotW = width - left - right, plotH = height - top - bottom;
  const xs = points.map((p) => Math.log10(Math.max(1, p.samples)));
  const xMin = Math.min(0, ...xs), xMax = Math.max(xMin + 1, ...xs);
  const sx = (x: number) => left + ((x - xMin) / (xMax - xMin)) * plotW;
  const sy = (y: number) => top + plotH - y * plotH;
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" class="chart overlap" data-points="${points.length}" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="overlap of selections between disjoint calibration subsets">`];
  parts.push(`<line class="axis" x1="${left}" y1="${top + plotH}" x2="${left + plotW}" y2="${top + plotH}" stroke="#444"/><line class="axis" x1="${left}" y1="${top}" x2="${left}" y2="${top + plotH}" stroke="#444"/>`);
  for (let i = 0; i <= 5; i++) {
    const y = i / 5;
    parts.push(`<line x1="${left}" x2="${left + plotW}" y1="${n(sy(y))}" y2="${n(sy(y))}" stroke="#ddd"/><text x="${left - 6}" y="${n(sy(y)) + 4}" text-anchor="end">${i * 20}%</text>`);
  }
  points.forEach((p, i) => parts.push(`<text x="${n(sx(xs[i]))}" y="${top + plotH + 16}" text-anchor="middle">${p.samples}</text>`));
  parts.push(`<text x="${left + plotW / 2}" y="${height - 8}" text-anchor="middle" class="axis-title">calibration samples per subset (log scale)</text>`);
  parts.push(`<text x="14" y="${top + plotH / 2}" transform="rotate(-90 14 ${top + plotH / 2})" text-anchor="middle" class="axis-title">overlap of selected sets</text>`);
  if (points.length > 1) parts.push(`<polyline class="overlap-line" fill="none" stroke="#21918c" stroke-width="2" points="${points.map((p, i) => `${n(sx(xs[i]))},${n(sy(p.meanOverlap))}`).join(' ')}"/>`);
  points.forEach((p, i) => {
    const x = n(sx(xs[i]));
    parts.push(`<g class="overlap-point" data-samples="${p.samples}" data-overlap="${p.meanOverlap}">`);
    parts.push(`<line x1="${x}" x2="${x}" y1="${n(sy(p.minOverlap))}" y2="${n(sy(p.maxOverlap))}" stroke="#21918c"/>`);
    parts.push(`<circle cx="${x}" cy="${n(sy(p.meanOverlap))}" r="5" fill="#21918c"><title>${escapeXml(`${p.samples} samples: ${formatPercent(p.meanOverlap, 1)} (min ${formatPercent(p.minOverlap, 1)}, max ${formatPercent(p.maxOverlap, 1)}, ${p.pairs.length} pairs)`)}</title></circle>`);
    parts.push(`<text x="${x + 8}" y="${n(sy(p.meanOverlap)) - 6}">${formatPercent(p.meanOverlap, 1)}</text></g>`);
  });
  parts.push('</svg>');
  return parts.join('');
}
