// Markdown rendering of an evaluation result (`mathneuro eval`): one table, model / reference /
// paired difference. The other files here report on a selection (the HTML/SVG report).
import type { EvalResult, Metric } from '../eval/evaluate.ts';

function fmt(kind: Metric['kind'], v: number): string {
  if (!Number.isFinite(v)) return '-';
  if (kind === 'accuracy') return `${(v * 100).toFixed(1)}%`;
  if (kind === 'perplexity') return v >= 1000 ? v.toFixed(0) : v.toFixed(3);
  return Math.abs(v) >= 1e-3 || v === 0 ? v.toFixed(4) : v.toExponential(2);
}

function withInterval(kind: Metric['kind'], v: number, ci: { low: number; high: number }, correct?: number, count?: number): string {
  const base = correct !== undefined && count !== undefined ? `${fmt(kind, v)} (${correct}/${count})` : fmt(kind, v);
  return Number.isFinite(ci.low) ? `${base} [${fmt(kind, ci.low)}, ${fmt(kind, ci.high)}]` : base;
}

function signed(kind: Metric['kind'], v: number): string {
  const s = kind === 'accuracy' ? `${(v * 100).toFixed(1)} pts` : fmt(kind, v);
  return v > 0 ? `+${s}` : s;
}

function pValue(p: number): string {
  return p < 0.001 ? '<0.001' : p.toFixed(3);
}

/** The result as a markdown table (95% intervals in brackets; Δ = model - reference with McNemar / paired-z p value). */
export function formatMarkdown(result: EvalResult, options: { breakdown?: boolean } = {}): string {
  const hasReference = !!result.reference && result.metrics.some((m) => m.reference);
  const lines: string[] = [];
  lines.push(`**${result.task}**: ${result.items} items, model \`${result.model.path}\`${result.reference ? ` vs \`${result.reference.path}\`` : ''}`, '');
  const header = ['metric', 'n', 'model'];
  if (hasReference) header.push('reference', 'Δ (model - reference)', 'p');
  lines.push(`| ${header.join(' | ')} |`, `|${header.map(() => '---').join('|')}|`);
  const shown = result.metrics.filter((m) => options.breakdown !== false || m.group === 'main');
  for (const m of shown) {
    const name = m.group === 'main' ? `**${m.name}**` : `${m.group}: ${m.name}`;
    const row = [name, String(m.count), withInterval(m.kind, m.value, m.ci95, m.correct, m.correct !== undefined ? m.count : undefined)];
    if (hasReference) {
      row.push(m.reference ? withInterval(m.kind, m.reference.value, m.reference.ci95, m.reference.correct, m.reference.correct !== undefined ? m.count : undefined) : '-');
      if (m.difference) {
        const d = m.difference;
        const ci = m.kind === 'accuracy' ? `[${(d.ci95.low * 100).toFixed(1)}, ${(d.ci95.high * 100).toFixed(1)}]` : `[${fmt(m.kind, d.ci95.low)}, ${fmt(m.kind, d.ci95.high)}]`;
        const counts = d.onlyModel !== undefined ? ` (+${d.onlyModel}/-${d.onlyReference})` : '';
        row.push(`${signed(m.kind, d.value)} ${ci}${counts}`, pValue(d.pValue));
      } else row.push('-', '-');
    }
    lines.push(`| ${row.join(' | ')} |`);
  }
  const info = result.model;
  const speed = info.tokensPerSecond !== undefined && result.task !== 'mmlu' ? `, ${info.tokensPerSecond.toFixed(1)} tokens/s` : '';
  lines.push('', `model: ${info.evaluated} evaluated, ${info.cached} cached, ${(info.elapsedMs / 1000).toFixed(1)} s${speed}` +
    (result.reference ? `; reference: ${result.reference.evaluated} evaluated, ${result.reference.cached} cached` : ''));
  return lines.join('\n') + '\n';
}
