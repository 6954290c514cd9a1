// A file's identity as the file system keeps it (device, inode, size, modification and change
// times), recorded beside a sha256 so that a later step on the same file can trust the hash without
// reading gigabytes again: a selection file records the model's, and patch reuses the selection's
// sha256 while the model's identity is unchanged (git trusts its index the same way). Every write
// to a file sets its change time, which no call can set back, and a hash is only recorded for a
// file that had settled before it was read (hash-file.cjs, SETTLED_MS).
import { closeSync, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import { HASH_FILE_MODULE } from './tensor-io.ts';

export interface FileIdentity { dev: string; ino: string; size: number; mtimeNs: string; ctimeNs: string }
/** A file's identity when it was hashed, and its own sha256. */
export interface HashedFile extends FileIdentity { sha256: string }

const native = createRequire(import.meta.url)(HASH_FILE_MODULE) as {
  fileIdentity(fd: number): FileIdentity;
  sameIdentity(a: FileIdentity | undefined, b: FileIdentity | undefined): boolean;
  SETTLED_MS: number;
};
export const SETTLED_MS = native.SETTLED_MS;
export const sameIdentity = native.sameIdentity;

/** The identity of a file now (by path; a link is followed); undefined when it cannot be opened. */
export function currentIdentity(file: string): FileIdentity | undefined {
  let fd: number;
  try { fd = openSync(file, 'r'); } catch { return undefined; }
  try { return native.fileIdentity(fd); } finally { closeSync(fd); }
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
