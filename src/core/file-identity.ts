// A file's identity as the file system keeps it (device, inode, size, modification and change
// times), recorded beside a sha256 so that a later step on the same file can trust the hash without
// reading gigabytes again: a selection file records the model's, and patch reuses the selection's
// sha256 while the model's identity is unchanged (git trusts its index the same way); the hash
// memo (below) does the same for any command that hashes a model. Every write
// to a file sets its change time, which no call can set back, and a hash is only recorded for a
// file that had settled before it was read (hash-file.cjs, SETTLED_MS).
import { closeSync, mkdirSync, openSync, readFileSync, realpathSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { writeFileAtomically } from './atomic-file.ts';
import { HASH_FILE_MODULE } from './tensor-io.ts';

export interface FileIdentity { dev: string; ino: string; size: number; mtimeNs: string; ctimeNs: string }
/** A file's identity when it was hashed, and its own sha256. */
export interface HashedFile extends FileIdentity { sha256: string }

const hashFile = createRequire(import.meta.url)(HASH_FILE_MODULE) as {
  fileIdentity(fd: number): FileIdentity;
  sameIdentity(a: FileIdentity | undefined, b: FileIdentity | undefined): boolean;
  SETTLED_MS: number;
};
export const SETTLED_MS = hashFile.SETTLED_MS;
export const sameIdentity = hashFile.sameIdentity;

/** The identity of a file now (by path; a link is followed); undefined when it cannot be opened. */
export function currentIdentity(file: string): FileIdentity | undefined {
  let fd: number;
  try { fd = openSync(file, 'r'); } catch { return undefined; }
  try { return hashFile.fileIdentity(fd); } finally { closeSync(fd); }
}

/** True when a recorded, well-formed identity matches every file as it is now (in order). */
export function unchangedSince(files: string[], recorded: readonly HashedFile[] | undefined): boolean {
  if (!Array.isArray(recorded) || recorded.length !== files.length) return false;
  return files.every((f, i) => isHashedFile(recorded[i]) && sameIdentity(currentIdentity(f), recorded[i]));
}

/** Shape check of an identity read from a file (a selection file's JSON index). */
export function isHashedFile(x: unknown): x is HashedFile {
  const o = x as Record<string, unknown>;
  return !!o && typeof o === 'object' && typeof o.dev === 'string' && typeof o.ino === 'string' && typeof o.size === 'number'
    && typeof o.mtimeNs === 'string' && typeof o.ctimeNs === 'string' && typeof o.sha256 === 'string' && /^[0-9a-f]{64}$/.test(o.sha256);
}

/**
 * The hash memo: the sha256 of model files (one file, or a split model's shards one after the
 * other) by their real paths, each with its identity when it was hashed. A remembered sha256 is
 * given back only while every file's identity is still that one, so a file rewritten, copied over
 * or touched is hashed again. Reads and writes of the memo never fail a command: a memo that
 * cannot be read is empty, one that cannot be written is left as it was.
 */
const MEMO_FORMAT = 'mathneuro-file-hashes';
const MEMO_ENTRIES = 512;
interface MemoEntry { sha256: string; files: HashedFile[]; at: number }
interface Memo { format: typeof MEMO_FORMAT; version: 1; entries: Record<string, MemoEntry> }

/** Where the CLI keeps its hash memo: <$MATHNEURO_CACHE_DIR, else $XDG_CACHE_HOME/mathneuro, else ~/.cache/mathneuro>/file-hashes.json. */
export function hashMemoPath(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.MATHNEURO_CACHE_DIR) return path.join(path.resolve(env.MATHNEURO_CACHE_DIR), 'file-hashes.json');
  try {
    return path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'mathneuro', 'file-hashes.json');
  } catch { return undefined; }   // no home folder: no memo
}

function readMemo(memoFile: string): Memo {
  try {
    const m = JSON.parse(readFileSync(memoFile, 'utf8')) as Memo;
    if (m && m.format === MEMO_FORMAT && m.version === 1 && m.entries && typeof m.entries === 'object') return m;
  } catch { /* missing or unreadable: empty */ }
  return { format: MEMO_FORMAT, version: 1, entries: {} };
}

function memoKey(files: string[]): string | undefined {
  try { return files.map((f) => realpathSync(f)).join('\n'); } catch { return undefined; }
}

/** The remembered sha256 of `files` (in order) and their identities, when every identity still matches. */
export function recallSha256(memoFile: string | undefined, files: string[]): { sha256: string; files: HashedFile[] } | undefined {
  const key = memoFile ? memoKey(files) : undefined;
  if (!memoFile || key === undefined) return undefined;
  const e = readMemo(memoFile).entries[key];
  if (!e || typeof e.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(e.sha256)) return undefined;
  if (files.length === 1 && e.files?.[0]?.sha256 !== e.sha256) return undefined;
  return unchangedSince(files, e.files) ? { sha256: e.sha256, files: e.files } : undefined;
}

/** Remembers the sha256 of `files` when the hash gave identities that can vouch for it (else nothing). */
export function rememberSha256(memoFile: string | undefined, files: string[], sha256: string, hashed: HashedFile[] | undefined): void {
  const key = memoFile ? memoKey(files) : undefined;
  if (!memoFile || key === undefined || !hashed || hashed.length !== files.length) return;
  try {
    // read again just before writing: concurrent runs lose at most their own entry
    const memo = readMemo(memoFile);
    memo.entries[key] = { sha256, files: hashed, at: Date.now() };
    const keys = Object.keys(memo.entries);
    if (keys.length > MEMO_ENTRIES) {
      keys.sort((a, b) => (memo.entries[a].at ?? 0) - (memo.entries[b].at ?? 0));
      for (const k of keys.slice(0, keys.length - MEMO_ENTRIES)) delete memo.entries[k];
    }
    mkdirSync(path.dirname(memoFile), { recursive: true });
    writeFileAtomically(memoFile, JSON.stringify(memo));
  } catch { /* a memo that cannot be written stays as it was */ }
}
