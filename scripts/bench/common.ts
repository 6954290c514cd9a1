// Shared pieces of the benchmark scripts: machine description, medians, cached generated models,
// and writing a section of BENCHMARKS.md / BENCHMARKS.json between markers.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { nativeBuild } from '../../src/native.ts';
import { synthModel, type SynthShapeName, type SynthTypeName } from '../../src/synth.ts';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const benchDir = path.join(repoRoot, '.cache', 'bench');
export const dataDir = process.env.MATHNEURO_DATA_DIR ?? path.resolve(repoRoot, '..', 'shared', 'data');

export function machine() {
  const cpus = os.cpus();
  let build = 'unknown';
  try { build = nativeBuild().kind; } catch {}
  return {
    cpu: cpus[0]?.model ?? 'unknown', cores: os.availableParallelism(), memoryGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    node: process.version, build, platform: `${process.platform}-${process.arch}`, date: new Date().toISOString(),
    loadAverage: os.loadavg().map((x) => +x.toFixed(2)),
  };
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export async function benchModel(shape: SynthShapeName, type: SynthTypeName, seed = 1): Promise<string> {
  mkdirSync(benchDir, { recursive: true });
  const out = path.join(benchDir, `${shape}-${type}-s${seed}.gguf`);
  if (!existsSync(out)) {
    process.stderr.write(`generating ${out}...\n`);
    await synthModel({ out, shape, type, seed, overwrite: true });
  }
  return out;
}

/** Replace (or append) the section between <!-- bench:NAME --> markers in BENCHMARKS.md, and its JSON. */
export function writeSection(name: string, markdown: string, json: unknown) {
  const mdPath = path.join(repoRoot, 'BENCHMARKS.md');
  const start = `<!-- bench:${name} -->`;
  const end = `<!-- /bench:${name} -->`;
  let md = existsSync(mdPath) ? readFileSync(mdPath, 'utf8') : '# Benchmarks\n\nEvery number comes from `npm run bench` (scripts/bench/); the command that produced a table is printed above it.\n';
  const block = `${start}\n${markdown.trim()}\n${end}`;
  const i = md.indexOf(start);
  const j = md.indexOf(end);
  md = i >= 0 && j > i ? md.slice(0, i) + block + md.slice(j + end.length) : `${md.trimEnd()}\n\n${block}\n`;
  writeFileSync(mdPath, md);
  const jsonPath = path.join(repoRoot, 'BENCHMARKS.json');
  const all = existsSync(jsonPath) ? JSON.parse(readFileSync(jsonPath, 'utf8')) : {};
  all[name] = json;
  writeFileSync(jsonPath, JSON.stringify(all, null, 2) + '\n');
}

export function table(headers: string[], rows: (string | number)[][]): string {
  const fmt = (v: string | number) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(v < 10 ? 3 : 1)) : v);
  return [`| ${headers.join(' | ')} |`, `|${headers.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.map(fmt).join(' | ')} |`)].join('\n');
}

export function machineLine(m: ReturnType<typeof machine>): string {
  return `Machine: ${m.cpu}, ${m.cores} threads, ${m.memoryGiB} GiB, ${m.platform}, node ${m.node}, native build: ${m.build}; load average at start ${m.loadAverage.join(' ')}; ${m.date.slice(0, 16)}Z.`;
}

/** Peak RSS (KiB) and wall seconds from the stderr of GNU `/usr/bin/time -v`. */
export function parseTimeV(stderr: string): { maxRssKiB: number; wallSeconds: number } {
  const rss = /Maximum resident set size \(kbytes\): (\d+)/.exec(stderr);
  const wall = /Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)/.exec(stderr);
  const wallSeconds = wall ? Number(wall[1] ?? 0) * 3600 + Number(wall[2]) * 60 + Number(wall[3]) : NaN;
  return { maxRssKiB: rss ? Number(rss[1]) : NaN, wallSeconds };
}
