// Reading and hashing tensor data of a GGUF file, one tensor at a time.
import { closeSync, openSync, readSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { MathneuroError } from '../errors.ts';
import type { GgufTensorInfo } from '../gguf/reader.ts';
import type { HashedFile } from './file-identity.ts';

/** Fills `buffer` from `position` on (readSync may return less than asked): the bytes read, short only at the end of the file. */
export function readFully(fd: number, buffer: Uint8Array, position: number): number {
  let done = 0;
  while (done < buffer.length) {
    const n = readSync(fd, buffer, done, buffer.length - done, position + done);
    if (n === 0) break;
    done += n;
  }
  return done;
}

/** readFully, where an early end of file is an EIO error about `what`. */
export function readExactly(fd: number, buffer: Uint8Array, position: number, what: string): void {
  const done = readFully(fd, buffer, position);
  if (done < buffer.length) throw new MathneuroError('EIO', `${what}: unexpected end of file at byte ${position + done}`);
}

/** The stored bytes of one tensor. */
export function readTensorBytes(fd: number, tensor: GgufTensorInfo): Uint8Array {
  const buffer = new Uint8Array(tensor.byteSize);
  readExactly(fd, buffer, tensor.absoluteOffset, `tensor ${tensor.name}`);
  return buffer;
}

export interface HashProgress { bytesDone: number; bytesTotal: number }

/** The loop itself lives in plain CommonJS, shared with the background hash's worker thread. */
export const HASH_FILE_MODULE = fileURLToPath(new URL('./hash-file.cjs', import.meta.url));
const { sha256FdsWithIdentity } = createRequire(import.meta.url)(HASH_FILE_MODULE) as {
  sha256FdsWithIdentity: (fds: number[], onProgress?: (p: HashProgress) => void) => { sha256: string; perFile: string[]; files?: HashedFile[] };
};

/**
 * sha256 of a whole file (hex), read in 8 MiB chunks; of several files (a split model's shards,
 * src/gguf/model.ts modelFiles), the sha256 of their bytes one after the other.
 */
export function sha256File(path: string | string[], onProgress?: (p: HashProgress) => void): string {
  return sha256Files(typeof path === 'string' ? [path] : path, onProgress).sha256;
}

/**
 * sha256 of several files one after the other, and of each (one pass over the bytes); `hashed`:
 * their identities where those can vouch for the hash later (core/file-identity.ts).
 */
export function sha256Files(paths: string[], onProgress?: (p: HashProgress) => void): { sha256: string; files: string[]; hashed?: HashedFile[] } {
  const fds: number[] = [];
  try {
    for (const file of paths) {
      try { fds.push(openSync(file, 'r')); } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new MathneuroError('ENOENT', `no such file: ${file}`);
        throw new MathneuroError('EIO', `cannot open ${file}: ${(e as Error).message}`);
      }
    }
    const r = sha256FdsWithIdentity(fds, onProgress);
    return { sha256: r.sha256, files: r.perFile, hashed: r.files };
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}
