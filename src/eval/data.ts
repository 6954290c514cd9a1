// Evaluation data files: GSM8K and MATH-500 (JSON lines), MMLU (CSV, one file per subject), plain or
// gzip-compressed (`x.jsonl` also finds `x.jsonl.gz`). Files come from arguments; the default is the
// data/ folder the package ships (gzip'd GSM8K, MATH-500 and MMLU, see data/README.md), and
// MATHNEURO_DATA_DIR overrides it.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MathneuroError } from '../errors.ts';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The data directory the package ships (data/ beside src/ and dist/). */
export const packageDataDir = path.join(repoRoot, 'data');

/** The evaluation data directory: $MATHNEURO_DATA_DIR, else the package's own data/. */
export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.MATHNEURO_DATA_DIR ? path.resolve(env.MATHNEURO_DATA_DIR) : packageDataDir;
}

/** `file` when it exists, else its gzip'd twin `file.gz` when that exists, else `file`. */
export function dataFile(file: string): string {
  return !existsSync(file) && existsSync(`${file}.gz`) ? `${file}.gz` : file;
}

/** A short stable id of an item from its content, so caches survive reordered or different files. */
export function itemId(...parts: string[]): string {
  return createHash('sha256').update(parts.join('\u0000')).digest('hex').slice(0, 16);
}

function readText(file: string, what: string): string {
  const found = dataFile(file);
  if (!existsSync(found)) throw new MathneuroError('ENOENT', `${what} not found: ${file} (name the file with --data, or set MATHNEURO_DATA_DIR to a folder laid out like ${packageDataDir})`);
  const bytes = readFileSync(found);
  if (!found.endsWith('.gz')) return bytes.toString('utf8');
  try { return gunzipSync(bytes).toString('utf8'); } catch (e) { throw new MathneuroError('EDATA', `${found}: not a valid gzip file (${(e as Error).message})`); }
}

function readJsonLines(file: string, what: string): Record<string, unknown>[] {
  const text = readText(file, what);
  const rows: Record<string, unknown>[] = [];
  text.split('\n').forEach((line, i) => {
    if (!line.trim()) return;
    try { rows.push(JSON.parse(line)); } catch { throw new MathneuroError('EDATA', `${file}:${i + 1}: not valid JSON`); }
  });
  return rows;
}

export interface Gsm8kItem { id: string; index: number; question: string; answer: string }

/** GSM8K JSON lines: {"question", "answer"} with the answer ending in "#### N". */
export function loadGsm8k(file: string): Gsm8kItem[] {
  return readJsonLines(file, 'GSM8K file').map((row, index) => {
    if (typeof row.question !== 'string' || typeof row.answer !== 'string' || !row.answer.includes('####')) {
      throw new MathneuroError('EDATA', `${file}:${index + 1}: expected {"question", "answer"} with "#### N" in the answer`);
    }
    return { id: itemId(row.question, row.answer), index, question: row.question, answer: row.answer };
  });
}

export interface Math500Item { id: string; index: number; problem: string; solution: string; answer: string; subject: string; level: number }

/** MATH-500 JSON lines: {"problem", "solution", "answer", "subject", "level", "unique_id"}. */
export function loadMath500(file: string): Math500Item[] {
  return readJsonLines(file, 'MATH-500 file').map((row, index) => {
    if (typeof row.problem !== 'string' || typeof row.answer !== 'string') {
      throw new MathneuroError('EDATA', `${file}:${index + 1}: expected {"problem", "answer", ...}`);
    }
    return {
      id: typeof row.unique_id === 'string' ? itemId(row.unique_id) : itemId(row.problem),
      index, problem: row.problem, solution: String(row.solution ?? ''), answer: row.answer,
      subject: String(row.subject ?? 'unknown'), level: Number(row.level ?? 0),
    };
  });
}

/** RFC 4180 CSV: quoted fields, doubled quotes, newlines inside quotes. */
export function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [], field = '', quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"') {
        if (text[i + 1] === '"') { field += '"'; i++; } else quoted = false;
      } else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') { row.push(field); field = ''; }
    else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(field); field = '';
      if (row.length > 1 || row[0] !== '') rows.push(row);
      row = [];
    } else field += c;
  }
  if (field !== '' || row.length) { row.push(field); rows.push(row); }
  return rows;
}

export interface MmluItem { id: string; subject: string; index: number; question: string; choices: [string, string, string, string]; answer: 0 | 1 | 2 | 3 }

export const mmluMathSubjects = ['abstract_algebra', 'college_mathematics', 'elementary_mathematics', 'high_school_mathematics', 'high_school_statistics'] as const;

/** MMLU: a directory of <subject>_test.csv files (or the mmlu/ dir holding test/), or one CSV file. Rows: question, A, B, C, D, answer. */
export function loadMmlu(fileOrDir: string, subjects?: readonly string[]): MmluItem[] {
  fileOrDir = dataFile(fileOrDir);
  if (!existsSync(fileOrDir)) throw new MathneuroError('ENOENT', `MMLU data not found: ${fileOrDir} (name it with --data, or set MATHNEURO_DATA_DIR to a folder laid out like ${packageDataDir})`);
  let files: string[];
  if (statSync(fileOrDir).isDirectory()) {
    const dir = existsSync(path.join(fileOrDir, 'test')) ? path.join(fileOrDir, 'test') : fileOrDir;
    files = readdirSync(dir).filter((f) => /\.csv(\.gz)?$/.test(f)).sort().map((f) => path.join(dir, f));
    if (files.length === 0) throw new MathneuroError('EDATA', `no MMLU .csv or .csv.gz files in ${dir}`);
  } else files = [fileOrDir];
  const items: MmluItem[] = [];
  for (const file of files) {
    const subject = path.basename(file).replace(/\.csv(\.gz)?$/, '').replace(/_(test|dev|val)$/, '');
    if (subjects && subjects.length && !subjects.includes(subject)) continue;
    parseCsv(readText(file, 'MMLU file')).forEach((row, index) => {
      const answer = 'ABCD'.indexOf((row[5] ?? '').trim());
      if (row.length !== 6 || answer < 0) throw new MathneuroError('EDATA', `${file}:${index + 1}: expected 6 columns (question, A, B, C, D, answer A-D)`);
      items.push({ id: itemId(subject, row[0]!, ...row.slice(1, 5)), subject, index, question: row[0]!, choices: [row[1]!, row[2]!, row[3]!, row[4]!], answer: answer as 0 | 1 | 2 | 3 });
    });
  }
  if (subjects && subjects.length) {
    const found = new Set(items.map((i) => i.subject));
    const missing = subjects.filter((s) => !found.has(s));
    if (missing.length) throw new MathneuroError('EUSAGE', `MMLU subject(s) not found: ${missing.join(', ')}`);
  }
  return items;
}

/** Plain text for perplexity. */
export function loadText(file: string): string {
  return readText(file, 'text file');
}

/** Deterministic PRNG (mulberry32) for exemplar draws and subsampling. */
import { seededRandom } from '../core/random.ts';
export { seededRandom };

/** k distinct indices out of n, drawn with the seeded PRNG (partial Fisher-Yates). */
export function sampleIndices(n: number, k: number, seed: number): number[] {
  const random = seededRandom(seed);
  const pool = Array.from({ length: n }, (_, i) => i);
  const take = Math.min(k, n);
  for (let i = 0; i < take; i++) {
    const j = i + Math.floor(random() * (n - i));
    [pool[i], pool[j]] = [pool[j]!, pool[i]!];
  }
  return pool.slice(0, take);
}
