// Path identity: an output must never be the input through a symbolic or hard link.
import { realpathSync, statSync } from 'node:fs';
import path from 'node:path';

/** The real path of `p`, or of its folder when `p` does not exist yet. */
export function realPath(p: string): string {
  try { return realpathSync(p); } catch { /* not there yet: resolve its folder */ }
  try { return path.join(realpathSync(path.dirname(path.resolve(p))), path.basename(p)); } catch { return path.resolve(p); }
}

/** True when `b` names the file `a` is, through symbolic links or hard links; `b` need not exist. */
export function sameFile(a: string, b: string): boolean {
  if (realPath(a) === realPath(b)) return true;
  try { const sa = statSync(a), sb = statSync(b); return sa.dev === sb.dev && sa.ino === sb.ino; } catch { return false; }
}
