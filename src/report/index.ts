// Reports: the numbers (types.ts), how they are gathered (build.ts, overlap.ts, build-report.ts) and drawn (svg.ts, html.ts).
export * from './types.ts';
export { renderReportHtml } from './html.ts';
export { heatmapSvg, layerBarsSvg, histogramSvg, overlapSvg, escapeXml, rampColor } from './svg.ts';
export { analyzeSelection, selectionGrid, matrixKind, ScoreBinner, type AnalyzeOptions, type Analysis } from './build.ts';
export { selectionOverlap, overlapPoint, intersectionCount, type OverlapSubset, type OverlapOptions } from './overlap.ts';
export { buildReport, type ReportOptions } from './build-report.ts';
