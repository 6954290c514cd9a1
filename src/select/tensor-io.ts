// Reading and hashing tensor data of a GGUF file, one tensor at a time.
import { closeSync, openSync, readSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { MathneuroError } from '../errors.ts';
import type { GgufTensorInfo } from '../gguf/reader.ts';

export function readExactly(fd: number, buffer: Uint8Array, position: number, what: string): void {
  let done = 0;
  while (done < buffer.length) {
    const n = readSync(fd, buffer, done, buffer.length - done, position + done);
    if (n === 0) throw new MathneuroError('EIO', `${what}: unexpected end of file at byte ${position + done}`);
    done += n;
  }
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
const { sha256Fd } = createRequire(import.meta.url)(HASH_FILE_MODULE) as { sha256Fd: (fd: number, onProgress?: (p: HashProgress) => void) => string };

/** sha256 of a whole file (hex), read in 8 MiB chunks. */
export function sha256File(path: string, onProgress?: (p: HashProgress) => void): string {
  let fd: number;
  try { fd = openSync(path, 'r'); } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new MathneuroError('ENOENT', `no such file: ${path}`);
    throw new MathneuroError('EIO', `cannot open ${path}: ${(e as Error).message}`);
  }
  try {
    return sha256Fd(fd, onProgress);
  } finally {
    closeSync(fd);
  }
}
