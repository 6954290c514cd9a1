// Everything that can be known before the first forward pass, checked before it: a run that would
// fail at the end (no output folder, no disk space, an already patched input) fails in a second,
// not after minutes of statistics. Each check throws a one-line MathneuroError.
import { accessSync, constants, existsSync, statfsSync, statSync } from 'node:fs';
import path from 'node:path';
import { MathneuroError } from './errors.ts';
import { journalPathFor } from './patch/journal.ts';
import { realPath, sameFile } from './paths.ts';
import { readGgufSync } from './gguf/reader.ts';

const gib = (n: number) => n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : `${(n / 2 ** 20).toFixed(1)} MiB`;

/** Free bytes for an unprivileged writer in the file system holding `dir` (statvfs f_bavail * f_bsize). */
export function freeBytes(dir: string, env: NodeJS.ProcessEnv = process.env): number {
  const forced = env.MATHNEURO_TEST_FREE_BYTES;   // tests: a full disk without filling one
  if (forced !== undefined && forced !== '') return Number(forced);
  const s = statfsSync(dir);
  return Number(s.bavail) * Number(s.bsize);
}

export interface OutputCheck {
  /** the files the output must not be (the model, its shards, data files) */
  inputs?: string[];
  /** overwrite an existing output */
  force?: boolean;
  /** bytes the output will take (checked against the free space of its folder) */
  bytes?: number;
  /** what the output is, for the messages ("output", "statistics file") */
  what?: string;
  env?: NodeJS.ProcessEnv;
}

/** The output: not an input, not there (or --force), its folder there and writable, room for it. */
export function checkOutput(out: string, options: OutputCheck = {}): void {
  const what = options.what ?? 'output';
  const file = path.resolve(out);
  for (const input of options.inputs ?? []) {
    if (sameFile(input, file)) throw new MathneuroError('EUSAGE', `the ${what} ${out} is the input ${input} (links resolved): give another -o`);
  }
  if (existsSync(file)) {
    if (statSync(file).isDirectory()) throw new MathneuroError('EUSAGE', `the ${what} ${out} is a folder: give a file name`);
    if (!options.force) throw new MathneuroError('EEXIST', `${file} exists (use --force to overwrite)`);
  }
  const dir = path.dirname(realPath(file));
  let st;
  try { st = statSync(dir); } catch { throw new MathneuroError('ENOENT', `the ${what}'s folder ${dir} does not exist (create it first)`); }
  if (!st.isDirectory()) throw new MathneuroError('ENOENT', `the ${what}'s folder ${dir} is not a folder`);
  try { accessSync(dir, constants.W_OK | constants.X_OK); } catch { throw new MathneuroError('EIO', `cannot write the ${what} to ${dir}: permission denied`); }
  if (options.bytes !== undefined && options.bytes > 0) {
    let free: number | undefined;
    try { free = freeBytes(dir, options.env); } catch { /* statfs unsupported: no check */ }
    // an overwritten file gives its space back only at the end (written to a temporary file first)
    if (free !== undefined && free < options.bytes) throw new MathneuroError('EIO', `not enough disk space for the ${what} in ${dir}: it needs ${gib(options.bytes)}, ${gib(free)} free`);
  }
}

/** The model to patch: no pending undo journal, not a file mathneuro already patched (unless force). */
export function checkPatchInput(model: string, options: { force?: boolean } = {}): void {
  const real = existsSync(model) ? realPath(model) : model;
  const journal = journalPathFor(real);
  if (existsSync(journal)) throw new MathneuroError('EEXIST', `${model} is patched in place (undo journal ${journal}); run mathneuro unpatch ${model} first`);
  let method: unknown;
  // by the path as given (the same bytes as through the real path): a parse the caller holds is used again
  try { method = readGgufSync(model).metadata.get('mathneuro.method'); } catch { return; /* the loader reports a broken file */ }
  if (method !== undefined && !options.force) {
    throw new MathneuroError('EEXIST', `${model} was already patched by mathneuro (${String(method)}); patch its source instead, or --force to patch it again`);
  }
}

/** Data files and folders: there and readable. */
export function checkReadable(files: (string | undefined)[], what = 'data file'): void {
  for (const f of files) {
    if (f === undefined) continue;
    let st;
    try { st = statSync(f); } catch { throw new MathneuroError('ENOENT', `no such ${what}: ${f}`); }
    try { accessSync(f, st.isDirectory() ? constants.R_OK | constants.X_OK : constants.R_OK); } catch { throw new MathneuroError('EIO', `cannot read the ${what} ${f}: permission denied`); }
  }
}
