// Writing a file so that readers see the old one or the whole new one, never a part: the bytes go
// to a temporary beside the target (one naming scheme, `.<name>.mathneuro-tmp-<pid>`), which is
// renamed over the target at the end. Temporaries of writers that were killed are removed by the
// next writer of the same target.
import { closeSync, fsyncSync, openSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { MathneuroError } from '../errors.ts';

const TEMPORARY_MARK = '.mathneuro-tmp-';

/** The temporary a writer of `target` in this process uses: hidden, beside the target (same file system, so the rename is atomic). */
export function temporaryPath(target: string): string {
  return path.join(path.dirname(path.resolve(target)), `.${path.basename(target)}${TEMPORARY_MARK}${process.pid}`);
}

function processIsGone(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return true;
  try { process.kill(pid, 0); return false; } catch (e) { return (e as NodeJS.ErrnoException).code !== 'EPERM'; }
}

/**
 * Removes the temporaries of earlier writers of `target` whose process is gone: this scheme's, and
 * `<name>.<pid>.tmp`, the name earlier versions gave GGUF, statistics and Modelfile temporaries.
 */
export function removeStaleTemporaries(target: string): void {
  const dir = path.dirname(path.resolve(target));
  const base = path.basename(target);
  let names: string[];
  try { names = readdirSync(dir); } catch { return; }
  for (const name of names) {
    let pid: number | undefined;
    if (name.startsWith(`.${base}${TEMPORARY_MARK}`)) pid = Number(name.slice(base.length + 1 + TEMPORARY_MARK.length));
    else if (name.startsWith(`${base}.`)) {
      const m = /^(\d+)\.tmp$/.exec(name.slice(base.length + 1));
      if (m) pid = Number(m[1]);
    }
    if (pid === undefined || pid === process.pid) continue;
    if (processIsGone(pid)) rmSync(path.join(dir, name), { force: true });
  }
}

/** fsync of a directory, so a rename in it survives a crash (best effort: not every platform can). */
export function fsyncDirectory(dir: string): void {
  try { const fd = openSync(dir, 'r'); try { fsyncSync(fd); } finally { closeSync(fd); } } catch { /* not supported on every platform */ }
}

/**
 * A failed write as one clear line: disk full (ENOSPC), file-size limit (EFBIG) or quota (EDQUOT)
 * say so; `state` says what was left (the temporary is gone and the destination untouched).
 */
export function writeFailure(e: unknown, file: string, state: string): MathneuroError {
  if (e instanceof MathneuroError) return e;
  const code = (e as NodeJS.ErrnoException)?.code;
  const why = code === 'ENOSPC' ? 'no space left on device' : code === 'EFBIG' ? 'file too large (a file-size limit)' : code === 'EDQUOT' ? 'disk quota exceeded'
    : `${(e as Error)?.message ?? String(e)}`;
  return new MathneuroError('EIO', `${why} while writing ${file}; ${state} and the source is untouched`, { cause: e });
}

/** Writes `contents` (text as UTF-8) to the temporary and renames it over `target`; on failure the temporary is removed. */
export function writeFileAtomically(target: string, contents: string | Uint8Array): void {
  removeStaleTemporaries(target);
  const temporary = temporaryPath(target);
  try {
    writeFileSync(temporary, contents);
    renameSync(temporary, target);
  } catch (e) {
    rmSync(temporary, { force: true });
    throw e;
  }
}
