// Calibration text from data files: .jsonl (GSM8K question+answer, MATH problem+solution, or a
// "text" field), .txt (one sample per blank-line-separated block), .csv (MMLU rows), or a folder
// of such files. Bad input is an error that names the file and line, never a silent partial run.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { MathneuroError } from '../errors.ts';
import { Random } from '../synth.ts';

export interface Sample {
  text: string;
  /** where it came from: file:line */
  source: string;
}

export interface ReadDataOptions {
  /** for .csv of MMLU: leave out rows whose file name names one of these subjects */
  excludeSubjects?: string[];
  /** largest accepted file (default 2 GiB) */
  maxBytes?: number;
  /** largest accepted sample in UTF-8 bytes (default 4 MiB: far past any context; a bigger one is a broken file) */
  maxSampleBytes?: number;
}

export const MMLU_MATH_SUBJECTS = ['abstract_algebra', 'college_mathematics', 'elementary_mathematics', 'high_school_mathematics', 'high_school_statistics'];

function decodeUtf8(buf: Buffer, file: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(buf);
  } catch {
    // find the first bad byte for the message
    let line = 1;
    for (let i = 0; i < buf.length; i++) {
      if (buf[i] === 0x0a) line++;
      try { new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(i, Math.min(buf.length, i + 4))); } catch {
        if (buf[i] >= 0x80) return fail(`${file}:${line}: invalid UTF-8 (byte ${i})`);
      }
    }
    return fail(`${file}: invalid UTF-8`);
  }
}

function fail(message: string): never {
  throw new MathneuroError('EDATA', message);
}

function jsonlSamples(text: string, file: string): Sample[] {
  const out: Sample[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i].replace(/\r$/, '');
    if (raw.trim() === '') continue; // blank lines are skipped (documented)
    let obj: unknown;
    try { obj = JSON.parse(raw); } catch (e) { fail(`${file}:${i + 1}: not valid JSON (${(e as Error).message})`); }
    if (typeof obj === 'string') { out.push({ text: obj, source: `${file}:${i + 1}` }); continue; }
    if (!obj || typeof obj !== 'object') fail(`${file}:${i + 1}: expected an object with "text", "question"+"answer" or "problem"+"solution"`);
    const o = obj as Record<string, unknown>;
    let t: string | undefined;
    if (typeof o.text === 'string') t = o.text;
    else if (typeof o.question === 'string' && typeof o.answer === 'string') t = `${o.question}\n${o.answer}`;
    else if (typeof o.problem === 'string' && typeof o.solution === 'string') t = `${o.problem}\n${o.solution}`;
    else fail(`${file}:${i + 1}: no "text", "question"+"answer" or "problem"+"solution" string fields`);
    if (t.trim() === '') fail(`${file}:${i + 1}: empty text`);
    out.push({ text: t, source: `${file}:${i + 1}` });
  }
  return out;
}

function txtSamples(text: string, file: string): Sample[] {
  const out: Sample[] = [];
  const lines = text.replace(/\r\n/g, '\n').split('\n');
  let block: string[] = [];
  let start = 1;
  const flush = (lineNo: number) => {
    if (block.length) out.push({ text: block.join('\n'), source: `${file}:${start}` });
    block = [];
    start = lineNo + 1;
  };
  for (let i = 0; i < lines.length; i++) {
    if (lines[i].trim() === '') flush(i + 1);
    else { if (block.length === 0) start = i + 1; block.push(lines[i]); }
  }
  flush(lines.length);
  return out;
}

/** RFC 4180 CSV: quoted fields, doubled quotes, newlines inside quotes. Returns rows with their first line number. */
export function parseCsv(text: string, file: string): { fields: string[]; line: number }[] {
  const rows: { fields: string[]; line: number }[] = [];
  let fields: string[] = [];
  let field = '';
  let inQuotes = false;
  let line = 1;
  let rowLine = 1;
  let fieldStarted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inQuotes) {
      if (ch === '"') {
        if (text[i + 1] === '"') { field += '"'; i++; } else inQuotes = false;
      } else {
        if (ch === '\n') line++;
        field += ch;
      }
      continue;
    }
    if (ch === '"' && field === '' && !fieldStarted) { inQuotes = true; fieldStarted = true; continue; }
    if (ch === ',') { fields.push(field); field = ''; fieldStarted = false; continue; }
    if (ch === '\r' && text[i + 1] === '\n') continue;
    if (ch === '\n') {
      fields.push(field);
      if (!(fields.length === 1 && fields[0] === '')) rows.push({ fields, line: rowLine });
      fields = []; field = ''; fieldStarted = false;
      line++; rowLine = line;
      continue;
    }
    field += ch;
    fieldStarted = true;
  }
  if (inQuotes) fail(`${file}:${rowLine}: unterminated quoted field`);
  if (field !== '' || fields.length) { fields.push(field); rows.push({ fields, line: rowLine }); }
  return rows;
}

function csvSamples(text: string, file: string): Sample[] {
  const out: Sample[] = [];
  for (const { fields, line } of parseCsv(text, file)) {
    if (fields.length !== 6) fail(`${file}:${line}: expected 6 columns (question, A, B, C, D, answer), found ${fields.length}`);
    const [q, a, b, c, d, ans] = fields;
    if (!/^[ABCD]$/.test(ans.trim())) fail(`${file}:${line}: answer column is "${ans}", expected A, B, C or D`);
    out.push({ text: `${q}\nA. ${a}\nB. ${b}\nC. ${c}\nD. ${d}\nAnswer: ${ans.trim()}`, source: `${file}:${line}` });
  }
  return out;
}

function readOne(file: string, options: ReadDataOptions): Sample[] {
  const st = statSync(file);
  const max = options.maxBytes ?? 2 * 1024 ** 3;
  if (st.size > max) fail(`${file}: ${st.size} bytes is more than the ${max}-byte limit`);
  // gzip'd files (x.jsonl.gz, as the package's data/ ships them) are read as their uncompressed twin
  const gz = /\.gz$/i.test(file);
  let bytes = readFileSync(file);
  if (gz) {
    try { bytes = gunzipSync(bytes, { maxOutputLength: max }); } catch (e) { fail(`${file}: not a valid gzip file, or more than the ${max}-byte limit uncompressed (${(e as Error).message})`); }
  }
  const text = decodeUtf8(bytes, file).replace(/^\uFEFF/, '');
  const ext = path.extname(gz ? file.slice(0, -3) : file).toLowerCase();
  let samples: Sample[];
  if (ext === '.jsonl' || ext === '.ndjson') samples = jsonlSamples(text, file);
  else if (ext === '.txt' || ext === '.md') samples = txtSamples(text, file);
  else if (ext === '.csv') samples = csvSamples(text, file);
  else return fail(`${file}: unknown data file type "${ext}" (use .jsonl, .txt or .csv)`);
  const maxSample = options.maxSampleBytes ?? 4 * 1024 * 1024;
  for (const s of samples) {
    // a UTF-16 length bounds the UTF-8 one from below: only long samples need the exact count
    if (s.text.length * 3 > maxSample && Buffer.byteLength(s.text) > maxSample) {
      fail(`${s.source}: one sample of ${Buffer.byteLength(s.text)} bytes is more than the ${maxSample}-byte limit per sample (a missing line break?)`);
    }
  }
  return samples;
}

/** Every sample of a data file or folder, in file order. Throws EDATA (or ENOENT) with file:line. */
export function readSamples(file: string, options: ReadDataOptions = {}): Sample[] {
  let st;
  try { st = statSync(file); } catch {
    try { st = statSync(`${file}.gz`); file = `${file}.gz`; } catch { throw new MathneuroError('ENOENT', `no such data file: ${file}`); }
  }
  let samples: Sample[];
  if (st.isDirectory()) {
    const excluded = new Set(options.excludeSubjects ?? []);
    const files = readdirSync(file).filter((f) => /\.(jsonl|ndjson|txt|csv)(\.gz)?$/i.test(f)).sort()
      .filter((f) => { const g = f.replace(/\.gz$/i, ''); return ![...excluded].some((s) => g === `${s}_test.csv` || g === `${s}_dev.csv` || g === `${s}_val.csv` || g.replace(/\.[^.]+$/, '') === s); });
    if (files.length === 0) fail(`${file}: no .jsonl, .txt or .csv files in this folder`);
    samples = files.flatMap((f) => readOne(path.join(file, f), options));
  } else {
    samples = readOne(file, options);
  }
  if (samples.length === 0) fail(`${file}: no samples (the file is empty or holds only blank lines)`);
  return samples;
}

/** `count` samples drawn without replacement in a seeded random order (all of them, shuffled, when count is undefined). */
export function drawSamples<T>(all: T[], count: number | undefined, seed: number): T[] {
  if (count !== undefined && (!Number.isInteger(count) || count < 1)) throw new MathneuroError('EUSAGE', `sample count must be a positive integer, got ${count}`);
  if (count !== undefined && count > all.length) throw new MathneuroError('EUSAGE', `asked for ${count} samples but the data has ${all.length}`);
  const idx = all.map((_, i) => i);
  const rng = new Random(seed);
  const n = count ?? all.length;
  // partial Fisher-Yates: the first n positions are a uniform random draw
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(rng.uniform() * (idx.length - i));
    [idx[i], idx[j]] = [idx[j], idx[i]];
  }
  return idx.slice(0, n).map((i) => all[i]);
}
